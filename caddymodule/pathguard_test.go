package caddymodule

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// pathGuardTargets are raw request targets and whether path_guard passes them.
var pathGuardTargets = []struct {
	target string
	pass   bool
}{
	{"/n2n/x", true},
	{"/public/x", true},
	{"/n2n/", true},
	{"/n2n/x?a=%2f..//", true}, // the query is not checked
	{"/iam/did:web:example.com%3A8443/x", true},
	{"/iam/did:web:example.com%253A8443/x", true},
	{"/iam/a%40b%20c", true},
	{"/iam/x%2B%2b%3a%C3%A9%7F", true}, // reserved and non-ASCII escapes pass
	{"/N2N/x", true},                   // routing decides
	{"/n2n;a=b/x", true},               // routing decides: /n2n/* does not match it
	{"/n2n/x;a=b", true},               // a path parameter on a named segment
	{"/n2n/...", true},                 // not a dot segment
	{"http://localhost:9080/n2n/x", true},

	{"/n2n/%2e%2e/internal", false},
	{"/n2n/%2E%2E/internal", false},
	{"/n2n/..%2finternal", false},
	{"/public/%2e%2e/internal", false},
	{"/internal%2F..", false},
	{"/n2n//x", false},
	{"//internal", false},
	{"/n2n/./x", false},
	{"/n2n/x/.", false},
	{"/n2n/../internal", false},
	{"/n2n\\x", false},
	{"/n2n/%5c", false},
	{"/n2n/%5C..%5Cinternal", false},
	{"/n2n/%00", false},
	{"/n2n/..;/internal", false},
	{"/n2n/..%3B/internal", false},
	{"/n2n;x/..", false},
	{"/n2n/;x/y", false},
	{"/n2n/%252e%252e/internal", false},
	{"/n2n/%25%32%66internal", false},
	{"/n2n/%c0%ae%c0%ae/internal", false},
	{"/%69nternal/x", false}, // routed as /internal/x, read by the node as %69nternal
	{"/%49nternal/x", false},
	{"/n2n/%61", false},
	{"/iam/%41", false},
	{"/iam/x%2dy%5F%7e", false},
	{"/%2569nternal/x", false}, // %69 once decoded
	{"*", false},
	{"localhost:9080", false},
	{"http://localhost:9080/n2n/%2e%2e/internal", false},
}

func guardRequest(target string, header http.Header) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RequestURI = target // as sent: httptest would parse and could refuse it
	for k, v := range header {
		r.Header[k] = v
	}
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "192.0.2.7"})
	return r.WithContext(ctx)
}

func TestPathGuardServeHTTP(t *testing.T) {
	pg := provisionedGuard(t)
	for _, tc := range pathGuardTargets {
		next := new(nextRecorder)
		err := pg.ServeHTTP(httptest.NewRecorder(), guardRequest(tc.target, nil), next)
		if tc.pass {
			if err != nil || !next.called() {
				t.Errorf("%q: error %v, next called %v; want it passed on", tc.target, err, next.called())
			}
			continue
		}
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) || he.StatusCode != http.StatusBadRequest || next.called() {
			t.Errorf("%q: error %v, next called %v; want 400", tc.target, err, next.called())
		}
	}
}

func TestPathGuardWithoutRequestURI(t *testing.T) {
	pg := provisionedGuard(t)
	r := guardRequest("", nil)
	r.URL = &url.URL{Path: "/n2n/../internal"}
	next := new(nextRecorder)
	if err := pg.ServeHTTP(httptest.NewRecorder(), r, next); err == nil || next.called() {
		t.Fatalf("error %v, next called %v", err, next.called())
	}
	r.URL = &url.URL{Path: "/iam/did:web:example.com:8443", RawPath: "/iam/did:web:example.com%3A8443"}
	if err := pg.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || !next.called() {
		t.Fatalf("error %v, next called %v", err, next.called())
	}
}

func TestPathGuardGRPC(t *testing.T) {
	pg := provisionedGuard(t)
	w := httptest.NewRecorder()
	next := new(nextRecorder)
	r := guardRequest("/n2n/%2e%2e/x", http.Header{"Content-Type": {"application/grpc+proto"}})
	if err := pg.ServeHTTP(w, r, next); err != nil || next.called() {
		t.Fatalf("error %v, next called %v", err, next.called())
	}
	if w.Code != http.StatusOK || w.Header().Get("Grpc-Status") != "3" || w.Header().Get("Grpc-Message") == "" {
		t.Fatalf("status %d, header %v", w.Code, w.Header())
	}
}

