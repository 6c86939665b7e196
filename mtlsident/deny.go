package mtlsident

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// Entry is one deny-list entry: a subject DN, or "sha256:" and a
// certificate fingerprint.
type Entry struct {
	// Text is the entry as the operator wrote it, white space trimmed.
	Text string
	key  string // normalised subject, or "sha256:" + lower-case hex
}

const fingerprintPrefix = "sha256:"

// ParseEntry reads a deny-list entry. A subject DN is written in RFC 2253
// order (as `openssl x509 -noout -subject -nameopt RFC2253` prints it) and
// matched without regard to letter case or white space around separators.
// A fingerprint is "sha256:" and 64 hex digits, in either case, colons
// allowed (as `openssl x509 -noout -fingerprint -sha256` prints them).
func ParseEntry(s string) (Entry, error) {
	s = trimEntry(s)
	if s == "" {
		return Entry{}, errors.New("empty entry")
	}
	if len(s) >= len(fingerprintPrefix) && strings.EqualFold(s[:len(fingerprintPrefix)], fingerprintPrefix) {
		digits := strings.ToLower(strings.ReplaceAll(s[len(fingerprintPrefix):], ":", ""))
		if b, err := hex.DecodeString(digits); err != nil || len(b) != 32 {
			return Entry{}, fmt.Errorf("%q: a fingerprint is sha256: and 64 hex digits", s)
		}
		return Entry{Text: s, key: fingerprintPrefix + digits}, nil
	}
	key, err := normalizeDN(s)
	if err != nil {
		return Entry{}, fmt.Errorf("%q is not a subject DN: %v", s, err)
	}
	return Entry{Text: s, key: key}, nil
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

// Same reports whether two entries deny the same clients.
func (e Entry) Same(o Entry) bool { return e.key == o.key }

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
// belongs to the entry: DN values may hold one.) An entry that does not
// parse fails the file, naming its line.
func ParseDenyFile(data []byte) (*DenyList, error) {
	var entries []Entry
	for n, line := range bytes.Split(data, []byte("\n")) {
		text := trimEntry(string(line))
		if text == "" || text[0] == '#' {
			continue
		}
		e, err := ParseEntry(text)
		if err != nil {
			return nil, &LineError{Line: n + 1, Err: err}
		}
		entries = append(entries, e)
	}
	return NewDenyList(entries), nil
}

// LineError is an entry of a deny file that does not parse.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

// FormatDenyFile renders a list as a deny file that ParseDenyFile reads
// back to the same list.
func FormatDenyFile(d *DenyList) []byte {
	var b bytes.Buffer
	b.WriteString("# nutsgate deny list: one subject DN or sha256:<fingerprint> a line.\n")
	b.WriteString("# Written by the admin API (nutsgate deny add|remove); edits by hand are read too.\n")
	for _, e := range d.Entries() {
		b.WriteString(e.Text)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteFileAtomic replaces path with data so that a reader sees either the
// old or the new content, never a part: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %v", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %v", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %v", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %v", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %v", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %v", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
