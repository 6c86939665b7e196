package mtlsident

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Entry is one deny-list entry: a subject DN, or "sha256:" and a
// certificate fingerprint.
type Entry struct {
	// Text is the entry as the operator wrote it, white space trimmed and
	// control characters escaped (RFC 4514 hex pairs, "\0A" for a line
	// feed), so that it is always one line.
	Text string
	key  string // normalised subject, or "sha256:" + lower-case hex
}

const fingerprintPrefix = "sha256:"

// Key is what the entry means, whatever its spelling: its normalised
// subject DN, or "sha256:" and the lower-case hex fingerprint. Two entries
// with the same key are the same entry.
func (e Entry) Key() string { return e.key }

// ParseEntry reads a deny-list entry. A subject DN is written in RFC 2253
// order, as `openssl x509 -noout -subject -nameopt RFC2253` prints it (a
// leading "subject=" is dropped), attribute types by name or OID, and
// matched without regard to letter case or white space around separators.
// OpenSSL's default form ("C = NL, O = Org, CN = x": X.500 order, spaces
// around '=') is refused, naming its RFC 2253 spelling, since read as RFC
// 2253 it would name another subject. Control characters may be written
// raw or escaped; they are kept escaped. A fingerprint is "sha256:" and 64
// hex digits, in either case, colons allowed (as `openssl x509 -noout
// -fingerprint -sha256` prints them).
func ParseEntry(s string) (Entry, error) {
	s = trimEntry(s)
	if rest, ok := cutPrefixFold(s, "subject="); ok {
		s = trimEntry(rest)
	}
	s = escapeControls(s)
	if s == "" {
		return Entry{}, errors.New("empty entry")
	}
	if rest, ok := cutPrefixFold(s, fingerprintPrefix); ok {
		digits := strings.ToLower(strings.ReplaceAll(rest, ":", ""))
		if b, err := hex.DecodeString(digits); err != nil || len(b) != 32 {
			return Entry{}, fmt.Errorf("%q: a fingerprint is sha256: and 64 hex digits", s)
		}
		return Entry{Text: s, key: fingerprintPrefix + digits}, nil
	}
	if s[0] == '/' {
		return Entry{}, fmt.Errorf("%q is OpenSSL's old /-separated form; write the DN as `openssl x509 -noout -subject -nameopt RFC2253` prints it", s)
	}
	dn, err := parseDN(s)
	if err != nil {
		return Entry{}, fmt.Errorf("%q is not a subject DN: %v", s, err)
	}
	if dn.spaced > 1 {
		return Entry{}, fmt.Errorf("%q has spaces around '=' as OpenSSL's default -subject form writes a DN, in reverse order (%s first); write it as -nameopt RFC2253 prints it: %s (or, if it is in RFC 2253 order already, without the spaces around '=')", s, dn.rdns[0][0].typ, dn.rfc2253())
	}
	return Entry{Text: s, key: dn.key}, nil
}

// cutPrefixFold is strings.CutPrefix without regard to letter case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// trimEntry removes the white space around an entry, but not a trailing
// space that a backslash escapes: "CN=a\ " ends in a space.
func trimEntry(s string) string {
	t := strings.TrimSpace(s)
	if escapes := len(t) - len(strings.TrimRight(t, `\`)); escapes%2 == 1 && len(t) < len(strings.TrimLeftFunc(s, unicode.IsSpace)) {
		t += " "
	}
	return t
}

// DenyList is an immutable set of entries.
type DenyList struct {
	entries []Entry
	keys    map[string]Entry
}

// NewDenyList returns a list of entries; an entry that repeats an earlier
// one (by meaning, not spelling) is dropped.
func NewDenyList(entries []Entry) *DenyList {
	d := &DenyList{keys: make(map[string]Entry, len(entries))}
	for _, e := range entries {
		if _, dup := d.keys[e.key]; !dup {
			d.keys[e.key] = e
			d.entries = append(d.entries, e)
		}
	}
	return d
}

// Entries returns the entries in the order they were given.
func (d *DenyList) Entries() []Entry {
	if d == nil {
		return nil
	}
	return d.entries
}

// Denies returns the entry that denies id, if any.
func (d *DenyList) Denies(id Identity) (Entry, bool) {
	if d == nil || len(d.keys) == 0 {
		return Entry{}, false
	}
	if e, ok := d.keys[id.subjectKey]; ok && id.subjectKey != "" {
		return e, true
	}
	e, ok := d.keys[id.fingerprintKey]
	return e, ok
}

// Same reports whether d and o hold the same entries, by meaning and in
// any order.
func (d *DenyList) Same(o *DenyList) bool {
	if len(d.keys) != len(o.keys) {
		return false
	}
	for k := range d.keys {
		if _, ok := o.keys[k]; !ok {
			return false
		}
	}
	return true
}

// With returns a list with e added, and whether it was new.
func (d *DenyList) With(e Entry) (*DenyList, bool) {
	if _, dup := d.keys[e.key]; dup {
		return d, false
	}
	return NewDenyList(append(append([]Entry(nil), d.Entries()...), e)), true
}

// Without returns a list with e removed, and whether it was there.
func (d *DenyList) Without(e Entry) (*DenyList, bool) {
	if _, ok := d.keys[e.key]; !ok {
		return d, false
	}
	var kept []Entry
	for _, x := range d.Entries() {
		if x.key != e.key {
			kept = append(kept, x)
		}
	}
	return NewDenyList(kept), true
}

// ParseDenyFile reads a deny file: one entry a line; blank lines and lines
// whose first non-blank character is '#' are skipped. (A '#' later on a line
// belongs to the entry: DN values may hold one.) A line that does not parse
// is skipped too, and returned, so that one bad line in a file edited by
// hand neither drops the others nor stops the gateway.
func ParseDenyFile(data []byte) (*DenyList, []SkippedLine) {
	var entries []Entry
	var skipped []SkippedLine
	for n, line := range bytes.Split(data, []byte("\n")) {
		text := trimEntry(string(line))
		if text == "" || text[0] == '#' {
			continue
		}
		e, err := ParseEntry(text)
		if err != nil {
			skipped = append(skipped, SkippedLine{Line: n + 1, Text: string(line), Err: err})
			continue
		}
		entries = append(entries, e)
	}
	return NewDenyList(entries), skipped
}

// SkippedLine is a line of a deny file that does not parse.
type SkippedLine struct {
	Line int    // from 1
	Text string // the line as it is in the file
	Err  error
}

func (l SkippedLine) Error() string { return fmt.Sprintf("line %d: %v", l.Line, l.Err) }

// skippedHeader introduces, in a file FormatDenyFile writes, the lines that
// did not parse.
const skippedHeader = "# The lines below do not parse and are skipped; they are kept as they were written. Fix or remove them."

// FormatDenyFile renders a list as a deny file that ParseDenyFile reads
// back to the same list: one entry a line. The skipped lines of the file
// it was read from follow as they were, so that nothing written by hand is
// lost; they are skipped again when it is read.
func FormatDenyFile(d *DenyList, skipped []SkippedLine) []byte {
	var b bytes.Buffer
	b.WriteString("# nutsgate deny list: one subject DN or sha256:<fingerprint> a line.\n")
	b.WriteString("# Written by the admin API (nutsgate deny add|remove); edits by hand are read too.\n")
	for _, e := range d.Entries() {
		b.WriteString(e.Text)
		b.WriteByte('\n')
	}
	if len(skipped) > 0 {
		b.WriteString(skippedHeader + "\n")
		for _, l := range skipped {
			b.WriteString(l.Text)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}