func TestPathGuardCaddyfile(t *testing.T) {
	out, err := adaptCaddyfile(":80 {\n\tpath_guard\n}")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `{"handler":"path_guard"}`) {
		t.Errorf("adapted config lacks path_guard:\n%s", out)
	}
	for _, tc := range []struct{ body, err string }{
		{":80 {\n path_guard /n2n/*\n}", "takes no arguments"},
		{":80 {\n @m path /x\n path_guard @m\n}", "takes no arguments"},
		{":80 {\n path_guard on\n}", "takes no arguments"},
		{":80 {\n path_guard {\n strict\n }\n}", `unrecognized subdirective "strict": path_guard takes no options`},
	} {
		_, err := adaptCaddyfile(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: error %v, want one naming the file and %q", tc.body, err, tc.err)
		}
	}
}

// TestPathGuardOrder: written last in a site, path_guard still runs first,
// before the directives that set variables or read the body, and before
// every handle, handle_path and route block.
func TestPathGuardOrder(t *testing.T) {
	out, err := adaptCaddyfile(`{
	nutsgate
}
example.com {
	tracing
	map {path} {backend} {
		default x
	}
	vars foo bar
	root * /srv
	fs myfs
	log_skip /health
	header X-A b
	request_body {
		max_size 1MB
	}
	redir /old /new
	method /m GET
	rewrite /r /s
	uri strip_prefix /api
	try_files {path} /index.html
	basic_auth /admin/* {
		bob $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
	forward_auth /fa/* 127.0.0.1:9 {
		uri /check
	}
	request_header X-B c
	encode gzip
	intercept
	templates
	mtls_ident
	client_rate_limit {
		rate 5/1s
	}
	handle /n2n/* {
		reverse_proxy 127.0.0.1:8080
	}
	handle_path /public/* {
		reverse_proxy 127.0.0.1:8080
	}
	route /r/* {
		respond "r"
	}
	handle {
		abort
	}
	error /e 500
	respond /x 200
	metrics /metrics
	reverse_proxy /y 127.0.0.1:8080
	file_server
	path_guard
}`)
	if err != nil {
		t.Fatal(err)
	}
	order := handlerOrder(siteRoutes(t, out))
	if len(order) < 20 || order[0] != "path_guard" || strings.Count(strings.Join(order, " "), "path_guard") != 1 {
		t.Fatalf("path_guard does not run first: %v\n%s", order, out)
	}

	// Inside a block it guards that block, again before the rest of it.
	out, err = adaptCaddyfile(`example.com {
	handle /n2n/* {
		request_body {
			max_size 1MB
		}
		vars a b
		reverse_proxy 127.0.0.1:8080
		path_guard
	}
	handle {
		respond 404
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	if order := handlerOrder(siteRoutes(t, out)); len(order) < 3 || order[0] != "subroute" || order[1] != "path_guard" {
		t.Fatalf("path_guard does not run first in its block: %v\n%s", order, out)
	}
}

// rawRequest sends a request line as written, which Go's client would
// clean, and reads the response.
func rawRequest(t *testing.T, method, target string, header string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "localhost:9080", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: localhost:9080\r\nConnection: close\r\n%s\r\n", method, target, header); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// TestPathGuardThroughCaddy sends raw request lines to a real Caddy whose
// routes would otherwise forward ambiguous paths to the node.
func TestPathGuardThroughCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	node := new(recorder)
	upstream := httptest.NewServer(node)
	defer upstream.Close()

	startCaddy(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /n2n/* {
			reverse_proxy %s
		}
		handle /iam/* {
			reverse_proxy %[1]s
		}
		handle_path /public/* {
			reverse_proxy %[1]s
		}
		handle {
			respond 404
		}
		path_guard
	}`, upstream.Listener.Addr()))

	for _, tc := range pathGuardTargets {
		resp := rawRequest(t, http.MethodGet, tc.target, "")
		seen := targets(node.take())
		if tc.pass {
			if resp.StatusCode == http.StatusBadRequest {
				t.Errorf("%q: 400, want it passed", tc.target)
			}
			continue
		}
		if resp.StatusCode != http.StatusBadRequest || len(seen) != 0 {
			t.Errorf("%q: status %d, node saw %q; want 400 and nothing forwarded", tc.target, resp.StatusCode, seen)
		}
	}

	// What reaches the node is the path as sent.
	for _, target := range []string{"/n2n/x", "/iam/did:web:example.com%3A8443/x", "/iam/%2B%20%3a", "/n2n/x;a=b"} {
		resp := rawRequest(t, http.MethodGet, target, "")
		if seen := targets(node.take()); resp.StatusCode != http.StatusOK || len(seen) != 1 || seen[0] != target {
			t.Errorf("%q: status %d, node saw %q", target, resp.StatusCode, seen)
		}
	}
	// Routing decides what path_guard passes: no route takes /n2n;a=b/x.
	if resp := rawRequest(t, http.MethodGet, "/n2n;a=b/x", ""); resp.StatusCode != http.StatusNotFound || len(node.take()) != 0 {
		t.Errorf("/n2n;a=b/x: status %d", resp.StatusCode)
	}

	// Targets Go's server refuses before Caddy sees them are refused too.
	for _, target := range []string{"/n2n/%zz", "/n2n/\x00", "/n2n/%"} {
		if resp := rawRequest(t, http.MethodGet, target, ""); resp.StatusCode != http.StatusBadRequest || len(node.take()) != 0 {
			t.Errorf("%q: status %d", target, resp.StatusCode)
		}
	}
	// OPTIONS * is answered by Go's server, before any handler, and goes nowhere.
	if resp := rawRequest(t, http.MethodOptions, "*", ""); resp.StatusCode != http.StatusOK || len(node.take()) != 0 {
		t.Errorf("OPTIONS *: status %d", resp.StatusCode)
	}
	// CONNECT in authority form: refused.
	if resp := rawRequest(t, http.MethodConnect, "localhost:9080", ""); resp.StatusCode != http.StatusBadRequest || len(node.take()) != 0 {
		t.Errorf("CONNECT: status %d", resp.StatusCode)
	}
	// gRPC is refused the gRPC way.
	resp := rawRequest(t, http.MethodPost, "/n2n/%2e%2e/internal", "Content-Type: application/grpc\r\nContent-Length: 0\r\n")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Grpc-Status") != "3" || len(node.take()) != 0 {
		t.Errorf("gRPC: status %d, header %v", resp.StatusCode, resp.Header)
	}
}

