package tokenv2

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// FromPatterns is the pattern list of an authorized_keys from="..." option,
// matched as sshd(8) matches it against a client whose host name is never
// looked up: a client is known by its IP address only.
//
// Each comma-separated pattern is an address ("10.1.2.3", "::1"), a CIDR
// block ("10.0.0.0/8", "2001:db8::/32"), or a wildcard pattern where '*'
// matches any run of characters and '?' exactly one, compared with the
// address as text (lower case, IPv6 in its compressed form), so that
// "10.0.0.*" matches 10.0.0.7. A host name pattern is valid but never
// matches. A pattern preceded by '!' is negated: a client matching a negated
// pattern is refused even if another pattern matches. A client is allowed
// when it matches at least one pattern and no negated one; so a list of only
// negated patterns allows no one.
type FromPatterns struct {
	text     string
	patterns []fromPattern
}

type fromPattern struct {
	negated bool
	prefix  netip.Prefix // valid for an address or CIDR block
	glob    string       // lower case; used when prefix is not valid
}

// String returns the pattern list as written.
func (f *FromPatterns) String() string { return f.text }

// ParseFromPatterns reads the pattern list of a from="..." option (the text
// between the quotes). An empty pattern, a CIDR block that does not parse or
// has host bits set, and a character that cannot be part of an address or
// host name pattern are errors.
func ParseFromPatterns(list string) (*FromPatterns, error) {
	f := &FromPatterns{text: list}
	for _, p := range strings.Split(list, ",") {
		var fp fromPattern
		if strings.HasPrefix(p, "!") {
			fp.negated, p = true, p[1:]
		}
		if p == "" {
			return nil, errors.New("empty pattern")
		}
		if strings.Contains(p, "/") {
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, fmt.Errorf("pattern %q is not a CIDR block", p)
			}
			if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
				pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
			}
			if pfx.Addr().Zone() != "" || pfx.Masked() != pfx {
				return nil, fmt.Errorf("pattern %q is not a CIDR block: host bits are set", p)
			}
			fp.prefix = pfx
		} else if a, err := netip.ParseAddr(p); err == nil && a.Zone() == "" {
			a = a.Unmap()
			fp.prefix = netip.PrefixFrom(a, a.BitLen())
		} else {
			for i := 0; i < len(p); i++ {
				c := p[i]
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-_:*?", c) >= 0) {
					return nil, fmt.Errorf("pattern %q holds %q, which is in no address or host name", p, c)
				}
			}
			fp.glob = strings.ToLower(p)
		}
		f.patterns = append(f.patterns, fp)
	}
	return f, nil
}

// Allows reports whether a client at addr may use the key. An invalid addr
// (an address that could not be determined) is never allowed.
func (f *FromPatterns) Allows(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	text := addr.String()
	allowed := false
	for _, p := range f.patterns {
		var m bool
		if p.prefix.IsValid() {
			m = p.prefix.Contains(addr)
		} else {
			m = wildcardMatch(p.glob, text)
		}
		if m && p.negated {
			return false
		}
		allowed = allowed || m
	}
	return allowed
}

// wildcardMatch reports whether s matches pattern, where '*' matches any
// run of characters and '?' exactly one.
func wildcardMatch(pattern, s string) bool {
	// Iterative matching with backtracking to the last '*': linear in
	// len(pattern)*len(s) at worst, without recursion.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// ParseExpiryTime reads the timespec of an expiry-time="..." option as
// sshd(8) does: YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, in the time zone
// loc unless suffixed with "Z" or "UTC" (any letter case), which means UTC.
// A date or time that does not exist (month 13, February 30, hour 24) is an
// error.
func ParseExpiryTime(spec string, loc *time.Location) (time.Time, error) {
	s := spec
	switch u := strings.ToUpper(s); {
	case len(s) > 3 && strings.HasSuffix(u, "UTC"):
		s, loc = s[:len(s)-3], time.UTC
	case len(s) > 1 && strings.HasSuffix(u, "Z"):
		s, loc = s[:len(s)-1], time.UTC
	}
	var layout string
	switch len(s) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, fmt.Errorf("timespec %q is not YYYYMMDD[HHMM[SS]][Z]", spec)
	}
	if !isDigits(s) {
		return time.Time{}, fmt.Errorf("timespec %q is not YYYYMMDD[HHMM[SS]][Z]", spec)
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("timespec %q is not a valid date and time", spec)
	}
	return t, nil
}

// keyOptions reads the from= and expiry-time= options of an authorized_keys
// line, as golang.org/x/crypto/ssh splits them (at commas outside quotes).
// Option names are matched in any letter case, as sshd does; the value must
// be in double quotes, where \" stands for a quote. Other options are
// ignored. A from= option given twice is an error; of several expiry-time=
// options the earliest counts, as in sshd.
func keyOptions(options []string, loc *time.Location) (from *FromPatterns, expires time.Time, err error) {
	for _, opt := range options {
		name, value, ok := strings.Cut(opt, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(name) {
		case "from":
			if from != nil {
				return nil, time.Time{}, errors.New("option from= given twice")
			}
			v, err := dequote(value)
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("option from=: %v", err)
			}
			if from, err = ParseFromPatterns(v); err != nil {
				return nil, time.Time{}, fmt.Errorf("option from=: %v", err)
			}
		case "expiry-time":
			v, err := dequote(value)
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("option expiry-time=: %v", err)
			}
			t, err := ParseExpiryTime(v, loc)
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("option expiry-time=: %v", err)
			}
			if expires.IsZero() || t.Before(expires) {
				expires = t
			}
		}
	}
	return from, expires, nil
}

// dequote returns the text of a double-quoted option value, with \" read
// as a quote.
func dequote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", errors.New("value is not in double quotes")
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v) && v[i+1] == '"':
			b.WriteByte('"')
			i++
		case v[i] == '"':
			if i != len(v)-1 {
				return "", errors.New("data after the closing quote")
			}
			return b.String(), nil
		default:
			b.WriteByte(v[i])
		}
	}
	return "", errors.New("unterminated quote")
}
