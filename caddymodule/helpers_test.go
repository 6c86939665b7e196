package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Scaffolding shared by the package's tests: Caddyfile adapters, the next
// handler and the stand-in node that record what they get, a real Caddy
// started with caddytest, and provisioned handlers.

// adaptCaddyfile adapts a Caddyfile to JSON; errors name the file
// "Caddyfile".
func adaptCaddyfile(body string) ([]byte, error) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// adapt is adaptCaddyfile with the config as a string.
func adapt(body string) (string, error) {
	out, err := adaptCaddyfile(body)
	return string(out), err
}

// route is a route of an adapted config, as far as handler order goes.
type route struct {
	Handle []struct {
		Handler   string                     `json:"handler"`
		Routes    []route                    `json:"routes"`
		Providers map[string]json.RawMessage `json:"providers"`
	} `json:"handle"`
}

// handlers lists the handlers of r in order, descending into subroutes; an
// authentication handler is named with its provider.
func (r route) handlers() []string {
	var out []string
	for _, h := range r.Handle {
		switch {
		case h.Handler == "subroute":
			for _, sub := range h.Routes {
				out = append(out, sub.handlers()...)
			}
		case len(h.Providers) == 1:
			for p := range h.Providers {
				out = append(out, h.Handler+"/"+p)
			}
		default:
			out = append(out, h.Handler)
		}
	}
	return out
}

// handlerOrder lists the handlers of routes, depth first, in the order
// they run: subroutes (handle, handle_path, route) are opened.
func handlerOrder(routes []any) []string {
	var names []string
	for _, rt := range routes {
		handle, _ := rt.(map[string]any)["handle"].([]any)
		for _, h := range handle {
			h := h.(map[string]any)
			name, _ := h["handler"].(string)
			names = append(names, name)
			if sub, ok := h["routes"].([]any); ok {
				names = append(names, handlerOrder(sub)...)
			}
		}
	}
	return names
}

// siteRoutes returns the routes of the only site of the only server.
func siteRoutes(t *testing.T, out []byte) []any {
	t.Helper()
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []map[string]any `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, srv := range cfg.Apps.HTTP.Servers {
		if len(srv.Routes) != 1 {
			t.Fatalf("want one site route, got %d:\n%s", len(srv.Routes), out)
		}
		handle := srv.Routes[0]["handle"].([]any)
		return handle[0].(map[string]any)["routes"].([]any)
	}
	t.Fatalf("no server:\n%s", out)
	return nil
}

// nextRecorder is the next handler; it records the request it got.
type nextRecorder struct{ got *http.Request }

func (n *nextRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.got = r
	return nil
}

// called reports whether a request was passed on.
func (n *nextRecorder) called() bool { return n.got != nil }

// recorder is a stand-in node that records what reaches it: each request,
// as received (RequestURI is the target as sent), with the trailers read
// after its body.
type recorder struct {
	mu   sync.Mutex
	seen []*http.Request
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	rec.mu.Lock()
	rec.seen = append(rec.seen, r.Clone(r.Context()))
	rec.mu.Unlock()
	_, _ = io.WriteString(w, "node ok")
}

// take returns and forgets what reached the node.
func (rec *recorder) take() []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := rec.seen
	rec.seen = nil
	return seen
}

// startCaddy starts a real Caddy on http://localhost:9080 (admin on
// localhost:2999) with the Caddyfile sites after the package's global
// options.
func startCaddy(t *testing.T, sites string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(`
	{
		admin localhost:2999
		http_port 9080
		https_port 9443
		grace_period 1ns
		skip_install_trust
	}
	`+sites, "caddyfile")
	return tester
}

// provisioned provisions m; watching its deny file ends with the test.
func provisioned(t *testing.T, m *MTLSIdent) *MTLSIdent {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel) // ends watching the deny file
	if err := m.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// provisionedCORS provisions c.
func provisionedCORS(t testing.TB, c *CORS) *CORS {
	t.Helper()
	if err := c.Provision(caddy.Context{Context: context.Background()}); err != nil {
		t.Fatal(err)
	}
	return c
}

// provisionedGuard is a provisioned path_guard.
func provisionedGuard(t testing.TB) *PathGuard {
	t.Helper()
	pg := new(PathGuard)
	if err := pg.Provision(caddy.Context{Context: context.Background()}); err != nil {
		t.Fatal(err)
	}
	return pg
}

// targets are the request targets of reqs, as sent.
func targets(reqs []*http.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.RequestURI)
	}
	return out
}

// trailers are the trailers of reqs.
func trailers(reqs []*http.Request) []http.Header {
	var out []http.Header
	for _, r := range reqs {
		out = append(out, r.Trailer)
	}
	return out
}

// statusOf is the HTTP status of a handler's error, 0 if it is not a caddyhttp.HandlerError.
func statusOf(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}
