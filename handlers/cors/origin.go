package cors

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// origin is a parsed origin, normalised for comparison: scheme and host in
// lower case, the scheme's default port left out.
type origin struct {
	scheme string // "http" or "https"
	host   string // a DNS name or IPv4 address, or an IPv6 address in brackets
	port   string // empty for the scheme's default port
}

// parseOrigin parses s as a serialised origin, scheme "://" host [":" port],
// the form browsers send in the Origin header. Scheme and host are compared
// without regard to letter case, the port exactly, and the scheme's default
// port (80 for http, 443 for https) is the same as none. A path (even "/"),
// query, fragment or user info makes s no origin.
func parseOrigin(s string) (origin, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return origin{}, errors.New("not of the form scheme://host[:port]")
	}
	var o origin
	var defaultPort string
	switch o.scheme = strings.ToLower(scheme); o.scheme {
	case "http":
		defaultPort = "80"
	case "https":
		defaultPort = "443"
	default:
		return origin{}, fmt.Errorf("scheme %q is not http or https", scheme)
	}
	if i := strings.IndexAny(rest, "/?#@\\"); i >= 0 {
		switch rest[i] {
		case '?':
			return origin{}, errors.New("an origin has no query")
		case '#':
			return origin{}, errors.New("an origin has no fragment")
		case '@':
			return origin{}, errors.New("an origin has no user info")
		default:
			return origin{}, errors.New("an origin has no path, not even /")
		}
	}
	hostPort := rest
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return origin{}, errors.New("unclosed [ in host")
		}
		addr, err := netip.ParseAddr(rest[1:end])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return origin{}, fmt.Errorf("host %q is not an IPv6 address", rest[:end+1])
		}
		o.host = "[" + addr.String() + "]"
		rest = rest[end+1:]
		if rest != "" && rest[0] != ':' {
			return origin{}, fmt.Errorf("%q is not host[:port]", hostPort)
		}
	} else {
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			i = len(rest)
		}
		o.host = strings.ToLower(rest[:i])
		if !validHost(o.host) {
			return origin{}, fmt.Errorf("host %q is not a host name or IP address", rest[:i])
		}
		rest = rest[i:]
	}
	if rest != "" {
		port := rest[1:]
		if !validPort(port) {
			return origin{}, fmt.Errorf("port %q is not a number from 1 to 65535 without leading zeros", port)
		}
		if port != defaultPort {
			o.port = port
		}
	}
	return o, nil
}

// validHost reports whether h is a lower-case DNS name or IPv4 address:
// dot-separated labels of letters, digits, '-' and '_', none empty.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}

// validPort reports whether p is a decimal port number, 1 to 65535,
// written without leading zeros.
func validPort(p string) bool {
	if p == "" || len(p) > 5 || p[0] == '0' {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// pattern is one entry of the origins list.
type pattern struct {
	any      bool   // "*"
	null     bool   // "null"
	wildcard bool   // https://*.example.com: o.host is ".example.com"
	o        origin // the origin, or for a wildcard its suffix
}

// parsePattern parses an entry of the origins list: "*", "null", an origin,
// or an origin whose host is "*." followed by a domain of at least two
// labels, which stands for every host one or more labels below that domain.
func parsePattern(s string) (pattern, error) {
	switch s {
	case "*":
		return pattern{any: true}, nil
	case "null":
		return pattern{null: true}, nil
	}
	wildcard := false
	if scheme, rest, ok := strings.Cut(s, "://"); ok && strings.HasPrefix(rest, "*.") {
		wildcard = true
		s = scheme + "://" + rest[2:]
	}
	o, err := parseOrigin(s)
	if err != nil {
		return pattern{}, err
	}
	if !wildcard {
		return pattern{o: o}, nil
	}
	if strings.HasPrefix(o.host, "[") || strings.Count(o.host, ".") < 1 {
		return pattern{}, errors.New("a wildcard must stand below a domain of two or more labels, as in https://*.example.com")
	}
	if _, err := netip.ParseAddr(o.host); err == nil {
		return pattern{}, errors.New("a wildcard cannot stand below an IP address")
	}
	o.host = "." + o.host
	return pattern{wildcard: true, o: o}, nil
}

// matches reports whether the parsed origin o is allowed by the exact or
// wildcard pattern p. A wildcard matches hosts that end in its suffix
// with at least one label before it: not the domain itself, and, since
// the suffix starts with a dot, not a host that merely ends in the same
// letters (evil-example.com).
func (p pattern) matches(o origin) bool {
	if p.o.scheme != o.scheme || p.o.port != o.port {
		return false
	}
	if !p.wildcard {
		return p.o.host == o.host
	}
	return len(o.host) > len(p.o.host) && strings.HasSuffix(o.host, p.o.host)
}
