package e2e

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// TestExampleMetricsListener proves that the shipped Caddyfile.example serves Prometheus
// metrics on a listener of their own (NUTSGATE_METRICS_BIND:NUTSGATE_METRICS_PORT), so that
// nothing needs to scrape the admin endpoint: /metrics answers 200 with the nutsgate_* and
// caddy_* families; every other path answers 404; path_guard runs first there too (an encoded
// unreserved character is refused with 400).
func TestExampleMetricsListener(t *testing.T) {
	t.Parallel()
	g := startExampleGateway(t)
	// One refused request, so that a nutsgate_* counter has a series.
	if r := g.internalRequest(t, exampleRequest{path: "/internal/vdr/v2/subject"}); r.statusOr() != http.StatusUnauthorized {
		t.Fatalf("GET /internal without a token: %s, want 401", r)
	}

	resp, err := httpClient.Get(g.metricsURL("/metrics"))
	if err != nil {
		t.Fatalf("GET /metrics on the metrics listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on the metrics listener: status %d, want 200\n%.300s", resp.StatusCode, body)
	}
	for _, want := range []string{"\nnutsgate_auth_decisions_total{", "\ncaddy_http_requests_total{", "\ncaddy_http_request_duration_seconds_bucket{"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics on the metrics listener: no line starting %q", strings.TrimPrefix(want, "\n"))
		}
	}

	for _, c := range []struct {
		path string
		want int
	}{
		{"/", 404},
		{"/metrics/", 404},
		{"/metrics/x", 404},
		{"/config/", 404},
		{"/nutsgate/deny", 404},
		{"/%6detrics", 400},
	} {
		resp, err := httpClient.Get(g.metricsURL(c.path))
		if err != nil {
			t.Errorf("GET %s on the metrics listener: %v", c.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s on the metrics listener: status %d, want %d", c.path, resp.StatusCode, c.want)
		}
	}
}

// TestExampleMonitoringAccess proves the internal site's monitoring routes of the shipped
// Caddyfile.example: from an address of NUTSGATE_MONITORING_NETS, /status, /status/diagnostics,
// /health and /metrics reach the node's internal interface without a token; from any other
// address they need a token_v2 token (401 without one, and the node sees nothing), and with one
// they reach the node, /status/diagnostics included; /internal/* needs a token from the
// monitoring network as from anywhere.
func TestExampleMonitoringAccess(t *testing.T) {
	t.Parallel()
	// Two monitoring networks, to prove the list is read from the environment and holds several.
	const monitor, monitor2, other = "127.0.0.1", "127.0.0.3", "127.0.0.2"
	g := startExampleGateway(t, "NUTSGATE_MONITORING_NETS=127.0.0.3/32 127.0.0.1/32")
	internal := testnode.ListenerInternal
	monitoring := []string{"/status", "/status/diagnostics", "/health", "/metrics"}

	for _, from := range []string{monitor, monitor2} {
		for _, path := range monitoring {
			before := len(g.nodeSaw(internal, path))
			r := g.internalRequest(t, exampleRequest{path: path, from: from})
			if r.statusOr() != http.StatusOK {
				t.Errorf("GET %s from the monitoring network (%s) without a token: %s, want 200 from the node", path, from, r)
			}
			if got := len(g.nodeSaw(internal, path)) - before; got != 1 {
				t.Errorf("GET %s from %s: the node's internal interface saw it %d times, want 1", path, from, got)
			}
		}
	}

	for _, path := range monitoring {
		before := len(g.nodeSaw(internal, path))
		r := g.internalRequest(t, exampleRequest{path: path, from: other})
		if r.statusOr() != http.StatusUnauthorized {
			t.Errorf("GET %s from %s (not a monitoring network) without a token: %s, want 401", path, other, r)
		}
		if got := len(g.nodeSaw(internal, path)) - before; got != 0 {
			t.Errorf("GET %s from %s without a token: the node saw it %d times, want never", path, other, got)
		}
		r = g.internalRequest(t, exampleRequest{path: path, from: other, header: http.Header{"Authorization": {g.internalBearer(t)}}})
		if r.statusOr() != http.StatusOK {
			t.Errorf("GET %s from %s with a token: %s, want 200 from the node", path, other, r)
		}
		if got := len(g.nodeSaw(internal, path)) - before; got != 1 {
			t.Errorf("GET %s from %s with a token: the node saw it %d times, want 1", path, other, got)
		}
	}

	// The node's own API needs a token from the monitoring network too; and paths that only
	// look like monitoring paths are not opened by the allow-list.
	for _, path := range []string{"/internal/vdr/v2/subject/" + uuid.NewString(), "/healthz", "/metrics/x", "/statusx"} {
		r := g.internalRequest(t, exampleRequest{path: path, from: monitor})
		want := http.StatusUnauthorized
		if !strings.HasPrefix(path, "/internal/") {
			want = http.StatusNotFound
		}
		if r.statusOr() != want {
			t.Errorf("GET %s from the monitoring network without a token: %s, want %d", path, r, want)
		}
		if n := len(g.nodeSaw(internal, path)); n != 0 {
			t.Errorf("GET %s from the monitoring network without a token: the node saw it %d times, want never", path, n)
		}
	}
	path := "/internal/vdr/v2/subject/" + uuid.NewString()
	if r := g.internalRequest(t, exampleRequest{path: path, from: monitor, header: http.Header{"Authorization": {g.internalBearer(t)}}}); r.statusOr() != http.StatusOK {
		t.Errorf("GET %s from the monitoring network with a token: %s, want 200", path, r)
	}
	if n := len(g.nodeSaw(internal, path)); n != 1 {
		t.Errorf("GET %s with a token: the node saw it %d times, want 1", path, n)
	}
}

