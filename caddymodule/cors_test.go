package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestCORSCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input, err string
		want             CORS
	}{
		{"full", "cors {\n origins https://a.org https://*.b.org\n origins null\n methods GET PUT\n headers Authorization X-Request-ID\n expose Link\n credentials\n max_age 10m\n}", "", CORS{
			Origins: []string{"https://a.org", "https://*.b.org", "null"}, Methods: []string{"GET", "PUT"}, Headers: []string{"Authorization", "X-Request-ID"},
			Expose: []string{"Link"}, Credentials: true, MaxAge: caddy.Duration(10 * time.Minute),
		}},
		{"origins only", "cors {\n origins https://a.org\n}", "", CORS{Origins: []string{"https://a.org"}}},
		{"any", "cors {\n origins *\n allow_any_origin\n}", "", CORS{Origins: []string{"*"}, AllowAnyOrigin: true}},
		{"no block", "cors", "origins is required, at Testfile:1", CORS{}},
		{"no origins", "cors {\n methods GET\n}", "origins is required, at Testfile:1", CORS{}},
		{"argument", "cors https://a.org", "wrong argument count or unexpected line ending after 'https://a.org', at Testfile:1", CORS{}},
		{"empty list", "cors {\n origins\n}", "wrong argument count or unexpected line ending after 'origins', at Testfile:2", CORS{}},
		{"path", "cors {\n origins https://a.org\n origins https://b.org/\n}", `origin "https://b.org/": an origin has no path, not even /, at Testfile:3`, CORS{}},
		{"query", "cors {\n origins https://b.org?x\n}", `origin "https://b.org?x": an origin has no query, at Testfile:2`, CORS{}},
		{"user info", "cors {\n origins https://u:p@b.org\n}", `origin "https://u:p@b.org": an origin has no user info, at Testfile:2`, CORS{}},
		{"scheme", "cors {\n origins b.org\n}", `origin "b.org": not of the form scheme://host[:port], at Testfile:2`, CORS{}},
		{"wildcard TLD", "cors {\n origins https://*.org\n}", `origin "https://*.org": a wildcard must stand below a domain of two or more labels, as in https://*.example.com, at Testfile:2`, CORS{}},
		{"star without allow_any_origin", "cors {\n origins https://a.org *\n max_age 1h\n}", `origin "*" needs allow_any_origin, at Testfile:2`, CORS{}},
		{"star with credentials", "cors {\n origins *\n allow_any_origin\n credentials\n}", `credentials cannot be used with origin "*", at Testfile:4`, CORS{}},
		{"allow_any_origin without star", "cors {\n origins https://a.org\n allow_any_origin\n}", `allow_any_origin is set but origins has no "*", at Testfile:3`, CORS{}},
		{"method", "cors {\n origins https://a.org\n methods GET *\n}", `method "*": list the methods instead, at Testfile:3`, CORS{}},
		{"header", "cors {\n origins https://a.org\n headers X-A:b\n}", `header "X-A:b" is not a header name, at Testfile:3`, CORS{}},
		{"flag twice", "cors {\n origins https://a.org\n credentials\n credentials\n}", "credentials already specified, at Testfile:4", CORS{}},
		{"flag with value", "cors {\n origins https://a.org\n credentials yes\n}", "wrong argument count or unexpected line ending after 'yes', at Testfile:3", CORS{}},
		{"max_age twice", "cors {\n origins https://a.org\n max_age 1h\n max_age 2h\n}", "max_age already specified, at Testfile:4", CORS{}},
		{"max_age bad", "cors {\n origins https://a.org\n max_age soon\n}", `max_age "soon": time: invalid duration "soon", at Testfile:3`, CORS{}},
		{"max_age small", "cors {\n origins https://a.org\n max_age 0\n}", `max_age "0" is not at least 1s, at Testfile:3`, CORS{}},
		{"unknown", "cors {\n origins https://a.org\n allow_origins https://a.org\n}", `unrecognized subdirective "allow_origins", at Testfile:3`, CORS{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got CORS
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestCORSCaddyfileAdapt: the directive needs no order option, comes
// before the other nutsgate handlers, and its errors name the file.
func TestCORSCaddyfileAdapt(t *testing.T) {
	out, err := adapt(`:8443 {
	reverse_proxy 127.0.0.1:8080
	token_v2 {
		authorized_keys /etc/keys
	}
	client_rate_limit {
		rate 5/1s
	}
	mtls_ident
	cors {
		origins https://a.org
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{`"handler":"cors"`, `"handler":"mtls_ident"`, `"handler":"client_rate_limit"`, `"handler":"subroute"`, `"handler":"reverse_proxy"`}
	last := -1
	for _, h := range order {
		i := strings.Index(out, h)
		if i < 0 || i < last {
			t.Fatalf("%s out of order (want %v):\n%s", h, order, out)
		}
		last = i
	}
	if _, err := adapt(":80 {\n cors {\n  origins https://a.org\n  credentials\n  origins *\n  allow_any_origin\n }\n}"); err == nil || err.Error() != `parsing caddyfile tokens for 'cors': credentials cannot be used with origin "*", at Caddyfile:4` {
		t.Fatalf("error %v", err)
	}
}

// corsRequest is a request as Caddy hands it to a handler, with a replacer.
func corsRequest(method string, header http.Header) *http.Request {
	r := httptest.NewRequest(method, "https://gw/public/auth/irma/session", nil)
	for k, v := range header {
		r.Header[k] = v
	}
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	return r.WithContext(ctx)
}

// upstream stands in for reverse_proxy: it copies the node's headers into
// the response with Add, as reverse_proxy does, and writes the body.
func upstream(header http.Header) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		for k, vv := range header {
			for _, v := range vv {
				w.Header().Add(k, v)
			}
		}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write([]byte("node ok"))
		return err
	}
}

func TestCORSServeHTTP(t *testing.T) {
	c := provisionedCORS(t, &CORS{Origins: []string{"https://a.org", "https://*.b.org"}, Credentials: true, Expose: []string{"Link"}, MaxAge: caddy.Duration(10 * time.Minute)})
	nodeCORS := http.Header{"Access-Control-Allow-Origin": {"*"}, "Access-Control-Expose-Headers": {"X-Internal"}, "Vary": {"Accept-Encoding"}, "Content-Type": {"text/plain"}}
	preflight := func(origin, method, headers string) http.Header {
		h := http.Header{"Origin": {origin}, "Access-Control-Request-Method": {method}}
		if headers != "" {
			h.Set("Access-Control-Request-Headers", headers)
		}
		return h
	}
	for _, tc := range []struct {
		name      string
		method    string
		header    http.Header
		status    int  // 0: passed on
		forwarded bool // the next handler ran
		want      http.Header
	}{
		{"allowed preflight", http.MethodOptions, preflight("https://a.org", "PUT", "authorization, content-type"), http.StatusNoContent, false, http.Header{
			"Access-Control-Allow-Origin":      {"https://a.org"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Allow-Methods":     {"GET, POST, PUT, PATCH, DELETE"},
			"Access-Control-Allow-Headers":     {"Authorization, Content-Type"},
			"Access-Control-Max-Age":           {"600"},
			"Vary":                             {"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"},
		}},
		{"allowed preflight, wildcard, origin echoed as sent", http.MethodOptions, preflight("https://X.b.org:443", "DELETE", ""), http.StatusNoContent, false, http.Header{
			"Access-Control-Allow-Origin":      {"https://X.b.org:443"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Allow-Methods":     {"GET, POST, PUT, PATCH, DELETE"},
			"Access-Control-Allow-Headers":     {"Authorization, Content-Type"},
			"Access-Control-Max-Age":           {"600"},
			"Vary":                             {"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"},
		}},
		{"preflight from another origin", http.MethodOptions, preflight("https://evil-b.org", "PUT", ""), http.StatusForbidden, false, http.Header{
			"Vary": {"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"},
		}},
		{"preflight from null", http.MethodOptions, preflight("null", "PUT", ""), http.StatusForbidden, false, http.Header{
			"Vary": {"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"},
		}},
		{"preflight for another method", http.MethodOptions, preflight("https://a.org", "HEAD", ""), http.StatusForbidden, false, http.Header{
			"Vary": {"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"},
		}},
		{"preflight for another header", http.MethodOptions, preflight("https://a.org", "PUT", "authorization, cookie"), http.StatusForbidden, false, http.Header{
			"Vary": {"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"},
		}},
		{"OPTIONS without request method", http.MethodOptions, http.Header{"Origin": {"https://a.org"}}, 0, true, http.Header{
			"Access-Control-Allow-Origin":      {"https://a.org"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Expose-Headers":    {"Link"},
			"Vary":                             {"Origin", "Accept-Encoding"},
			"Content-Type":                     {"text/plain"},
		}},
		{"allowed origin: the node's CORS headers replaced", http.MethodPost, http.Header{"Origin": {"https://a.org"}}, 0, true, http.Header{
			"Access-Control-Allow-Origin":      {"https://a.org"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Expose-Headers":    {"Link"},
			"Vary":                             {"Origin", "Accept-Encoding"},
			"Content-Type":                     {"text/plain"},
		}},
		{"other origin: passed on, the node's CORS headers removed", http.MethodGet, http.Header{"Origin": {"https://evil.org"}}, 0, true, http.Header{
			"Vary":         {"Origin", "Accept-Encoding"},
			"Content-Type": {"text/plain"},
		}},
		{"two origins: passed on without CORS headers", http.MethodGet, http.Header{"Origin": {"https://a.org", "https://a.org"}}, 0, true, http.Header{
			"Vary":         {"Origin", "Accept-Encoding"},
			"Content-Type": {"text/plain"},
		}},
		{"no origin: not a CORS request, left alone", http.MethodGet, nil, 0, true, http.Header{
			"Access-Control-Allow-Origin":   {"*"},
			"Access-Control-Expose-Headers": {"X-Internal"},
			"Vary":                          {"Origin", "Accept-Encoding"},
			"Content-Type":                  {"text/plain"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forwarded := false
			next := upstream(nodeCORS)
			w := httptest.NewRecorder()
			err := c.ServeHTTP(w, corsRequest(tc.method, tc.header), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				forwarded = true
				return next(w, r)
			}))
			if forwarded != tc.forwarded {
				t.Fatalf("forwarded %v, want %v", forwarded, tc.forwarded)
			}
			switch tc.status {
			case http.StatusForbidden:
				var he caddyhttp.HandlerError
				if !errors.As(err, &he) || he.StatusCode != tc.status {
					t.Fatalf("error %v, want status %d", err, tc.status)
				}
			case 0:
				if err != nil || w.Code != http.StatusOK || w.Body.String() != "node ok" {
					t.Fatalf("error %v, answer %d %q", err, w.Code, w.Body)
				}
			default:
				if err != nil || w.Code != tc.status || w.Body.Len() != 0 {
					t.Fatalf("error %v, answer %d %q, want %d", err, w.Code, w.Body, tc.status)
				}
			}
			if got := w.Header(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("headers\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

// TestCORSServeHTTPErrors: an error response (the node down, say) carries
// the CORS headers too, so the page's script can see what went wrong.
func TestCORSServeHTTPErrors(t *testing.T) {
	c := provisionedCORS(t, &CORS{Origins: []string{"https://a.org"}})
	w := httptest.NewRecorder()
	err := c.ServeHTTP(w, corsRequest(http.MethodGet, http.Header{"Origin": {"https://a.org"}}), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		return caddyhttp.Error(http.StatusBadGateway, errors.New("node down"))
	}))
	if err == nil || w.Header().Get("Access-Control-Allow-Origin") != "https://a.org" {
		t.Fatalf("error %v, headers %v", err, w.Header())
	}
}

// TestCORSAnyOrigin: with allow_any_origin every origin gets "*", but null
// does not.
func TestCORSAnyOrigin(t *testing.T) {
	c := provisionedCORS(t, &CORS{Origins: []string{"*"}, AllowAnyOrigin: true})
	for _, tc := range []struct {
		name, origin, want string
	}{
		{"any", "https://anyone.example", "*"},
		{"null", "null", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			if err := c.ServeHTTP(w, corsRequest(http.MethodGet, http.Header{"Origin": {tc.origin}}), upstream(nil)); err != nil {
				t.Fatal(err)
			}
			if got := w.Header().Get("Access-Control-Allow-Origin"); got != tc.want {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCORSFlush: a streamed answer that flushes before writing gets its
// headers fixed too, and the flush reaches the connection.
func TestCORSFlush(t *testing.T) {
	c := provisionedCORS(t, &CORS{Origins: []string{"https://a.org"}})
	w := httptest.NewRecorder()
	err := c.ServeHTTP(w, corsRequest(http.MethodGet, http.Header{"Origin": {"https://a.org"}}), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Add("Access-Control-Allow-Origin", "*")
		return http.NewResponseController(w).Flush()
	}))
	if err != nil || !w.Flushed || w.Header().Values("Access-Control-Allow-Origin")[0] != "https://a.org" || len(w.Header().Values("Access-Control-Allow-Origin")) != 1 {
		t.Fatalf("error %v, flushed %v, headers %v", err, w.Flushed, w.Header())
	}
}

// BenchmarkCORSSimpleRequest is the handler's cost for an allowed simple
// request whose upstream sets CORS headers of its own.
func BenchmarkCORSSimpleRequest(b *testing.B) {
	c := provisionedCORS(b, &CORS{Origins: []string{"https://app.example.org", "https://*.irma.example.com"}, Credentials: true})
	r := corsRequest(http.MethodPost, http.Header{"Origin": {"https://yivi.irma.example.com"}})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Add("Access-Control-Allow-Origin", "*")
		w.WriteHeader(http.StatusOK)
		return nil
	})
	w := &headerWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if err := c.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
}

// headerWriter is a ResponseWriter that keeps nothing but its header.
type headerWriter struct{ h http.Header }

func (w *headerWriter) Header() http.Header         { return w.h }
func (w *headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerWriter) WriteHeader(int)             {}