// BenchmarkPathGuard measures path_guard on a request it passes on.
func BenchmarkPathGuard(b *testing.B) {
	pg := provisionedGuard(b)
	r := guardRequest("/iam/did:web:example.com%3A8443/did.json", nil)
	w := httptest.NewRecorder()
	next := new(nextRecorder)
	b.ReportAllocs()
	for b.Loop() {
		_ = pg.ServeHTTP(w, r, next)
	}
}

// BenchmarkPathGuardRefused measures path_guard on a request it refuses.
func BenchmarkPathGuardRefused(b *testing.B) {
	pg := provisionedGuard(b)
	pg.logger = nil // measure the check, not the log
	r := guardRequest("/n2n/%2e%2e/internal", nil)
	w := httptest.NewRecorder()
	next := new(nextRecorder)
	b.ReportAllocs()
	for b.Loop() {
		_ = pg.ServeHTTP(w, r, next)
	}
}

// TestPathGuardDropsTrailers: the request passed on carries no trailer map,
// declared or not, and no Trailer header; filling the map the server shares
// with the original request (as Go's servers do once the body is read) does
// not reach it.
func TestPathGuardDropsTrailers(t *testing.T) {
	pg := provisionedGuard(t)
	for _, tc := range []struct {
		name    string
		trailer http.Header
	}{
		{"declared", http.Header{"X-Evil": nil}},
		{"undeclared", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := guardRequest("/n2n/x", http.Header{"Trailer": {"X-Evil"}})
			r.Method = http.MethodPost
			r.Body = io.NopCloser(strings.NewReader("body"))
			r.Trailer = tc.trailer
			next := new(nextRecorder)
			if err := pg.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || next.got == nil {
				t.Fatalf("error %v, passed on %v", err, next.got != nil)
			}
			if tc.trailer != nil {
				tc.trailer.Set("X-Evil", "1") // the server reads the trailer section
			} else {
				r.Trailer = http.Header{"X-Evil": {"1"}} // Go's HTTP/1 server sets the field
			}
			if next.got.Trailer != nil {
				t.Errorf("the request passed on has trailers %v", next.got.Trailer)
			}
			if v, ok := next.got.Header["Trailer"]; ok {
				t.Errorf("the request passed on declares trailers %q", v)
			}
		})
	}
}

