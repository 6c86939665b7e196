package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// Host names of Caddyfile.example, left at their defaults in the example gateway; the test
// certificate of newShippedEnv holds them all.
const (
	examplePublicHost   = "nuts.example.org"
	exampleInternalHost = "nuts-internal.example.org"
)

// exampleGateway is the shipped Caddyfile.example itself, run by the binary in front of an
// in-process test node, with its paths and addresses set from the environment as an operator
// sets them. Only what the environment cannot move is rewritten, each rewrite counted so that
// a change of the shipped file fails the test rather than going unnoticed: the public and n2n
// port 443 and the gRPC port 5555 become free loopback ports, and the Nuts denylist (fetched
// from the internet) is off.
type exampleGateway struct {
	*process
	env                                      shippedEnv
	node                                     *testnode.Node
	public, grpc, internal, metrics, adminPt int
}

// exampleRewrites are the edits made to Caddyfile.example before it runs: old text, the number
// of times it must occur, and the new text (fmt verbs filled with the gateway's ports).
var exampleRewrites = []struct {
	old  string
	n    int
	new  func(g *exampleGateway) string
	what string
}{
	{"}:443 {", 2, func(g *exampleGateway) string { return "}:" + strconv.Itoa(g.public) + " {" }, "the public and n2n sites' port"},
	{":5555 {", 2, func(g *exampleGateway) string { return ":" + strconv.Itoa(g.grpc) + " {" }, "the gRPC site's port and its servers block"},
	{"url https://cdn.jsdelivr.net/gh/nuts-foundation/denylist@main/denylist/denylist.jws", 1, func(*exampleGateway) string { return "url off" }, "the Nuts denylist"},
}

// startExampleGateway runs Caddyfile.example with extra environment entries (NAME=value, after
// the harness's own, so they win) and returns once the admin endpoint accepts connections and
// the internal site completes a TLS handshake.
func startExampleGateway(t *testing.T, extra ...string) *exampleGateway {
	t.Helper()
	node, err := testnode.Start(testnode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	g := &exampleGateway{
		env: newShippedEnv(t), node: node,
		public: e2ebin.FreePort(t), grpc: e2ebin.FreePort(t), internal: e2ebin.FreePort(t),
		metrics: e2ebin.FreePort(t), adminPt: e2ebin.FreePort(t),
	}
	root := moduleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, r := range exampleRewrites {
		if got := strings.Count(text, r.old); got != r.n {
			t.Fatalf("Caddyfile.example holds %q (%s) %d times, want %d: update exampleRewrites", r.old, r.what, got, r.n)
		}
		text = strings.ReplaceAll(text, r.old, r.new(g))
	}
	cfgPath := filepath.Join(t.TempDir(), "Caddyfile")
	writeFileAtomic(t, cfgPath, []byte(text))

	env := g.env.environ(t, append([]string{
		"NUTSGATE_ADMIN=127.0.0.1:" + strconv.Itoa(g.adminPt),
		"NUTS_NODE_PUBLIC=" + strings.TrimPrefix(node.PublicURL(), "http://"),
		"NUTS_NODE_INTERNAL=" + strings.TrimPrefix(node.InternalURL(), "http://"),
		"NUTS_NODE_GRPC=" + node.GRPCAddr(),
		"NUTSGATE_INTERNAL_BIND=127.0.0.1",
		"NUTSGATE_INTERNAL_PORT=" + strconv.Itoa(g.internal),
		"NUTSGATE_METRICS_BIND=127.0.0.1",
		"NUTSGATE_METRICS_PORT=" + strconv.Itoa(g.metrics),
	}, extra...)...)
	g.process = e2ebin.StartEnv(t, binPath, cfgPath, env, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.adminPt), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return tlsReady("127.0.0.1:"+strconv.Itoa(g.internal), g.tlsConfig(exampleInternalHost))
	})
	return g
}

// tlsConfig trusts the test CA and sends host as SNI.
func (g *exampleGateway) tlsConfig(host string) *tls.Config {
	return &tls.Config{RootCAs: g.env.pki.pool, ServerName: host}
}

// exampleRequest is one request to the example gateway.
type exampleRequest struct {
	method, path string
	header       http.Header
	body         string
	from         string // source IP; default the kernel's choice (127.0.0.1)
}

// publicRequest sends r to the public site (SNI and Host nuts.example.org).
func (g *exampleGateway) publicRequest(t *testing.T, r exampleRequest) httpsResult {
	t.Helper()
	return g.siteRequest(t, examplePublicHost, g.public, r)
}

// internalRequest sends r to the internal site.
func (g *exampleGateway) internalRequest(t *testing.T, r exampleRequest) httpsResult {
	t.Helper()
	return g.siteRequest(t, exampleInternalHost, g.internal, r)
}

func (g *exampleGateway) siteRequest(t *testing.T, host string, port int, r exampleRequest) httpsResult {
	t.Helper()
	return httpsRequest{
		tls: g.tlsConfig(host), port: port, method: r.method, header: r.header, body: r.body, from: r.from,
		url: fmt.Sprintf("https://%s:%d%s", host, port, r.path),
	}.do(t)
}

// internalBearer is an Authorization header value with a fresh token the internal site accepts
// (audience: the internal host name, as Caddyfile.example sets it).
func (g *exampleGateway) internalBearer(t *testing.T) string {
	t.Helper()
	return g.env.key.newToken().with(func(_, c map[string]any) { c["aud"] = exampleInternalHost }).bearer(t)
}

// nodeSaw returns the node's requests on listener whose raw target is target.
func (g *exampleGateway) nodeSaw(listener, target string) []testnode.Request {
	var out []testnode.Request
	for _, r := range g.node.Requests() {
		if r.Listener == listener && r.RequestURI == target {
			out = append(out, r)
		}
	}
	return out
}

// metricsURL is the URL of path on the example's metrics listener.
func (g *exampleGateway) metricsURL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(g.metrics) + path
}
