// Package pathguard decides whether the path of an HTTP request target is
// unambiguous: whether every component that decodes and cleans paths (Caddy's
// matchers, the reverse proxy, the node behind it) must see the same
// segments as the raw target shows. It is the Caddy-free core of the
// `path_guard` handler.
//
// A request target is refused when its path, as sent, holds:
//
//   - an encoded slash, backslash or dot: `%2f`, `%5c`, `%2e` (any letter case);
//   - a backslash;
//   - a NUL, raw or `%00`;
//   - a `.` or `..` segment, also when followed by path parameters (`..;x`,
//     `..%3bx`), as servlet containers strip those before resolving dots;
//   - an empty segment (`//`, or a segment of parameters only, `/;x/`); a
//     single trailing slash (`/n2n/`) is not an empty segment;
//   - an encoded unreserved character (RFC 3986: `ALPHA DIGIT - . _ ~`,
//     any letter case: `%69`, `%4E`, `%30`, `%2d`, `%5F`, `%7e`). No client
//     needs to encode those, and readers disagree on them: Caddy's matchers
//     decode `/%69nternal/x` to `/internal/x` while the node's router, given
//     the raw path, reads `%69nternal`;
//   - the above encoded more than once (`%252e`, `%2569`, up to
//     MaxDecodeDepth decodings deep), since some servers decode twice;
//   - `%c0` or `%c1`, bytes that never occur in UTF-8 and that lenient
//     decoders read as overlong forms of `.`, `/` and `\`;
//   - a malformed escape (`%` not followed by two hex digits).
//
// Everything else passes byte for byte: escapes of reserved and other
// characters (`%3A` in did:web identifiers, `%40`, `%20`, `%2B`, bytes of
// UTF-8, `%25` that does not hide one of the above), `;` in a segment
// name (`/n2n;a=b/x`: routing decides, and no route of the gateway matches
// it), letter case (`/N2N`: routing decides).
//
// Only the path is checked. The query (after the first `?`) is not: it is
// never resolved as a path. A raw `#` is part of the path as Go reads it
// and is harmless; the proxy forwards it encoded as `%23`.
//
// Request targets:
//
//   - origin-form (`/path?query`): the path is the part before `?`;
//   - absolute-form (`http://host/path?query`, `https://…`, any letter case):
//     the path is the part after the authority, as Go parses it; an empty
//     path is `/`;
//   - asterisk-form (`*`): refused. Go's server answers `OPTIONS *` itself
//     (200, empty) before any handler runs, so a handler only sees `*` with
//     other methods or over HTTP/3, and no route of a gateway serves it;
//   - authority-form (`host:port`, CONNECT) and anything else: refused; the
//     gateway is no forward proxy. Extended CONNECT (WebSockets over HTTP/2)
//     carries an origin-form path and is checked as such.
//
// The length of a target is not bounded here: Go's server already bounds
// the request line (by MaxHeaderBytes, 1 MB by default in Caddy), and the
// check is linear in the length of the path (MaxDecodeDepth passes at most,
// and those only when the path holds `%25`).
package pathguard

import (
	"errors"
	"strings"
)

// MaxDecodeDepth is how many decodings deep an encoded slash, backslash, dot,
// NUL or unreserved character is looked for: `%2e` is caught at depth 1, `%252e` at 2, and
// `%25252525252e` (depth 6) passes, as no server decodes a path that often.
const MaxDecodeDepth = 5

// The reasons a target is refused. Check returns one of these.
var (
	ErrNotPath           = errors.New("request target is neither an origin-form path nor an http(s) absolute URL")
	ErrAsterisk          = errors.New("request target * is not served")
	ErrMalformedEscape   = errors.New("path holds a malformed percent-encoding")
	ErrEncodedSlash      = errors.New("path holds an encoded slash (%2f)")
	ErrEncodedBackslash  = errors.New("path holds an encoded backslash (%5c)")
	ErrEncodedDot        = errors.New("path holds an encoded dot (%2e)")
	ErrBackslash         = errors.New("path holds a backslash")
	ErrNUL               = errors.New("path holds a NUL")
	ErrOverlong          = errors.New("path holds %c0 or %c1, an overlong UTF-8 form")
	ErrDotSegment        = errors.New("path holds a . or .. segment")
	ErrEmptySegment      = errors.New("path holds an empty segment (//)")
	ErrNestedEncoding    = errors.New("path holds a slash, backslash, dot, NUL or unreserved character encoded more than once, such as %252e or %2569")
	ErrEncodedUnreserved = errors.New("path holds an encoded unreserved character (letter, digit, -, _ or ~), such as %69")
)

