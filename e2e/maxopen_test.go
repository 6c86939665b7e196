package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// maxOpenCaddyfile is a gateway whose two mtls_ident sites allow a client maxOpen open requests:
// /n2n proxied to an upstream of the test that holds requests open, and the gRPC port proxied
// over the nuts_node transport (h2c) to the test node.
const maxOpenCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
	log {
		level INFO
	}
}

https://localhost:{{.N2N}} {
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode require_and_verify
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	mtls_ident {
		require
		max_open {{.MaxOpen}}
	}
	reverse_proxy {{.NodePublic}}
}

https://localhost:{{.GRPC}} {
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode require_and_verify
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	mtls_ident {
		require
		max_open {{.MaxOpen}}
	}
	reverse_proxy h2c://{{.NodeGRPC}} {
		flush_interval -1
		transport nuts_node
	}
}
`

// maxOpen is the max_open of maxOpenCaddyfile; maxOpenExtra how many requests over it a test
// sends.
const (
	maxOpen      = 4
	maxOpenExtra = 3
)

// holdingUpstream answers requests under /n2n/hold/ only once release is closed, and every
// other request at once; it records every path it received.
type holdingUpstream struct {
	srv     *httptest.Server
	arrived chan string
	release chan struct{}
	mu      sync.Mutex
	paths   map[string]bool
}

func newHoldingUpstream(t *testing.T) *holdingUpstream {
	t.Helper()
	u := &holdingUpstream{arrived: make(chan string, 100), release: make(chan struct{}), paths: make(map[string]bool)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.paths[r.URL.Path] = true
		u.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/n2n/hold/") {
			u.arrived <- r.URL.Path
			<-u.release
		}
		_, _ = io.WriteString(w, "node ok")
	}))
	t.Cleanup(func() {
		select {
		case <-u.release:
		default:
			close(u.release)
		}
		u.srv.Close()
	})
	return u
}

func (u *holdingUpstream) saw(path string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.paths[path]
}

// startMaxOpenGateway starts a test node, a holding upstream and a gateway of maxOpenCaddyfile.
func startMaxOpenGateway(t *testing.T) (*mtlsGateway, *holdingUpstream) {
	t.Helper()
	node, err := testnode.Start(testnode.Options{CertHeaderOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	up := newHoldingUpstream(t)
	g := &mtlsGateway{pki: newPKI(t, "e2e max_open CA"), node: node}
	g.mtlsSettings = mtlsSettings{
		Admin: e2ebin.FreePort(t), N2N: e2ebin.FreePort(t), GRPC: e2ebin.FreePort(t),
		Dir:        t.TempDir(),
		NodePublic: strings.TrimPrefix(up.srv.URL, "http://"),
		NodeGRPC:   node.GRPCAddr(),
	}
	settings := struct {
		mtlsSettings
		MaxOpen int
	}{g.mtlsSettings, maxOpen}
	g.cfgPath = writeGatewayDir(t, g.Dir, serverFiles(t, g.pki, nil), maxOpenCaddyfile, settings)
	g.start(t)
	return g, up
}

// n2nClient is an HTTP client of the n2n port as c, over one HTTP/2 connection.
func (g *mtlsGateway) n2nClient(t *testing.T, c *leafCert) *http.Client {
	t.Helper()
	addr := g.addr(g.N2N)
	tr := &http.Transport{
		Proxy:             nil,
		TLSClientConfig:   g.tlsConfig(c),
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// n2nGet requests path on the n2n port with client.
func (g *mtlsGateway) n2nGet(client *http.Client, path string) httpsResult {
	resp, err := client.Get("https://localhost:" + strconv.Itoa(g.N2N) + path)
	if err != nil {
		return httpsResult{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return httpsResult{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}
}

// TestMaxOpen proves mtls_ident's max_open through the built binary: a client holding max_open
// requests open gets every further one refused, gRPC streams on one connection with
// RESOURCE_EXHAUSTED, /n2n requests with 429 and Retry-After: 1, and the node never sees them;
// the count is one per client across the gateway's mtls_ident handlers (a client holding its
// gRPC streams is refused on /n2n too); another client is unaffected; and once the requests end
// the client is admitted again. Every refusal is logged and counted in
// nutsgate_mtls_refusals_total{reason="too_many_open"}.
func TestMaxOpen(t *testing.T) {
	t.Parallel()
	g, up := startMaxOpenGateway(t)
	t.Cleanup(func() { // after the subtests, before the gateway stops
		metrics := (&siteGateway{siteSettings: siteSettings{Admin: g.Admin}}).scrapeMetrics(t, metricMTLS)
		// Each subtest's refusals, and the gRPC client's /n2n request; the polls at their ends
		// may add some.
		if got := metrics[sample(metricMTLS, "reason", "too_many_open")]; got < 2*maxOpenExtra+1 {
			t.Errorf("%s{reason=\"too_many_open\"} is %v, want at least %d", metricMTLS, got, 2*maxOpenExtra+1)
		}
	})

	t.Run("gRPC streams on one connection", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "max-open-grpc")
		cl := g.grpcAs(t, c)
		ctx := cl.ctx(t, 20*time.Second)
		var open []testgrpc.TestService_FullDuplexCallClient
		for i := range maxOpen {
			stream, err := cl.FullDuplexCall(ctx)
			if err == nil {
				err = exchange(stream, 16)
			}
			if err != nil {
				t.Fatalf("stream %d of %d: %v", i+1, maxOpen, err)
			}
			open = append(open, stream)
		}
		for i := range maxOpenExtra {
			stream, err := cl.FullDuplexCall(ctx)
			if err == nil {
				_, err = stream.Recv()
			}
			expectCode(t, "stream "+strconv.Itoa(maxOpen+i+1), err, codes.ResourceExhausted)
		}
		if n := len(g.nodeCalls(cl)); n != maxOpen {
			t.Errorf("the node saw %d calls of the client, want %d (max_open)", n, maxOpen)
		}

		// The same client on /n2n: the one count is at max_open.
		path := "/n2n/shared/" + uuid.NewString()
		r := g.n2nGet(g.n2nClient(t, c), path)
		if r.statusOr() != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
			t.Errorf("/n2n while holding %d gRPC streams: %s (Retry-After %q), want 429 with Retry-After 1", maxOpen, r, r.header.Get("Retry-After"))
		}
		if up.saw(path) {
			t.Errorf("the node received %s, which the gateway should have refused", path)
		}

		// Another client is unaffected.
		other := g.pki.client(t, "max-open-grpc-other")
		ocl := g.grpcAs(t, other)
		header, err := ocl.unary(t)
		if err != nil {
			t.Fatalf("another client: %v", err)
		}
		expectSubject(t, header, other)

		// Once the streams end, the client is admitted again.
		for _, stream := range open {
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("ending a stream: %v", err)
			}
		}
		eventually(t, 5*time.Second, "the client is still refused after its streams ended", func() bool {
			_, err := cl.unary(t)
			return err == nil
		})
		if !strings.Contains(g.Logs.String(), `"reason":"too_many_open"`) {
			t.Errorf("no refusal for too many open requests in the gateway's log")
		}
	})

	t.Run("n2n requests", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "max-open-n2n")
		client := g.n2nClient(t, c)
		held := make(chan httpsResult, maxOpen)
		for range maxOpen {
			go func() { held <- g.n2nGet(client, "/n2n/hold/"+uuid.NewString()) }()
		}
		for i := range maxOpen {
			select {
			case <-up.arrived:
			case <-time.After(10 * time.Second):
				t.Fatalf("only %d of %d held requests reached the node", i, maxOpen)
			}
		}
		for range maxOpenExtra {
			path := "/n2n/extra/" + uuid.NewString()
			r := g.n2nGet(client, path)
			if r.statusOr() != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
				t.Errorf("request over max_open: %s (Retry-After %q), want 429 with Retry-After 1", r, r.header.Get("Retry-After"))
			}
			if up.saw(path) {
				t.Errorf("the node received %s, which the gateway should have refused", path)
			}
		}
		other := g.pki.client(t, "max-open-n2n-other")
		path := "/n2n/other/" + uuid.NewString()
		if r := g.n2nGet(g.n2nClient(t, other), path); r.statusOr() != http.StatusOK || !up.saw(path) {
			t.Errorf("another client: %s (node saw it: %v), want 200 from the node", r, up.saw(path))
		}
		close(up.release)
		for range maxOpen {
			if r := <-held; r.statusOr() != http.StatusOK {
				t.Errorf("held request: %s, want 200", r)
			}
		}
		eventually(t, 5*time.Second, "the client is still refused after its requests ended", func() bool {
			return g.n2nGet(client, "/n2n/after/"+uuid.NewString()).statusOr() == http.StatusOK
		})
	})
}

// h2cSettingsListener accepts h2c connections on loopback and reports the initial stream window
// each client announces in its first SETTINGS frame; it answers nothing.
func h2cSettingsListener(t *testing.T) (addr string, windows <-chan uint32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan uint32, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
					return
				}
				f, err := http2.NewFramer(io.Discard, c).ReadFrame()
				sf, ok := f.(*http2.SettingsFrame)
				if err != nil || !ok {
					return
				}
				window := uint32(65535) // the HTTP/2 default, if the client does not set it
				if v, ok := sf.Value(http2.SettingInitialWindowSize); ok {
					window = v
				}
				ch <- window
			}()
		}
	}()
	return l.Addr().String(), ch
}

// TestNodeTransportWindow proves, on the wire, that the nuts_node transport announces to the
// node a stream window of 512 KiB by default and of its stream_buffer when set: what the gateway
// buffers of a stream the client does not read. The http transport, for comparison, announces
// Go's 4 MiB.
func TestNodeTransportWindow(t *testing.T) {
	t.Parallel()
	type site struct {
		transport string
		want      uint32
		port      int
		addr      string
		windows   <-chan uint32
	}
	sites := []*site{
		{transport: "nuts_node", want: 512 << 10},
		{transport: "nuts_node {\n\t\t\tstream_buffer 64KiB\n\t\t}", want: 64 << 10},
		{transport: "http", want: 4 << 20},
	}
	var cfg strings.Builder
	admin := e2ebin.FreePort(t)
	cfg.WriteString("{\n\tadmin 127.0.0.1:" + strconv.Itoa(admin) + "\n\tdefault_bind 127.0.0.1\n\tauto_https off\n}\n")
	for _, s := range sites {
		s.port = e2ebin.FreePort(t)
		s.addr, s.windows = h2cSettingsListener(t)
		cfg.WriteString("http://127.0.0.1:" + strconv.Itoa(s.port) + " {\n\treverse_proxy h2c://" + s.addr + " {\n\t\ttransport " + s.transport + "\n\t}\n}\n")
	}
	path := filepath.Join(t.TempDir(), "Caddyfile")
	writeFileAtomic(t, path, []byte(cfg.String()))
	e2ebin.Start(t, binPath, path, func() bool {
		for _, s := range sites {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
	for _, s := range sites {
		resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}).Get("http://127.0.0.1:" + strconv.Itoa(s.port) + "/")
		if err == nil {
			resp.Body.Close()
		}
		select {
		case got := <-s.windows:
			if got != s.want {
				t.Errorf("transport %s: the gateway announced a stream window of %d bytes, want %d", strings.Fields(s.transport)[0], got, s.want)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("transport %s: no HTTP/2 connection reached the node (request: %v)", s.transport, err)
		}
	}
}
