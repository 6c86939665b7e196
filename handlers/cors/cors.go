// Package cors decides Cross-Origin Resource Sharing for the gateway: which
// browser origins may read responses, and how preflight requests are
// answered. It has no Caddy dependency; caddymodule's `cors` handler is the
// glue.
//
// The rules, as an operator of a production node expects them:
//
//   - Origins are compared case-insensitively on scheme and host and exactly
//     on port, with the default port normalised: https://a.org and
//     https://a.org:443 are the same origin. A request Origin that is not
//     a well-formed scheme://host[:port] is never allowed.
//   - https://*.example.com allows hosts one or more labels below
//     example.com, not example.com itself, and never evil-example.com or
//     example.com.evil.org. Scheme and port must match as for exact origins.
//   - The "null" origin (sandboxed frames, file:// pages, some redirects;
//     anyone can make a browser send it) is allowed only when "null" is
//     written in the origins list, never through "*".
//   - "*" needs AllowAnyOrigin and cannot be combined with Credentials. With
//     "*" every origin gets Access-Control-Allow-Origin: *.
//   - A preflight is an OPTIONS request with Origin and a non-empty
//     Access-Control-Request-Method; an OPTIONS request without them is an
//     ordinary request. A preflight is allowed only if its origin, its
//     method and every header it names are on the lists; it is then
//     answered 204, otherwise 403, and never passed on.
//   - Methods are case-sensitive, as HTTP says; the configured names are
//     upper-cased. GET, HEAD and POST are not allowed implicitly: the list
//     is the whole truth for preflights. (Simple GET and POST requests need
//     no preflight; CORS never stops them from reaching the node, it only
//     keeps their answers from other origins' scripts.)
//   - Header names are compared case-insensitively; Access-Control-Request-
//     Headers is read as a comma-separated list, spaces and empty elements
//     ignored, across every copy of the header.
//   - The gateway is the only source of CORS response headers: on a request
//     with an Origin, every Access-Control-* header the upstream set is
//     removed and the gateway's are set instead (see SetHeaders), so the
//     node can neither widen the policy nor make a browser see two values.
//
// Why not github.com/rs/cors: it answers a refused preflight with 204 and
// no CORS headers instead of 403, forwards or answers preflights on an
// option rather than always answering them, and would be one more
// dependency for about two hundred lines of header logic.
package cors

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The defaults for an empty Config field.
const (
	DefaultMaxAge = time.Hour
)

// Conflicts between options that New reports, for callers that point at
// the option to change.
var (
	ErrAnyWithoutAllowAny = errors.New(`origin "*" needs allow_any_origin`)
	ErrAnyWithCredentials = errors.New(`credentials cannot be used with origin "*"`)
	ErrAllowAnyWithoutAny = errors.New(`allow_any_origin is set but origins has no "*"`)
)

var (
	defaultMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	defaultHeaders = []string{"Authorization", "Content-Type"}
)

// Config is a CORS policy as the operator writes it.
type Config struct {
	// Origins allowed to read responses: scheme://host[:port],
	// scheme://*.domain[:port], "null", or "*" (with AllowAnyOrigin).
	// Required.
	Origins []string
	// Methods a preflight may ask for. Default: GET POST PUT PATCH DELETE.
	Methods []string
	// Request headers a preflight may ask for. Default: Authorization
	// Content-Type.
	Headers []string
	// Response headers scripts may read, besides the safelisted ones.
	Expose []string
	// Accept "*" in Origins.
	AllowAnyOrigin bool
	// Send Access-Control-Allow-Credentials: true. Not with "*".
	Credentials bool
	// How long browsers may cache a preflight answer, in whole seconds.
	// Default: DefaultMaxAge.
	MaxAge time.Duration
}

// Policy is a validated Config, ready to decide requests. It is safe for
// concurrent use.
type Policy struct {
	exact       map[origin]struct{}
	wildcards   []pattern
	any, null   bool
	credentials bool
	methods     []string
	headers     map[string]struct{} // lower case
	warnings    []string

	// Response header values, computed once.
	allowMethods, allowHeaders, expose, maxAge string
}

// New validates c and returns its Policy. Errors are one line and name the
// offending value.
func New(c Config) (*Policy, error) {
	if len(c.Origins) == 0 {
		return nil, errors.New("origins is required")
	}
	p := &Policy{exact: make(map[origin]struct{}), credentials: c.Credentials, headers: make(map[string]struct{})}
	for _, s := range c.Origins {
		pat, err := parsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("origin %q: %v", s, err)
		}
		switch {
		case pat.any:
			p.any = true
		case pat.null:
			p.null = true
		case pat.wildcard:
			p.wildcards = append(p.wildcards, pat)
		default:
			p.exact[pat.o] = struct{}{}
		}
	}
	switch {
	case p.any && !c.AllowAnyOrigin:
		return nil, ErrAnyWithoutAllowAny
	case p.any && c.Credentials:
		return nil, ErrAnyWithCredentials
	case c.AllowAnyOrigin && !p.any:
		return nil, ErrAllowAnyWithoutAny
	}
	if p.any {
		p.warnings = append(p.warnings, `origin "*" lets every web site read the responses`)
	}
	if p.null {
		p.warnings = append(p.warnings, `origin "null" lets any sandboxed frame or file:// page read the responses`)
	}

	for _, m := range orDefault(c.Methods, defaultMethods) {
		if err := ValidMethod(m); err != nil {
			return nil, err
		}
		if m = strings.ToUpper(m); !slices.Contains(p.methods, m) {
			p.methods = append(p.methods, m)
		}
	}
	headers := orDefault(c.Headers, defaultHeaders)
	for _, h := range headers {
		if err := ValidHeader(h); err != nil {
			return nil, err
		}
		p.headers[strings.ToLower(h)] = struct{}{}
	}
	for _, h := range c.Expose {
		if err := ValidHeader(h); err != nil {
			return nil, fmt.Errorf("expose: %v", err)
		}
	}
	switch {
	case c.MaxAge == 0:
		c.MaxAge = DefaultMaxAge
	case c.MaxAge < time.Second:
		return nil, fmt.Errorf("max_age %v is not at least 1s", c.MaxAge)
	}
	p.allowMethods = strings.Join(p.methods, ", ")
	p.allowHeaders = strings.Join(headers, ", ")
	p.expose = strings.Join(c.Expose, ", ")
	p.maxAge = strconv.FormatInt(int64(c.MaxAge/time.Second), 10)
	return p, nil
}

