package e2e

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// exhaustN2N spends c's whole /n2n budget (n2nRate requests, each 200 and forwarded) under
// prefix, then asserts the next request is refused with 429 and a Retry-After of whole seconds
// within the refill time of one token, and never reaches the node.
func (g *mtlsGateway) exhaustN2N(t *testing.T, c *leafCert, prefix string) {
	t.Helper()
	for i := range n2nRate {
		r := g.get(t, c, prefix+strconv.Itoa(i), nil)
		expectStatus(t, "request "+strconv.Itoa(i+1)+" of the budget", r, http.StatusOK)
	}
	g.expectLimited(t, c, prefix)
	if got := g.nodeRequestsUnder(prefix); got != n2nRate {
		t.Errorf("the node received %d requests under %s, want %d", got, prefix, n2nRate)
	}
}

// expectLimited asserts one more /n2n request of c under prefix gets 429 with a sane
// Retry-After and does not reach the node.
func (g *mtlsGateway) expectLimited(t *testing.T, c *leafCert, prefix string) {
	t.Helper()
	path := prefix + "over"
	r := g.get(t, c, path, nil)
	expectStatus(t, "request over the limit", r, http.StatusTooManyRequests)
	g.expectNodeSawNothing(t, path)
	if r.statusOr() != http.StatusTooManyRequests {
		return
	}
	// One token refills in 3600/n2nRate s; rounded up, Retry-After is at most that.
	ra := r.header.Values("Retry-After")
	if secs, err := strconv.Atoi(strings.Join(ra, ",")); err != nil || secs < 1 || secs > 3600/n2nRate {
		t.Errorf("Retry-After %q, want one whole number of seconds in [1, %d]", ra, 3600/n2nRate)
	}
}

// TestRateLimit proves per-client rate limits: on /n2n (5 an hour) the 6th request gets 429
// with Retry-After and only 5 reach the node, while another client is unaffected; on the gRPC
// port (20 an hour) the 21st call gets RESOURCE_EXHAUSTED and only 20 reach the node, while
// another client is unaffected.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, n2nRate, grpcRate)

	t.Run("n2n", func(t *testing.T) {
		t.Parallel()
		c, other := g.pki.client(t, "rl-n2n"), g.pki.client(t, "rl-n2n-other")
		g.exhaustN2N(t, c, n2nPath("rl")+"/")
		path := n2nPath("rl-other")
		expectStatus(t, "another client", g.get(t, other, path, nil), http.StatusOK)
		g.expectForwarded(t, path, other)
	})

	t.Run("grpc", func(t *testing.T) {
		t.Parallel()
		c, other := g.pki.client(t, "rl-grpc"), g.pki.client(t, "rl-grpc-other")
		cl := g.grpcAs(t, c)
		for i := range grpcRate {
			if _, err := cl.unary(t); err != nil {
				t.Fatalf("call %d of the budget: %v", i+1, err)
			}
		}
		_, err := cl.unary(t)
		expectCode(t, "call over the limit", err, codes.ResourceExhausted)
		g.expectNodeCallsWithCert(t, cl, grpcRate, c)

		ocl := g.grpcAs(t, other)
		header, err := ocl.unary(t)
		if err != nil {
			t.Fatalf("another client: %v", err)
		}
		expectSubject(t, header, other)
	})
}

// TestRateLimitSurvivesReload proves that a config reload through the admin API (`nutsgate
// reload`) keeps the rate-limit buckets: a client that spent its /n2n budget is still refused
// after the reload, while a new client gets through (the gateway serves the reloaded config).
// Reloads: the same Caddyfile forced (a real reload, not skipped as unchanged), and a Caddyfile
// that only gained a comment line at the top (what an operator's edit elsewhere looks like to
// the limiter blocks below it).
func TestRateLimitSurvivesReload(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		edit  func(cfg string) string
		force bool
	}{
		{"same Caddyfile, --force", func(cfg string) string { return cfg }, true},
		{"comment line added at the top", func(cfg string) string { return "# edited by the operator\n" + cfg }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startMTLSGateway(t, n2nRate, grpcRate)
			c := g.pki.client(t, "reload-limited")
			g.exhaustN2N(t, c, n2nPath("reload")+"/")

			cfg, err := os.ReadFile(g.cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			writeFileAtomic(t, g.cfgPath, []byte(tc.edit(string(cfg))))
			args := []string{"reload", "--config", g.cfgPath, "--adapter", "caddyfile", "--address", g.addr(g.Admin)}
			if tc.force {
				args = append(args, "--force")
			}
			if res := runBin(t, cliTimeout, args...); res.code != 0 {
				t.Fatalf("nutsgate reload: exit status %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
			}
			probe := g.pki.client(t, "reload-probe")
			awaitReload(t, g.process, func() error { return g.get(t, probe, "/reload-probe", nil).err })

			g.expectLimited(t, c, n2nPath("reload-after")+"/")
			path := n2nPath("reload-new")
			expectStatus(t, "a new client after the reload", g.get(t, g.pki.client(t, "reload-new"), path, nil), http.StatusOK)
		})
	}
}
