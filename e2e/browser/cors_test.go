//go:build linux

package browser

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nutsgate/nutsgate/internal/testnode"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
)

// corsCaddyfile is the gateway of TestCORSInChromium: plain HTTP on
// 127.0.0.1, path_guard, /public/* behind cors and proxied to the node's
// public listener, everything else 404, and a JSON access log on stderr.
// Placeholders: site port, allowed origin, node's public host:port.
const corsCaddyfile = `{
	admin off
	persist_config off
	default_bind 127.0.0.1
	auto_https off
}

http://127.0.0.1:%d {
	path_guard
	log {
		output stderr
		format json
	}
	handle /public/* {
		cors {
			origins %s
			headers Content-Type X-Custom
		}
		reverse_proxy %s
	}
	handle {
		respond 404
	}
}
`

// pageTimeout bounds how long one page may take to write its outcome.
const pageTimeout = 20 * time.Second

// TestCORSInChromium proves the cors handler against a real browser's CORS
// engine. Two pages on two 127.0.0.1 origins each make a fetch to the
// gateway that needs a preflight (PUT, JSON body, header X-Custom). For the
// origin on the list, Chromium's preflight is answered by the gateway, the
// PUT reaches the node, and the script reads the node's answer. For the
// other origin, the gateway refuses the preflight, Chromium blocks the fetch
// as a CORS failure (TypeError in the script) and never sends the PUT. The
// node sees only the allowed PUT: no preflight is ever forwarded.
func TestCORSInChromium(t *testing.T) {
	start := time.Now()
	// Fails, clearly, before anything starts when Chromium is missing.
	if _, err := chromiumPath(); err != nil {
		t.Fatal(err)
	}

	node, err := testnode.Start(testnode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)

	gwPort := e2ebin.FreePort(t)
	gwBase := fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	allowedURL := gwBase + "/public/x?from=allowed"
	refusedURL := gwBase + "/public/x?from=refused"
	allowed := startPage(t, "allowed", allowedURL)
	refused := startPage(t, "refused", refusedURL)
	if allowed.origin == refused.origin {
		t.Fatalf("both pages on %s", allowed.origin)
	}
	cfg := fmt.Sprintf(corsCaddyfile, gwPort, allowed.origin, strings.TrimPrefix(node.PublicURL(), "http://"))
	gw := startGateway(t, gwBase, cfg)

	tab, nl := startBrowser(t)
	t.Logf("gateway, node, pages and Chromium up after %s", time.Since(start).Round(time.Millisecond))

	// The page on the allowed origin reads the node's echo of its PUT.
	got, err := load(tab, allowed, pageTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("allowed page (%s): %s", allowed.origin, got)
	if !got.OK || got.Status != http.StatusOK {
		t.Errorf("allowed page: fetch gave %s, want status 200 with the node's answer", got)
	} else {
		var echo struct{ Listener, Method, Path string }
		if err := json.Unmarshal([]byte(got.Body), &echo); err != nil {
			t.Errorf("allowed page read %q, not the node's JSON echo: %v", got.Body, err)
		} else if echo.Listener != testnode.ListenerPublic || echo.Method != http.MethodPut || echo.Path != "/public/x" {
			t.Errorf("allowed page read echo %+v, want the node's public listener echoing PUT /public/x", echo)
		}
	}

	// The page on the other origin is blocked: the script sees only a
	// TypeError, and Chromium reports a CORS failure.
	got, err = load(tab, refused, pageTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("refused page (%s): %s", refused.origin, got)
	if got.OK || got.Name != "TypeError" {
		t.Errorf("refused page: fetch gave %s, want a TypeError (blocked by CORS)", got)
	}
	var corsFailure *failure
	waitFor(5*time.Second, func() bool {
		for _, f := range nl.failuresFor(refusedURL) {
			if f.cors != nil {
				corsFailure = &f
				return true
			}
		}
		return false
	})
	if corsFailure == nil {
		t.Errorf("Chromium reported no CORS failure for %s; failures: %+v", refusedURL, nl.failuresFor(refusedURL))
	} else {
		t.Logf("Chromium: %s %s failed: %s, CORS error %s %s", corsFailure.method, corsFailure.url,
			corsFailure.errorText, corsFailure.cors.CorsError, corsFailure.cors.FailedParameter)
	}

	// The gateway answered both preflights itself (its access log), ...
	want := []struct {
		method, uri string
		status      int
	}{
		{http.MethodOptions, "/public/x?from=allowed", http.StatusNoContent},
		{http.MethodPut, "/public/x?from=allowed", http.StatusOK},
		{http.MethodOptions, "/public/x?from=refused", http.StatusForbidden},
	}
	// Caddy writes an access log line just after the response, so allow
	// it a moment to appear.
	waitFor(5*time.Second, func() bool {
		for _, w := range want {
			if len(gw.handled(w.method, w.uri)) == 0 {
				return false
			}
		}
		return true
	})
	for _, w := range want {
		if got := gw.handled(w.method, w.uri); !slices.Equal(got, []int{w.status}) {
			t.Errorf("gateway access log: %s %s answered %v, want exactly [%d]", w.method, w.uri, got, w.status)
		}
	}
	if got := gw.handled(http.MethodPut, "/public/x?from=refused"); len(got) != 0 {
		t.Errorf("gateway access log: Chromium sent the refused page's PUT (answered %v); the preflight should have stopped it", got)
	}

	// ... and the node saw exactly the allowed PUT: no preflight, nothing of
	// the refused page. A forwarded request reaches the node before the
	// browser gets its answer, so there is nothing to wait for.
	reqs := node.Requests()
	var puts int
	for _, r := range reqs {
		switch {
		case r.Method == http.MethodOptions:
			t.Errorf("node saw a preflight, which the gateway must answer itself: OPTIONS %s", r.RequestURI)
		case strings.Contains(r.RawQuery, "refused"):
			t.Errorf("node saw a request of the refused page: %s %s", r.Method, r.RequestURI)
		case r.Method == http.MethodPut && r.Path == "/public/x" && r.RawQuery == "from=allowed":
			puts++
			if o := r.Header.Get("Origin"); o != allowed.origin {
				t.Errorf("node saw the PUT with Origin %q, want %q", o, allowed.origin)
			}
			if v := r.Header.Get("X-Custom"); v != "1" {
				t.Errorf("node saw the PUT with X-Custom %q, want \"1\"", v)
			}
			if string(r.Body) != `{"from":"allowed"}` {
				t.Errorf("node saw the PUT with body %q, want {\"from\":\"allowed\"}", r.Body)
			}
		default:
			t.Errorf("node saw an unexpected request: %s %s", r.Method, r.RequestURI)
		}
	}
	if puts != 1 {
		t.Errorf("node saw the allowed page's PUT %d times, want once", puts)
	}
	if t.Failed() {
		for _, r := range reqs {
			t.Logf("node request: %s %s Origin=%q", r.Method, r.RequestURI, r.Header.Get("Origin"))
		}
	}
	t.Logf("checks done after %s", time.Since(start).Round(time.Millisecond))
}
