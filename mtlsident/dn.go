package mtlsident

import (
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// attributeOIDs maps the attribute type names a DN may use, upper case, to
// their OIDs, so that "CN", "cn" and "2.5.4.3" compare equal.
var attributeOIDs = map[string]string{
	"CN":                     "2.5.4.3",
	"SN":                     "2.5.4.4",
	"SERIALNUMBER":           "2.5.4.5",
	"C":                      "2.5.4.6",
	"L":                      "2.5.4.7",
	"ST":                     "2.5.4.8",
	"STREET":                 "2.5.4.9",
	"O":                      "2.5.4.10",
	"OU":                     "2.5.4.11",
	"TITLE":                  "2.5.4.12",
	"POSTALCODE":             "2.5.4.17",
	"GIVENNAME":              "2.5.4.42",
	"ORGANIZATIONIDENTIFIER": "2.5.4.97",
	"UID":                    "0.9.2342.19200300.100.1.1",
	"DC":                     "0.9.2342.19200300.100.1.25",
	"EMAILADDRESS":           "1.2.840.113549.1.9.1",
	"E":                      "1.2.840.113549.1.9.1",
}

// maxDNLength bounds the DN strings this package parses.
const maxDNLength = 8192

// normalizeDN parses an RFC 4514 (RFC 2253) distinguished name and returns
// a key that is equal for two DNs that name the same subject: attribute
// types by OID, values compared without regard to letter case, white space
// around separators ignored, the attributes of a multi-valued RDN in any
// order, and the RDNs in the order written.
func normalizeDN(s string) (string, error) {
	if len(s) > maxDNLength {
		return "", fmt.Errorf("longer than %d bytes", maxDNLength)
	}
	if !utf8.ValidString(s) {
		return "", errors.New("not valid UTF-8")
	}
	p := dnParser{s: s}
	var rdns []string
	for {
		rdn, err := p.rdn()
		if err != nil {
			return "", err
		}
		rdns = append(rdns, rdn)
		if p.eof() {
			return strings.Join(rdns, ","), nil
		}
		p.i++ // the ',' (or ';') after the RDN
	}
}

type dnParser struct {
	s string
	i int
}

func (p *dnParser) eof() bool { return p.i >= len(p.s) }

func (p *dnParser) skipSpace() {
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
}

// rdn reads attributes up to the end of an RDN and returns them normalised.
func (p *dnParser) rdn() (string, error) {
	var atvs []string
	for {
		t, err := p.attributeType()
		if err != nil {
			return "", err
		}
		v, err := p.value()
		if err != nil {
			return "", fmt.Errorf("value of %s: %v", t, err)
		}
		atvs = append(atvs, t+"="+strconv.Quote(v))
		if p.eof() || p.s[p.i] != '+' {
			break
		}
		p.i++
	}
	slices.Sort(atvs)
	return strings.Join(atvs, "+"), nil
}

// attributeType reads a type and its '=' and returns the type's OID.
func (p *dnParser) attributeType() (string, error) {
	p.skipSpace()
	start := p.i
	for !p.eof() && p.s[p.i] != '=' {
		c := p.s[p.i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			break
		}
		p.i++
	}
	name := p.s[start:p.i]
	p.skipSpace()
	if p.eof() || p.s[p.i] != '=' {
		return "", fmt.Errorf("expected '=' after attribute type at byte %d", p.i)
	}
	p.i++
	if name == "" {
		return "", fmt.Errorf("empty attribute type at byte %d", start)
	}
	if oid, ok := attributeOIDs[strings.ToUpper(name)]; ok {
		return oid, nil
	}
	name = strings.TrimPrefix(strings.TrimPrefix(name, "OID."), "oid.")
	if !isOID(name) {
		return "", fmt.Errorf("unknown attribute type %q", name)
	}
	return name, nil
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
// returns it unescaped and in lower case. A '#' hex value holding a BER
// string is read as that string, so "1.2.840.113549.1.9.1=#1603612e62" and
// "emailAddress=a.b" compare equal.
func (p *dnParser) value() (string, error) {
	p.skipSpace()
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
			return lowerUTF8(b)
		case !quoted && strings.IndexByte(",;+", c) >= 0:
			return lowerUTF8(b[:keep])
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
	return lowerUTF8(b[:keep])
}

// lowerUTF8 returns b in lower case, if it is valid UTF-8.
func lowerUTF8(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errors.New("escapes do not form valid UTF-8")
	}
	return strings.ToLower(string(b)), nil
}

// hexValue reads a '#' hex-encoded BER value.
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
	if rest, err := asn1.Unmarshal(raw, &v); err == nil && len(rest) == 0 && v.Class == asn1.ClassUniversal && isStringTag(v.Tag) && utf8.Valid(v.Bytes) {
		return strings.ToLower(string(v.Bytes)), nil
	}
	return "#" + strings.ToLower(digits), nil
}

func isStringTag(tag int) bool {
	switch tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, asn1.TagT61String, asn1.TagNumericString:
		return true
	}
	return false
}
