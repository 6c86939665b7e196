package mtlsident

import (
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDNLength bounds the DN strings this package parses.
const maxDNLength = 8192

// normalizeDN parses an RFC 4514 (RFC 2253) distinguished name and returns
// a key that is equal for two DNs that name the same subject: attribute
// types by OID, values compared without regard to letter case, white space
// around separators ignored, the attributes of a multi-valued RDN in any
// order, and the RDNs in the order written.
func normalizeDN(s string) (string, error) {
	dn, err := parseDN(s)
	return dn.key, err
}

// parsedDN is a DN string read by parseDN.
type parsedDN struct {
	key    string         // as normalizeDN returns it
	rdns   [][]writtenATV // the attributes as written
	spaced int            // RDNs with white space around an '=', as OpenSSL's default form writes them
}

// writtenATV is an attribute as written: its type's name and its value, unescaped.
type writtenATV struct{ typ, value string }

func parseDN(s string) (parsedDN, error) {
	if len(s) > maxDNLength {
		return parsedDN{}, fmt.Errorf("longer than %d bytes", maxDNLength)
	}
	if !utf8.ValidString(s) {
		return parsedDN{}, errors.New("not valid UTF-8")
	}
	p := dnParser{s: s}
	var keys []string
	for {
		key, err := p.rdn()
		if err != nil {
			return parsedDN{}, err
		}
		keys = append(keys, key)
		if p.eof() {
			return parsedDN{key: strings.Join(keys, ","), rdns: p.rdns, spaced: p.spaced}, nil
		}
		p.i++ // the ',' (or ';') after the RDN
	}
}

// rfc2253 writes the DN as `openssl x509 -nameopt RFC2253` would if the
// DN string were OpenSSL's default form: the attributes in reverse order
// and escaped as RFC 4514 says.
func (dn parsedDN) rfc2253() string {
	var b strings.Builder
	for i := len(dn.rdns) - 1; i >= 0; i-- {
		if i < len(dn.rdns)-1 {
			b.WriteByte(',')
		}
		rdn := dn.rdns[i]
		for j := len(rdn) - 1; j >= 0; j-- {
			if j < len(rdn)-1 {
				b.WriteByte('+')
			}
			b.WriteString(rdn[j].typ)
			b.WriteByte('=')
			b.WriteString(escapeValue(rdn[j].value))
		}
	}
	return b.String()
}

// escapeValue escapes an attribute value as RFC 4514 says, and control
// characters as hex pairs.
func escapeValue(v string) string {
	var b strings.Builder
	for i, r := range v {
		switch {
		case strings.ContainsRune(`,+"\<>;`, r),
			r == ' ' && (i == 0 || i == len(v)-1),
			r == '#' && i == 0:
			b.WriteByte('\\')
			b.WriteRune(r)
		case unicode.IsControl(r):
			writeHexEscape(&b, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// writeHexEscape writes r as RFC 4514 hex pairs, one a byte of its UTF-8.
func writeHexEscape(b *strings.Builder, r rune) {
	var buf [utf8.UTFMax]byte
	for _, c := range buf[:utf8.EncodeRune(buf[:], r)] {
		fmt.Fprintf(b, `\%02X`, c)
	}
}

// escapeControls replaces every control character of a DN string by its
// RFC 4514 hex escape, so that the string is one line and reads as the same
// DN. A control character a backslash escapes is replaced with that
// backslash. Bytes that are not UTF-8 are kept.
func escapeControls(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\\' && i+1 < len(s) {
			next, nsize := utf8.DecodeRuneInString(s[i+1:])
			if unicode.IsControl(next) {
				writeHexEscape(&b, next)
			} else {
				b.WriteString(s[i : i+1+nsize])
			}
			i += 1 + nsize
			continue
		}
		if unicode.IsControl(r) {
			writeHexEscape(&b, r)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

type dnParser struct {
	s      string
	i      int
	rdns   [][]writtenATV
	spaced int
}

func (p *dnParser) eof() bool { return p.i >= len(p.s) }

// skipSpace skips spaces and reports whether there were any.
func (p *dnParser) skipSpace() bool {
	start := p.i
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
	return p.i > start
}

// rdn reads attributes up to the end of an RDN and returns them normalised.
func (p *dnParser) rdn() (string, error) {
	var keys []string
	var written []writtenATV
	spaced := false
	for {
		name, t, sp, err := p.attributeType()
		if err != nil {
			return "", err
		}
		sp = p.skipSpace() || sp
		v, err := p.value()
		if err != nil {
			return "", fmt.Errorf("value of %s: %v", name, err)
		}
		spaced = spaced || sp
		written = append(written, writtenATV{name, v})
		keys = append(keys, t+"="+strconv.Quote(strings.ToLower(v)))
		if p.eof() || p.s[p.i] != '+' {
			break
		}
		p.i++
	}
	p.rdns = append(p.rdns, written)
	if spaced {
		p.spaced++
	}
	slices.Sort(keys)
	return strings.Join(keys, "+"), nil
}

// attributeType reads a type and its '=' and returns the type as written,
// its OID, and whether white space came before the '='.
func (p *dnParser) attributeType() (name, oid string, spaced bool, err error) {
	p.skipSpace()
	start := p.i
	for !p.eof() && p.s[p.i] != '=' {
		c := p.s[p.i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			break
		}
		p.i++
	}
	name = p.s[start:p.i]
	spaced = p.skipSpace()
	if p.eof() || p.s[p.i] != '=' {
		return "", "", false, fmt.Errorf("expected '=' after attribute type at byte %d", p.i)
	}
	p.i++
	if name == "" {
		return "", "", false, fmt.Errorf("empty attribute type at byte %d", start)
	}
	if number, ok := strings.CutPrefix(strings.ToUpper(name), "OID."); ok && isOID(number) {
		return name, number, spaced, nil
	}
	if isOID(name) {
		return name, name, spaced, nil
	}
	oid, err = lookupAttribute(name)
	return name, oid, spaced, err
}

func isOID(s string) bool {
	parts := strings.Split(s, ".")
	for _, part := range parts {
		if part == "" || strings.Trim(part, "0123456789") != "" {
			return false
		}
	}
	return len(parts) >= 2
}

// value reads an attribute value up to an unescaped ',', ';' or '+', and
// returns it unescaped. A '#' hex value holding a BER string is read as
// that string, so "1.2.840.113549.1.9.1=#1603612e62" and "emailAddress=a.b"
// compare equal.
func (p *dnParser) value() (string, error) {
	if !p.eof() && p.s[p.i] == '#' {
		return p.hexValue()
	}
	var b []byte
	keep := 0 // length of b without trailing unescaped spaces
	quoted := !p.eof() && p.s[p.i] == '"'
	if quoted {
		p.i++
	}
	for !p.eof() {
		c := p.s[p.i]
		switch {
		case quoted && c == '"':
			p.i++
			p.skipSpace()
			if !p.eof() && strings.IndexByte(",;+", p.s[p.i]) < 0 {
				return "", fmt.Errorf("unexpected %q after quoted value", p.s[p.i])
			}
			return validUTF8(b)
		case !quoted && strings.IndexByte(",;+", c) >= 0:
			return validUTF8(b[:keep])
		case c == '\\':
			if p.i+1 >= len(p.s) {
				return "", errors.New("escape at the end")
			}
			if h, err := hex.DecodeString(p.s[p.i+1 : min(p.i+3, len(p.s))]); err == nil && len(h) == 1 {
				b = append(b, h[0])
				p.i += 3
			} else {
				b = append(b, p.s[p.i+1])
				p.i += 2
			}
			keep = len(b)
		default:
			b = append(b, c)
			p.i++
			if c != ' ' || quoted {
				keep = len(b)
			}
		}
	}
	if quoted {
		return "", errors.New("unterminated quoted value")
	}
	return validUTF8(b[:keep])
}

// validUTF8 returns b as a string, if it is valid UTF-8.
func validUTF8(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errors.New("escapes do not form valid UTF-8")
	}
	return string(b), nil
}

// hexValue reads a '#' hex-encoded BER value: a string, if it holds one of
// the ASN.1 string types, else "#" and the hex digits.
func (p *dnParser) hexValue() (string, error) {
	p.i++ // '#'
	start := p.i
	for !p.eof() && strings.IndexByte(",;+ ", p.s[p.i]) < 0 {
		p.i++
	}
	digits := p.s[start:p.i]
	raw, err := hex.DecodeString(digits)
	p.skipSpace()
	if err != nil || len(raw) == 0 {
		return "", errors.New("bad hex value")
	}
	var v asn1.RawValue
	if rest, err := asn1.Unmarshal(raw, &v); err == nil && len(rest) == 0 {
		if s, ok := decodeString(v); ok {
			return s, nil
		}
	}
	return "#" + strings.ToLower(digits), nil
}

// tagUniversalString is the ASN.1 string type encoding/asn1 does not name.
const tagUniversalString = 28

// decodeString returns the text of an ASN.1 string value, as OpenSSL reads
// it: UTF8String, PrintableString, IA5String and NumericString as they are, T61String as Latin-1, BMPString as UTF-16 and
// UniversalString as UTF-32 (big-endian). It reports false for other types
// and for content not valid in its type's encoding.
func decodeString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return "", false
	}
	b := v.Bytes
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, asn1.TagNumericString:
		return string(b), utf8.Valid(b)
	case asn1.TagT61String:
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r), true
	case asn1.TagBMPString:
		if len(b)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(b)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(b[2*i:])
		}
		r := utf16.Decode(u)
		return string(r), !slices.Contains(r, utf8.RuneError)
	case tagUniversalString:
		if len(b)%4 != 0 {
			return "", false
		}
		var s strings.Builder
		for i := 0; i < len(b); i += 4 {
			r := rune(binary.BigEndian.Uint32(b[i:]))
			if !utf8.ValidRune(r) {
				return "", false
			}
			s.WriteRune(r)
		}
		return s.String(), true
	}
	return "", false
}