// TestPathGuardStripsCertHeader: every client copy of X-SSL-CERT (any case,
// '_' for '-') and of every header an mtls_ident of the gateway forwards
// is removed; other headers stay.
func TestPathGuardStripsCertHeader(t *testing.T) {
	provisioned(t, &MTLSIdent{ForwardHeader: "X-Client-Cert-Test"})
	provisioned(t, &MTLSIdent{ForwardHeader: "off"})
	pg := provisionedGuard(t)
	r := guardRequest("/public/x", nil)
	r.Header = http.Header{
		"X-Ssl-Cert":         {"a", "b"},
		"x_ssl_cert":         {"c"},
		"X-SSL-CERT":         {"d"},
		"x-ssl_CERT":         {"e"},
		"X-Client-Cert-Test": {"f"},
		"x_client_cert_test": {"g"},
		"Off":                {"kept"},
		"X-Ssl-Certificate":  {"kept"},
		"Accept":             {"kept"},
	}
	next := new(nextRecorder)
	if err := pg.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || next.got == nil {
		t.Fatalf("error %v, passed on %v", err, next.got != nil)
	}
	want := http.Header{"Off": {"kept"}, "X-Ssl-Certificate": {"kept"}, "Accept": {"kept"}}
	if got := next.got.Header; len(got) != len(want) || got.Get("Off") != "kept" || got.Get("X-Ssl-Certificate") != "kept" || got.Get("Accept") != "kept" {
		t.Errorf("headers passed on: %v, want %v", got, want)
	}
}

// TestPathGuardEarlyData: a request whose TLS handshake is not complete
// (TLS 1.3 early data) is refused with 425, gRPC with UNAVAILABLE, and never
// passed on; one after the handshake passes.
func TestPathGuardEarlyData(t *testing.T) {
	pg := provisionedGuard(t)
	early := guardRequest("/internal/x", nil)
	early.Method = http.MethodPost
	early.TLS = &tls.ConnectionState{HandshakeComplete: false}
	next := new(nextRecorder)
	var he caddyhttp.HandlerError
	if err := pg.ServeHTTP(httptest.NewRecorder(), early, next); !errors.As(err, &he) || he.StatusCode != http.StatusTooEarly || next.called() {
		t.Fatalf("early data: error %v, next called %v; want 425", err, next.called())
	}

	w := httptest.NewRecorder()
	early = guardRequest("/grpc.testing.TestService/UnaryCall", http.Header{"Content-Type": {"application/grpc"}})
	early.TLS = &tls.ConnectionState{HandshakeComplete: false}
	if err := pg.ServeHTTP(w, early, next); err != nil || next.called() {
		t.Fatalf("gRPC early data: error %v, next called %v", err, next.called())
	}
	if w.Code != http.StatusOK || w.Header().Get("Grpc-Status") != "14" {
		t.Fatalf("gRPC early data: status %d, header %v; want grpc-status 14", w.Code, w.Header())
	}

	done := guardRequest("/internal/x", nil)
	done.TLS = &tls.ConnectionState{HandshakeComplete: true}
	if err := pg.ServeHTTP(httptest.NewRecorder(), done, next); err != nil || !next.called() {
		t.Fatalf("after the handshake: error %v, next called %v", err, next.called())
	}
}

// TestPathGuardTrailersThroughCaddy sends HTTP/1.1 chunked requests with
// trailers, declared and not, through a real Caddy: the upstream gets the
// body and no trailer.
func TestPathGuardTrailersThroughCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	node := new(recorder)
	upstream := httptest.NewServer(node)
	defer upstream.Close()

	startCaddy(t, fmt.Sprintf(`
	http://localhost:9080 {
		path_guard
		reverse_proxy %s
	}`, upstream.Listener.Addr()))

	for _, declare := range []string{"Trailer: X-Evil\r\n", ""} {
		resp := rawRequest(t, http.MethodPost, "/n2n/x", declare+"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX-Evil: 1\r\n")
		seen := trailers(node.take())
		if resp.StatusCode != http.StatusOK || len(seen) != 1 || len(seen[0]) != 0 {
			t.Errorf("%q: status %d, upstream saw trailers %v; want 200 and none", declare, resp.StatusCode, seen)
		}
	}
}

// BenchmarkPathGuardBody measures path_guard on a request with a body and
// a certificate header to strip, which it passes on as a copy without
// trailers.
func BenchmarkPathGuardBody(b *testing.B) {
	pg := provisionedGuard(b)
	r := guardRequest("/n2n/transactions", http.Header{"Content-Type": {"application/json"}, "Accept": {"*/*"}, "User-Agent": {"bench"}})
	r.Method = http.MethodPost
	r.Body = io.NopCloser(strings.NewReader("{}"))
	w := httptest.NewRecorder()
	next := new(nextRecorder)
	b.ReportAllocs()
	for b.Loop() {
		r.Header["X-Ssl-Cert"] = []string{"forged"}
		_ = pg.ServeHTTP(w, r, next)
	}
}