// Check reports whether the request target rawTarget, as sent by the client
// (http.Request.RequestURI), is safe to route and forward: nil if so, else
// one of the Err values saying why not.
func Check(rawTarget string) error {
	p, err := targetPath(rawTarget)
	if err != nil {
		return err
	}
	return CheckPath(p)
}

// targetPath returns the raw path of a request target, the way Go's
// url.ParseRequestURI splits it: scheme, then query, then authority.
func targetPath(target string) (string, error) {
	if target == "*" {
		return "", ErrAsterisk
	}
	if strings.HasPrefix(target, "/") {
		p, _, _ := strings.Cut(target, "?")
		return p, nil
	}
	var rest string
	switch {
	case hasPrefixFold(target, "http://"):
		rest = target[len("http://"):]
	case hasPrefixFold(target, "https://"):
		rest = target[len("https://"):]
	default:
		return "", ErrNotPath
	}
	rest, _, _ = strings.Cut(rest, "?")
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", nil // no path: "/"
	}
	return rest[i:], nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// CheckPath is Check for a raw (still percent-encoded) path without query.
// The empty path stands for `/`; any other path must start with `/`.
func CheckPath(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' {
		return ErrNotPath
	}
	nested := false // whether p holds %25, which may hide an escape
	segStart := 1   // start of the current segment
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if err := checkSegment(p[segStart:i], i == len(p)); err != nil {
				return err
			}
			segStart = i + 1
			continue
		}
		switch c := p[i]; c {
		case '\\':
			return ErrBackslash
		case 0:
			return ErrNUL
		case '%':
			b, ok := unhex2(p, i+1)
			if !ok {
				return ErrMalformedEscape
			}
			if err := forbiddenByte(b); err != nil {
				return err
			}
			if b == '%' {
				nested = true
			}
			i += 2
		}
	}
	if nested {
		return checkNested(p)
	}
	return nil
}

// checkSegment refuses dot segments and empty segments. The name of a
// segment is what precedes its parameters (`;` or `%3b`). Only the last
// segment may be empty, and only when it holds nothing at all (a trailing
// slash).
func checkSegment(seg string, last bool) error {
	name := seg
	for j := 0; j < len(seg); j++ {
		if seg[j] == ';' {
			name = seg[:j]
			break
		}
		if seg[j] == '%' && j+2 < len(seg) && seg[j+1] == '3' && (seg[j+2] == 'b' || seg[j+2] == 'B') {
			name = seg[:j]
			break
		}
	}
	switch name {
	case ".", "..":
		return ErrDotSegment
	case "":
		if !last || seg != "" {
			return ErrEmptySegment
		}
	}
	return nil
}

// forbiddenByte is the error for an escape decoding to b, or nil: a
// separator, a dot, NUL, an overlong UTF-8 lead byte, or another
// unreserved character.
func forbiddenByte(b byte) error {
	switch b {
	case '/':
		return ErrEncodedSlash
	case '\\':
		return ErrEncodedBackslash
	case '.':
		return ErrEncodedDot
	case 0:
		return ErrNUL
	case 0xc0, 0xc1:
		return ErrOverlong
	case '-', '_', '~':
		return ErrEncodedUnreserved
	}
	if 'a' <= b|0x20 && b|0x20 <= 'z' || '0' <= b && b <= '9' {
		return ErrEncodedUnreserved
	}
	return nil
}

// checkNested decodes p again and again, as a server that decodes more than
// once would, and refuses it when a decoding holds an escape of a byte
// forbiddenByte refuses. p has passed the checks of depth 1, so no decoding
// brings a separator, dot or NUL of its own: only escapes built from `%25`
// can appear. Later decodings are lenient: a `%` without two hex digits
// stays as it is.
func checkNested(p string) error {
	buf := []byte(p)
	for depth := 2; depth <= MaxDecodeDepth; depth++ {
		n, more := 0, false
		for i := 0; i < len(buf); i++ {
			c := buf[i]
			if c == '%' {
				if b, ok := unhex2(buf, i+1); ok {
					c = b
					i += 2
				}
			}
			buf[n] = c
			n++
		}
		buf = buf[:n]
		for i := 0; i < len(buf); i++ {
			if buf[i] != '%' {
				continue
			}
			b, ok := unhex2(buf, i+1)
			if !ok {
				continue
			}
			if forbiddenByte(b) != nil {
				return ErrNestedEncoding
			}
			if b == '%' {
				more = true
			}
		}
		if !more {
			return nil
		}
	}
	return nil
}

// unhex2 decodes the two hex digits at s[i:i+2].
func unhex2[S string | []byte](s S, i int) (byte, bool) {
	if i+1 >= len(s) {
		return 0, false
	}
	hi, ok1 := unhex(s[i])
	lo, ok2 := unhex(s[i+1])
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