// ValidOrigin checks one entry of the origins list, as New does.
func ValidOrigin(s string) error {
	if _, err := parsePattern(s); err != nil {
		return fmt.Errorf("origin %q: %v", s, err)
	}
	return nil
}

// ValidMethod checks a method name: an HTTP token, not "*".
func ValidMethod(m string) error { return validName("method", m) }

// ValidHeader checks a header name: an HTTP token, not "*".
func ValidHeader(h string) error { return validName("header", h) }

// validName checks a method or header name (kind) for ValidMethod and
// ValidHeader.
func validName(kind, s string) error {
	if s == "*" {
		return fmt.Errorf(`%s "*": list the %ss instead`, kind, kind)
	}
	if !isToken(s) {
		return fmt.Errorf("%s %q is not a %s name", kind, s, kind)
	}
	return nil
}

// Warnings are the risks of the policy an operator should see at start.
func (p *Policy) Warnings() []string { return p.warnings }

// AllowsOrigin reports whether the value of a request's Origin header is
// an allowed origin.
func (p *Policy) AllowsOrigin(s string) bool {
	if s == "null" {
		return p.null
	}
	o, err := parseOrigin(s)
	if err != nil {
		return false
	}
	if p.any {
		return true
	}
	if _, ok := p.exact[o]; ok {
		return true
	}
	for _, w := range p.wildcards {
		if w.matches(o) {
			return true
		}
	}
	return false
}

// IsPreflight reports whether r is a CORS preflight: an OPTIONS request
// with Origin and a non-empty Access-Control-Request-Method.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && len(r.Header["Origin"]) > 0 && r.Header.Get("Access-Control-Request-Method") != ""
}

// RequestOrigin returns the value of the request's Origin header. ok is
// false unless there is exactly one.
func RequestOrigin(h http.Header) (origin string, ok bool) {
	if v := h["Origin"]; len(v) == 1 {
		return v[0], true
	}
	return "", false
}

// CheckPreflight decides the preflight with request header h: nil if it is
// allowed, else an error saying why not, for the log.
func (p *Policy) CheckPreflight(h http.Header) error {
	o, ok := RequestOrigin(h)
	if !ok {
		return errors.New("not exactly one Origin header")
	}
	if !p.AllowsOrigin(o) {
		return fmt.Errorf("origin %q is not allowed", o)
	}
	if m := h["Access-Control-Request-Method"]; len(m) != 1 || !slices.Contains(p.methods, m[0]) {
		return fmt.Errorf("method %q is not allowed", strings.Join(m, ", "))
	}
	for _, line := range h["Access-Control-Request-Headers"] {
		for name := range strings.SplitSeq(line, ",") {
			name = strings.Trim(name, " \t")
			if name == "" {
				continue
			}
			if _, ok := p.headers[strings.ToLower(name)]; !ok {
				return fmt.Errorf("header %q is not allowed", name)
			}
		}
	}
	return nil
}

// Vary names the request headers a CORS answer depends on. Every response
// gets VaryOrigin; preflight answers (204 and 403) get VaryPreflight.
const (
	VaryOrigin    = "Origin"
	VaryPreflight = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
)

// SetPreflightHeaders sets into h the headers of the 204 answer to an
// allowed preflight from origin: the allowed origin, methods and headers,
// credentials and max-age. It does not set Vary.
func (p *Policy) SetPreflightHeaders(h http.Header, origin string) {
	p.setOrigin(h, origin)
	h["Access-Control-Allow-Methods"] = []string{p.allowMethods}
	h["Access-Control-Allow-Headers"] = []string{p.allowHeaders}
	h["Access-Control-Max-Age"] = []string{p.maxAge}
}

// SetHeaders makes h the CORS headers of the response to an ordinary
// request from origin: it removes every Access-Control-* header already
// in h (an upstream's), then, if origin is allowed (allowed is what
// AllowsOrigin said), sets the allowed origin, credentials and exposed
// headers. It does not set Vary.
func (p *Policy) SetHeaders(h http.Header, origin string, allowed bool) {
	RemoveHeaders(h)
	if !allowed {
		return
	}
	p.setOrigin(h, origin)
	if p.expose != "" {
		h["Access-Control-Expose-Headers"] = []string{p.expose}
	}
}

func (p *Policy) setOrigin(h http.Header, origin string) {
	if p.any {
		h["Access-Control-Allow-Origin"] = []string{"*"}
		return
	}
	h["Access-Control-Allow-Origin"] = []string{origin}
	if p.credentials {
		h["Access-Control-Allow-Credentials"] = []string{"true"}
	}
}

// RemoveHeaders deletes every Access-Control-* header from h, in any
// letter case.
func RemoveHeaders(h http.Header) {
	const prefix = "access-control-"
	for k := range h {
		if len(k) >= len(prefix) && k[0]|0x20 == 'a' && strings.EqualFold(k[:len(prefix)], prefix) {
			delete(h, k)
		}
	}
}

func orDefault(list, def []string) []string {
	if len(list) == 0 {
		return def
	}
	return list
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