// Per-client-IP limits of Caddyfile.example's public site, as documented in README.md.
const (
	exampleTokenBurst    = 50 // POST /oauth2/*/token: 300/1m, bursts of 50
	exampleRegisterBurst = 20 // POST /discovery/*: 60/1m, bursts of 20
)

// TestExamplePublicEdge proves the public site of the shipped Caddyfile.example:
//   - the OAuth2 endpoints the node has off by default, /oauth2/<subject>/authorize and
//     /oauth2/<subject>/callback, answer 404 at the edge and never reach the node, while the
//     subject's other OAuth2 endpoints do;
//   - POST /oauth2/<subject>/token and POST /discovery/<service> are limited per client IP: a
//     client gets at least its burst through, then 429 with Retry-After and the node sees no
//     more; another client IP still gets through, and GET /discovery is not limited;
//   - a W3C traceparent (and tracestate) header reaches the node unchanged.
func TestExamplePublicEdge(t *testing.T) {
	t.Parallel()
	g := startExampleGateway(t)
	public := testnode.ListenerPublic
	const subject = "did:web:nuts.example.org%3Aiam%3A5db756b2"

	t.Run("closed OAuth2 endpoints", func(t *testing.T) {
		for _, path := range []string{
			"/oauth2/" + subject + "/authorize?client_id=x&request_uri=y",
			"/oauth2/tenant/authorize",
			"/oauth2/tenant/callback?code=c&state=s",
			"/OAUTH2/tenant/Authorize",
		} {
			r := g.publicRequest(t, exampleRequest{path: path})
			if r.statusOr() != http.StatusNotFound {
				t.Errorf("GET %s: %s, want 404 at the edge", path, r)
			}
			if n := len(g.nodeSaw(public, path)); n != 0 {
				t.Errorf("GET %s: the node saw it %d times, want never", path, n)
			}
		}
		for _, path := range []string{"/oauth2/" + subject + "/presentation_definition?scope=x", "/oauth2/tenant/request.jwt/abc"} {
			if r := g.publicRequest(t, exampleRequest{path: path}); r.statusOr() != http.StatusOK || len(g.nodeSaw(public, path)) != 1 {
				t.Errorf("GET %s: %s, node saw it %d times; want 200 from the node", path, r, len(g.nodeSaw(public, path)))
			}
		}
	})

	t.Run("per-IP limits", func(t *testing.T) {
		form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		for _, c := range []struct {
			path  string
			burst int
			from  string
		}{
			{"/oauth2/" + subject + "/token", exampleTokenBurst, "127.0.0.4"},
			{"/discovery/urn:nuts.nl:usecase:eOverdracht2023", exampleRegisterBurst, "127.0.0.5"},
		} {
			post := exampleRequest{method: http.MethodPost, path: c.path, header: form, body: "grant_type=x", from: c.from}
			// Eight at a time, so that even a slow machine's requests outpace the refill.
			var (
				mu      sync.Mutex
				passed  int
				refused httpsResult
				sent    atomic.Int64
				wg      sync.WaitGroup
			)
			for range 8 {
				wg.Go(func() {
					for sent.Add(1) <= int64(4*c.burst) {
						r := g.publicRequest(t, post)
						mu.Lock()
						done := refused.status == http.StatusTooManyRequests
						switch r.statusOr() {
						case http.StatusTooManyRequests:
							refused, done = r, true
						case http.StatusOK:
							passed++
						default:
							t.Errorf("POST %s from %s: %s, want 200 or 429", c.path, c.from, r)
							done = true
						}
						mu.Unlock()
						if done {
							return
						}
					}
				})
			}
			wg.Wait()
			if refused.status != http.StatusTooManyRequests {
				t.Fatalf("POST %s from %s: %d requests passed, none refused; want a limit per IP", c.path, c.from, passed)
			}
			if passed < c.burst {
				t.Errorf("POST %s from %s: refused after %d requests, want at least the burst of %d", c.path, c.from, passed, c.burst)
			}
			if refused.header.Get("Retry-After") == "" {
				t.Errorf("POST %s: 429 without Retry-After", c.path)
			}
			if n := len(g.nodeSaw(public, c.path)); n != passed {
				t.Errorf("POST %s: the node saw %d requests, want the %d that passed", c.path, n, passed)
			}
			// Another client IP has a bucket of its own.
			other := post
			other.from = "127.0.0.6"
			if r := g.publicRequest(t, other); r.statusOr() != http.StatusOK {
				t.Errorf("POST %s from another IP: %s, want 200", c.path, r)
			}
		}
		// Searching a discovery service is not limited (only registering, POST, is).
		get := exampleRequest{path: "/discovery/urn:nuts.nl:usecase:eOverdracht2023?timestamp=0", from: "127.0.0.5"}
		for i := range exampleRegisterBurst + 5 {
			if r := g.publicRequest(t, get); r.statusOr() != http.StatusOK {
				t.Fatalf("GET %s #%d from a client over its POST limit: %s, want 200", get.path, i+1, r)
			}
		}
	})

	t.Run("traceparent", func(t *testing.T) {
		const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		const tracestate = "nuts=00f067aa0ba902b7"
		path := "/iam/" + uuid.NewString() + "/did.json"
		r := g.publicRequest(t, exampleRequest{path: path, header: http.Header{"Traceparent": {traceparent}, "Tracestate": {tracestate}}})
		if r.statusOr() != http.StatusOK {
			t.Fatalf("GET %s: %s, want 200", path, r)
		}
		seen := g.nodeSaw(public, path)
		if len(seen) != 1 {
			t.Fatalf("GET %s: the node saw it %d times, want 1", path, len(seen))
		}
		if got := seen[0].Header.Values("Traceparent"); len(got) != 1 || got[0] != traceparent {
			t.Errorf("the node got traceparent %q, want [%s]", got, traceparent)
		}
		if got := seen[0].Header.Values("Tracestate"); len(got) != 1 || got[0] != tracestate {
			t.Errorf("the node got tracestate %q, want [%s]", got, tracestate)
		}
	})
}
