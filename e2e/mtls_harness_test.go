package e2e

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// mtlsCaddyfile is the configuration of the n2n/gRPC gateways, each site starting with
// path_guard as in Caddyfile.example: the node's :443 (/n2n behind a
// required client certificate, a deny list and a rate limit; /public open) and its gRPC port (TLS
// client authentication required, h2c to the node), and the gateway-wide deny list in deny.txt.
const mtlsCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
	log {
		level INFO
	}
	nutsgate {
		deny_file {{.Dir}}/deny.txt
	}
}

https://localhost:{{.N2N}} {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode verify_if_given
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	handle /n2n/* {
		mtls_ident {
			require
			deny "{{.InlineDenied}}"
			deny_file {{.Dir}}/site-deny.txt
		}
		client_rate_limit {
			rate {{.N2NRate}}
		}
		reverse_proxy {{.NodePublic}}
	}
	handle /public/* {
		mtls_ident {
			forward_header X-Client-Cert
		}
		reverse_proxy {{.NodePublic}}
	}
	handle /iam/* {
		reverse_proxy {{.NodePublic}}
	}
	handle {
		respond 404
	}
}

https://localhost:{{.GRPC}} {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode require_and_verify
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	mtls_ident {
		require
	}
	client_rate_limit {
		rate {{.GRPCRate}}
	}
	reverse_proxy h2c://{{.NodeGRPC}}
}
`

// inlineDeniedCN is the CN of the client the n2n route denies inline: CN=inline-denied,O=Test.
const inlineDeniedCN = "inline-denied"

// Rate limits of the gateways, per hour: a budget spent by a slow run does not refill during
// the test. Tests that poll use relaxed ones so polling spends no budget.
const (
	n2nRate     = 5
	grpcRate    = 20
	relaxedRate = 600000
)

// mtlsSettings fill mtlsCaddyfile.
type mtlsSettings struct {
	Admin, N2N, GRPC     int
	Dir                  string
	NodePublic, NodeGRPC string
	InlineDenied         string
	N2NRate, GRPCRate    string
}

// mtlsGateway is a running gateway of mtlsCaddyfile in front of an in-process test node.
type mtlsGateway struct {
	*process
	mtlsSettings
	cfgPath string
	pki     *testPKI
	node    *testnode.Node
}

// startMTLSGateway writes the PKI files and the Caddyfile into a fresh directory, starts a test
// node and the gateway, and returns once the gateway listens on its admin, n2n and gRPC ports.
// Rates are requests per minute per client.
func startMTLSGateway(t *testing.T, n2nPerHour, grpcPerHour int) *mtlsGateway {
	t.Helper()
	return startMTLSGatewayWith(t, mtlsCaddyfile, n2nPerHour, grpcPerHour)
}

// startMTLSGatewayWith is startMTLSGateway with the configuration template caddyfile, a variant
// of mtlsCaddyfile.
func startMTLSGatewayWith(t *testing.T, caddyfile string, n2nPerHour, grpcPerHour int) *mtlsGateway {
	t.Helper()
	node, err := testnode.Start(testnode.Options{
		// Calls without the header are served (with no identity), so that a call the gateway
		// should have refused shows up in GRPCCalls instead of being refused by the node.
		CertHeaderOptional: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)

	g := &mtlsGateway{pki: newPKI(t, "e2e trusted CA"), node: node}
	g.mtlsSettings = mtlsSettings{
		Admin: e2ebin.FreePort(t), N2N: e2ebin.FreePort(t), GRPC: e2ebin.FreePort(t),
		Dir:          t.TempDir(),
		NodePublic:   strings.TrimPrefix(node.PublicURL(), "http://"),
		NodeGRPC:     node.GRPCAddr(),
		InlineDenied: testName(inlineDeniedCN).String(),
		N2NRate:      strconv.Itoa(n2nPerHour) + "/1h",
		GRPCRate:     strconv.Itoa(grpcPerHour) + "/1h",
	}
	g.cfgPath = writeGatewayDir(t, g.Dir, serverFiles(t, g.pki, map[string][]byte{
		"site-deny.txt": []byte("# e2e: the n2n route's own deny list\n"),
	}), caddyfile, g.mtlsSettings)
	g.start(t)
	return g
}

// start runs the gateway process and waits until its admin port accepts connections and its
// two sites complete a TLS handshake with the server certificate.
func (g *mtlsGateway) start(t *testing.T) {
	t.Helper()
	g.process = e2ebin.Start(t, binPath, g.cfgPath, func() bool {
		c, err := net.DialTimeout("tcp", g.addr(g.Admin), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		for _, port := range []int{g.N2N, g.GRPC} {
			if !tlsReady(g.addr(port), g.tlsConfig(nil)) {
				return false
			}
		}
		return true
	})
}

// tlsReady reports whether a TLS handshake with addr succeeds with cfg.
func tlsReady(addr string, cfg *tls.Config) bool {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// restart kills the gateway and starts it again with the same configuration and files.
func (g *mtlsGateway) restart(t *testing.T) {
	t.Helper()
	g.Stop(t)
	g.start(t)
}

// addr is 127.0.0.1:port.
func (g *mtlsGateway) addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// ---- HTTPS ----

// tlsConfig is a client that trusts the test CA, names the server localhost (so SNI is sent),
// and presents c unless c is nil.
func (g *mtlsGateway) tlsConfig(c *leafCert) *tls.Config {
	return withClientCert(&tls.Config{RootCAs: g.pki.pool, ServerName: "localhost"}, c)
}

// withClientCert makes cfg present c (if not nil) whatever CAs the server says it accepts: Go's
// client would otherwise hold back a certificate of a CA not on the server's list, and the
// gateway would never get to judge it.
func withClientCert(cfg *tls.Config, c *leafCert) *tls.Config {
	if c != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &c.tls, nil
		}
	}
	return cfg
}

// httpsResult is the outcome of one HTTPS request: a response, or the error that prevented one.
type httpsResult struct {
	status int
	header http.Header
	body   string
	err    error
}

// httpsRequest describes one request to a gateway port over TLS. The connection always goes to
// 127.0.0.1:port whatever the URL's host.
type httpsRequest struct {
	tls    *tls.Config
	port   int
	method string // default GET
	url    string // https://localhost:<port>/... by default, from path
	path   string
	host   string      // Host header, if not the URL's
	header http.Header // copied into the request as is (keys not canonicalised)
	from   string      // the client's source IP (a loopback address); default: the kernel's choice
	body   string
}

// do sends the request on a fresh connection.
func (r httpsRequest) do(t *testing.T) httpsResult {
	t.Helper()
	target := r.url
	if target == "" {
		target = "https://localhost:" + strconv.Itoa(r.port) + r.path
	}
	dial := "127.0.0.1:" + strconv.Itoa(r.port)
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig:   r.tls,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				d := &net.Dialer{}
				if r.from != "" {
					d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(r.from)}
				}
				return d.DialContext(ctx, network, dial)
			},
		},
		Timeout: 10 * time.Second,
	}
	var reqBody io.Reader
	if r.body != "" {
		reqBody = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(cmp.Or(r.method, http.MethodGet), target, reqBody)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.host != "" {
		req.Host = r.host
	}
	resp, err := client.Do(req)
	if err != nil {
		return httpsResult{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return httpsResult{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}
}

// get requests path on the n2n port as client c (nil: no certificate), with extra headers.
func (g *mtlsGateway) get(t *testing.T, c *leafCert, path string, header http.Header) httpsResult {
	t.Helper()
	return httpsRequest{tls: g.tlsConfig(c), port: g.N2N, path: path, header: header}.do(t)
}

// n2nPath returns a fresh, unique path under /n2n/<label>/, so the node's record of a request
// can be told apart from every other one.
func n2nPath(label string) string { return "/n2n/" + label + "/" + uuid.NewString() }

// statusOr is the request's status code, or -1 if it failed.
func (r httpsResult) statusOr() int {
	if r.err != nil {
		return -1
	}
	return r.status
}

// String describes the outcome for test messages.
func (r httpsResult) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return strconv.Itoa(r.status) + " " + strconv.Quote(truncate(r.body, 200))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// expectStatus asserts the request got want.
func expectStatus(t *testing.T, what string, r httpsResult, want int) {
	t.Helper()
	if r.statusOr() != want {
		t.Errorf("%s: got %s, want status %d", what, r, want)
	}
}

// nodeRequests returns the HTTP requests the node received whose path is path.
func (g *mtlsGateway) nodeRequests(path string) []testnode.Request {
	var out []testnode.Request
	for _, r := range g.node.Requests() {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// nodeRequestsUnder counts the HTTP requests the node received under prefix.
func (g *mtlsGateway) nodeRequestsUnder(prefix string) int {
	n := 0
	for _, r := range g.node.Requests() {
		if strings.HasPrefix(r.Path, prefix) {
			n++
		}
	}
	return n
}

// expectNodeSawNothing asserts the node received no request for path. A request the gateway
// forwards reaches the node before the client gets its answer, so no waiting is needed.
func (g *mtlsGateway) expectNodeSawNothing(t *testing.T, path string) {
	t.Helper()
	if g.node.SawPath(path) {
		t.Errorf("the node received %s, which the gateway should have refused", path)
	}
}

// certHeaderValues returns every value the node received in a header whose name is X-SSL-CERT in
// any letter case or with '_' for '-'.
func certHeaderValues(h http.Header) []string {
	var vals []string
	for k, v := range h {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-SSL-CERT") {
			vals = append(vals, v...)
		}
	}
	return vals
}

// expectForwarded asserts the node received exactly one request for path, carrying exactly one
// certificate header: c, URL-escaped PEM, which the node's parser reads back to c.
func (g *mtlsGateway) expectForwarded(t *testing.T, path string, c *leafCert) {
	t.Helper()
	reqs := g.nodeRequests(path)
	if len(reqs) != 1 {
		t.Errorf("the node received %d requests for %s, want 1", len(reqs), path)
		return
	}
	vals := certHeaderValues(reqs[0].Header)
	if len(vals) != 1 || vals[0] != c.escapedPEM() {
		t.Errorf("the node saw certificate header values %.120q, want exactly the client's URL-escaped PEM", vals)
		return
	}
	cert, err := testnode.ParseCertHeader(vals)
	if err != nil {
		t.Errorf("the node cannot parse the forwarded certificate: %v", err)
	} else if !cert.Equal(c.leaf) {
		t.Errorf("the node read certificate %q, want the client's %q", cert.Subject, c.subject())
	}
}

// ---- admin API ----

// adminDeny calls the deny-list admin API and returns the status and body.
func (g *mtlsGateway) adminDeny(t *testing.T, method, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.addr(g.Admin)+"/nutsgate/deny", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("admin API %s /nutsgate/deny: %v", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

// changeDeny POSTs (method POST) or DELETEs an entry and asserts 200 with the entries in force.
func (g *mtlsGateway) changeDeny(t *testing.T, method, entry string) []string {
	t.Helper()
	body, err := json.Marshal(map[string]string{"entry": entry})
	if err != nil {
		t.Fatal(err)
	}
	status, resp := g.adminDeny(t, method, string(body))
	if status != http.StatusOK {
		t.Fatalf("admin API %s /nutsgate/deny %s: status %d, body %q", method, body, status, resp)
	}
	return decodeEntries(t, resp)
}

// denyEntries GETs the entries in force.
func (g *mtlsGateway) denyEntries(t *testing.T) []string {
	t.Helper()
	status, body := g.adminDeny(t, http.MethodGet, "")
	if status != http.StatusOK {
		t.Fatalf("admin API GET /nutsgate/deny: status %d, body %q", status, body)
	}
	return decodeEntries(t, body)
}

func decodeEntries(t *testing.T, body string) []string {
	t.Helper()
	var entries []string
	if err := json.Unmarshal([]byte(body), &entries); err != nil {
		t.Fatalf("deny list answer %q is not a JSON array of strings: %v", body, err)
	}
	return entries
}

// denyFileLines returns the non-comment lines of the gateway-wide deny file.
func (g *mtlsGateway) denyFileLines(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(g.Dir, "deny.txt"))
	if err != nil {
		t.Fatalf("reading the deny file: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// ---- gRPC ----

// probeKey is request metadata every gRPC call of a test carries, so the node's record of it can
// be found even when the call carries no certificate.
const probeKey = "x-e2e-probe"

// grpcClient is a TestService client on its own connection to the gateway's gRPC port.
type grpcClient struct {
	testgrpc.TestServiceClient
	probe string
}

// dialGRPC connects to the gRPC port with opts, which must choose the transport credentials.
// target is the address the client believes it dials (the :authority of its calls); the
// connection always goes to 127.0.0.1 unless opts bring their own dialer.
func (g *mtlsGateway) dialGRPC(t *testing.T, target string, opts ...grpc.DialOption) *grpcClient {
	t.Helper()
	addr := g.addr(g.GRPC)
	opts = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}),
	}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+target, opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcClient{TestServiceClient: testgrpc.NewTestServiceClient(conn), probe: uuid.NewString()}
}

// grpcAs connects to the gRPC port the ordinary way as c: grpc-go's TLS credentials, server
// name localhost.
func (g *mtlsGateway) grpcAs(t *testing.T, c *leafCert) *grpcClient {
	t.Helper()
	return g.dialGRPC(t, "localhost:"+strconv.Itoa(g.GRPC), grpc.WithTransportCredentials(credentials.NewTLS(g.tlsConfig(c))))
}

// ctx returns a context for one call or stream, bounded by d, carrying the client's probe and
// the metadata pairs kv.
func (c *grpcClient) ctx(t *testing.T, d time.Duration, kv ...string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, append([]string{probeKey, c.probe}, kv...)...)
}

// unary makes one UnaryCall asking for a 16-byte payload and returns the response header.
func (c *grpcClient) unary(t *testing.T, kv ...string) (metadata.MD, error) {
	t.Helper()
	var header metadata.MD
	resp, err := c.UnaryCall(c.ctx(t, 10*time.Second, kv...), &testgrpc.SimpleRequest{ResponseSize: 16}, grpc.Header(&header))
	if err == nil && len(resp.GetPayload().GetBody()) != 16 {
		t.Errorf("UnaryCall: payload of %d bytes, want 16", len(resp.GetPayload().GetBody()))
	}
	return header, err
}

// nodeCalls returns the gRPC calls of client c the node accepted.
func (g *mtlsGateway) nodeCalls(c *grpcClient) []testnode.Call {
	var out []testnode.Call
	for _, call := range g.node.GRPCCalls() {
		if vals := call.Metadata.Get(probeKey); len(vals) == 1 && vals[0] == c.probe {
			out = append(out, call)
		}
	}
	return out
}

// expectSubject asserts the node reported the client's subject in the response header.
func expectSubject(t *testing.T, header metadata.MD, c *leafCert) {
	t.Helper()
	if got := header.Get(testnode.SubjectHeader); len(got) != 1 || got[0] != c.subject() {
		t.Errorf("node reports client subject %q, want [%q]", got, c.subject())
	}
}

// dialH1 opens an HTTP/1.1 connection as c to the n2n port, closed when the test ends.
func (g *mtlsGateway) dialH1(t *testing.T, c *leafCert) *tls.Conn {
	t.Helper()
	cfg := g.tlsConfig(c)
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", g.addr(g.N2N), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// openIdleH1 makes one request as c on an HTTP/1.1 keep-alive connection to the n2n port, leaves
// the connection open and idle, and returns a channel that gets the error when it ends.
func (g *mtlsGateway) openIdleH1(t *testing.T, c *leafCert) <-chan error {
	t.Helper()
	conn := g.dialH1(t, c)
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "GET "+n2nPath("keepalive")+" HTTP/1.1\r\nHost: localhost:"+strconv.Itoa(g.N2N)+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("HTTP/1.1 request as %s: %d (close %v), want 200 on a kept-alive connection", c.subject(), resp.StatusCode, resp.Close)
	}
	ended := make(chan error, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := br.ReadByte()
		if err == nil {
			err = errors.New("the server sent something on an idle connection")
		}
		ended <- err
	}()
	return ended
}
