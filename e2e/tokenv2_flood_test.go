package e2e

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clientFrom is an HTTP client whose connections come from the loopback address ip, so that
// the gateway sees it as another client IP.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext},
		Timeout:   10 * time.Second,
	}
}

// sendVia makes one GET request with auth through c and returns the answer.
func (g *gateway) sendVia(c *http.Client, path, auth string) (response, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, g.base+path, nil)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}, err
}

// TestTokenV2FailureBudget proves through the running binary that a client IP whose forged
// tokens failed their signature check `failures` times is answered 429 with Retry-After,
// without reaching the node, for forged and new valid tokens alike; that a token verified
// before still passes from that IP; and that a valid client with a cached token on another
// loopback address gets 200 while the flood goes on.
func TestTokenV2FailureBudget(t *testing.T) {
	t.Parallel()
	alice := newKey(t, p521Key, "alice")
	stranger := newKey(t, p521Key, "alice") // not in the file: its signatures fail with alice's kid
	up := newUpstream(t)
	g := startGatewayEdited(t, writeAuthorizedKeys(t, alice), up, "audience "+testAudience, "audience "+testAudience+"\n\t\t\tfailures 3/1h")

	forged := func() string {
		return stranger.newToken().with(func(h, _ map[string]any) { h["kid"] = alice.fingerprint() }).bearer(t)
	}
	flooder, valid := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	cached := alice.newToken().bearer(t)
	if r, err := g.sendVia(valid, probePath(t), cached); err != nil || r.status != http.StatusOK {
		t.Fatalf("valid client, first request: %+v %v", r, err)
	}

	// three failed checks: the uniform 401
	firstFailure := time.Now()
	for i := 0; i < 3; i++ {
		path := probePath(t)
		r, err := g.sendVia(flooder, path, forged())
		if err != nil {
			t.Fatal(err)
		}
		if why := refusal(r); why != "" {
			t.Fatalf("forgery %d: %s", i+1, why)
		}
		up.assertSawNothing(t, path)
	}
	overBudget := func(what, auth string) {
		t.Helper()
		path := probePath(t)
		r, err := g.sendVia(flooder, path, auth)
		if err != nil {
			t.Fatal(err)
		}
		// 1h/3: the next check is 1200 s after the first failure (the failed checks themselves
		// take time: on a slow machine the answer can be a second or two later)
		least := 1200 - int(math.Ceil(time.Since(firstFailure).Seconds()))
		retry, err := strconv.Atoi(r.header.Get("Retry-After"))
		if r.status != http.StatusTooManyRequests || r.body != "Too Many Requests" || err != nil || retry < least || retry > 1200 {
			t.Errorf("%s over the budget: status %d, body %q, Retry-After %q; want 429, Too Many Requests, [%d, 1200]", what, r.status, r.body, r.header.Get("Retry-After"), least)
		}
		up.assertSawNothing(t, path)
	}
	overBudget("a new forgery", forged())
	overBudget("a new valid token", alice.newToken().bearer(t))

	// a token verified before passes even from the client over its budget
	if r, err := g.sendVia(flooder, probePath(t), cached); err != nil || r.status != http.StatusOK {
		t.Fatalf("cached token from the client over its budget: %+v %v, want 200", r, err)
	}

	// the flood goes on while the valid client works
	var stop atomic.Bool
	var wg sync.WaitGroup
	var floodErr atomic.Value
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				path := "/internal/flood"
				r, err := g.sendVia(flooder, path, forged())
				if err == nil && r.status != http.StatusTooManyRequests {
					floodErr.Store("flood request answered " + strconv.Itoa(r.status))
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		path := probePath(t)
		r, err := g.sendVia(valid, path, cached)
		if err != nil || !answeredByNode(r, path) {
			t.Errorf("valid client during the flood, request %d: %+v %v, want 200", i+1, r, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := floodErr.Load(); v != nil {
		t.Error(v)
	}
	up.assertSawNothing(t, "/internal/flood")
	// the other address has its own budget
	if r, err := g.sendVia(valid, probePath(t), forged()); err != nil || refusal(r) != "" {
		t.Fatalf("a forgery from the valid client's address: %+v %v, want the uniform 401", r, err)
	}
}
