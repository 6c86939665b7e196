package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// h2Client is an HTTP/2 client of a gateway port as client c (nil: none); every connection
// goes to 127.0.0.1:port.
func h2Client(cfg *tls.Config, port int) *http.Client {
	dial := "127.0.0.1:" + strconv.Itoa(port)
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
			TLSClientConfig:   cfg,
			DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, dial)
			},
		},
		Timeout: 10 * time.Second,
	}
}

// postWithTrailer sends a POST of body with the request trailer X-Evil over HTTP/2 and returns
// the response with its body read.
func postWithTrailer(t *testing.T, client *http.Client, url string, header http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	for k, v := range header {
		req.Header[k] = v
	}
	req.Trailer = http.Header{"X-Evil": {"1"}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s with a trailer: %v", url, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s with a trailer: reading the answer: %v", url, err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("POST %s: answered over %s, want HTTP/2", url, resp.Proto)
	}
	return resp, string(answer)
}

// TestRequestTrailersDropped: request trailers, HTTP/1.1 chunked (declared with a Trailer
// header or not) and HTTP/2, on /public and on /n2n (with a client certificate), never reach
// the node; the request itself does, body intact, without a Trailer header.
func TestRequestTrailersDropped(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, relaxedSiteRate)
	cert := g.pki.client(t, "trailer-client")
	for _, route := range []struct {
		prefix string
		cert   *leafCert
	}{{"/public/", nil}, {"/n2n/", cert}} {
		for _, proto := range []string{"HTTP/1.1 declared", "HTTP/1.1 undeclared", "HTTP/2"} {
			t.Run(route.prefix+" "+proto, func(t *testing.T) {
				id := uuid.NewString()
				target := route.prefix + id
				var status int
				switch proto {
				case "HTTP/2":
					resp, _ := postWithTrailer(t, h2Client(g.tlsConfig(route.cert), g.Port), "https://localhost:"+strconv.Itoa(g.Port)+target, nil, "body")
					status = resp.StatusCode
				default:
					declare := ""
					if proto == "HTTP/1.1 declared" {
						declare = "Trailer: X-Evil\r\n"
					}
					r := g.rawBytes(t, route.cert, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n%s"+
						"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX-Evil: 1\r\n\r\n", target, g.Port, declare))
					if r.err != nil {
						t.Fatalf("POST %s: %v", target, r.err)
					}
					status = r.status
				}
				seen := g.nodeRequestsWith(id)
				if status != http.StatusOK || len(seen) != 1 {
					t.Fatalf("POST %s: status %d, the node received %d request(s); want 200 and one", target, status, len(seen))
				}
				if r := seen[0]; string(r.Body) != "body" || len(r.Trailer) != 0 || r.Header.Get("Trailer") != "" {
					t.Errorf("the node received body %q, trailers %v, Trailer header %q; want the body and no trailer", r.Body, r.Trailer, r.Header.Get("Trailer"))
				}
			})
		}
	}
}

// TestGRPCRequestTrailerDropped: a peer that sends a gRPC request with an HTTP/2 request
// trailer cannot make the node's grpc-go server close the gateway's shared connection: another
// peer's open FullDuplexCall keeps working, and the trailer-carrying call itself reaches the
// node without the trailer.
func TestGRPCRequestTrailerDropped(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, n2nRate, relaxedRate)
	peer1 := g.grpcAs(t, g.pki.client(t, "trailer-peer-1"))
	stream, err := peer1.FullDuplexCall(peer1.ctx(t, 30*time.Second))
	if err != nil {
		t.Fatalf("peer 1 FullDuplexCall: %v", err)
	}
	if err := exchange(stream, 16); err != nil {
		t.Fatalf("peer 1, first exchange: %v", err)
	}

	// Peer 2: a UnaryCall (an empty SimpleRequest, one gRPC frame) with a request trailer.
	probe := uuid.NewString()
	client := h2Client(g.tlsConfig(g.pki.client(t, "trailer-peer-2")), g.GRPC)
	resp, _ := postWithTrailer(t, client, "https://localhost:"+strconv.Itoa(g.GRPC)+"/grpc.testing.TestService/UnaryCall", http.Header{
		"Content-Type": {"application/grpc"},
		"Te":           {"trailers"},
		probeKey:       {probe},
	}, "\x00\x00\x00\x00\x00") // one uncompressed gRPC message of 0 bytes
	if code := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status"); resp.StatusCode != http.StatusOK || code != "0" {
		t.Errorf("peer 2's call with a trailer: status %d, grpc-status %q (%s); want 200 and 0, the trailer dropped silently",
			resp.StatusCode, code, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"))
	}

	for i := range 3 {
		if err := exchange(stream, 16); err != nil {
			t.Fatalf("peer 1, exchange %d after peer 2's trailer: %v", i+1, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("peer 1, end of stream: %v, want EOF", err)
	}

	var calls []testnode.Call
	for _, call := range g.node.GRPCCalls() {
		if v := call.Metadata.Get(probeKey); len(v) == 1 && v[0] == probe {
			calls = append(calls, call)
		}
	}
	if len(calls) != 1 || len(calls[0].Metadata.Get("x-evil")) != 0 {
		t.Errorf("the node received peer 2's call %d time(s) (%v), want once without x-evil", len(calls), calls)
	}
}

// TestCertHeaderStripped: a client's own X-SSL-CERT, in any spelling and any number of copies,
// never reaches the node on the routes without mtls_ident (/iam, /public, /.well-known); on
// /n2n the node gets exactly the verified certificate mtls_ident sets.
func TestCertHeaderStripped(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, relaxedSiteRate)
	forged := []string{"X-SSL-CERT: forged-1", "x_ssl_cert: forged-2", "x_ssl_cert: forged-3", "X-Ssl-Cert: forged-4", "x-ssl_cert: forged-5"}
	cert := g.pki.client(t, "certheader-client")
	for _, tc := range []struct {
		prefix string
		cert   *leafCert
	}{{"/iam/", nil}, {"/public/", nil}, {"/.well-known/", nil}, {"/iam/", cert}, {"/n2n/", cert}} {
		id := uuid.NewString()
		target := tc.prefix + id
		r := g.raw(t, tc.cert, target, forged...)
		seen := g.nodeRequestsWith(id)
		if r.err != nil || r.status != http.StatusOK || len(seen) != 1 {
			t.Errorf("GET %s: %s, the node received %d request(s); want 200 and one", target, r, len(seen))
			continue
		}
		var got []string
		for k, v := range seen[0].Header {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-SSL-CERT") {
				got = append(got, k+": "+strings.Join(v, ","))
			}
		}
		if tc.prefix != "/n2n/" {
			if len(got) != 0 {
				t.Errorf("GET %s: the node received %q, want no certificate header", target, got)
			}
			continue
		}
		if vals := certHeaderValues(seen[0].Header); len(got) != 1 || len(vals) != 1 || strings.Contains(vals[0], "forged") {
			t.Errorf("GET %s: the node received %q, want exactly the verified certificate", target, got)
		}
	}
}

// TestCustomCertHeaderStripped: a header that an mtls_ident forwards the certificate in
// (forward_header X-Client-Cert on /public of mtlsCaddyfile) is a certificate header on every
// site: a client's own copies, in any spelling, never reach the node through /iam, a route
// without mtls_ident, and through /public the node gets exactly the verified certificate.
func TestCustomCertHeaderStripped(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, relaxedRate, relaxedRate)
	cert := g.pki.client(t, "custom-header-client")
	forged := http.Header{"X-Client-Cert": {"forged-1", "forged-2"}, "x_client_cert": {"forged-3"}, "X-SSL-CERT": {"forged-4"}}
	for _, tc := range []struct {
		prefix string
		cert   *leafCert
	}{{"/iam/", nil}, {"/iam/", cert}, {"/public/", cert}} {
		path := tc.prefix + uuid.NewString()
		expectStatus(t, "GET "+path, g.get(t, tc.cert, path, forged), http.StatusOK)
		reqs := g.nodeRequests(path)
		if len(reqs) != 1 {
			t.Fatalf("the node received %d requests for %s, want 1", len(reqs), path)
		}
		var got []string
		for k, v := range reqs[0].Header {
			if k := strings.ReplaceAll(strings.ToLower(k), "_", "-"); k == "x-client-cert" || k == "x-ssl-cert" {
				got = append(got, k+": "+strings.Join(v, ","))
			}
		}
		want := 0
		if tc.prefix == "/public/" {
			want = 1
			if v := reqs[0].Header.Get("X-Client-Cert"); v != cert.escapedPEM() {
				t.Errorf("GET %s: the node received X-Client-Cert %.80q, want the verified certificate", path, v)
			}
		}
		if len(got) != want || strings.Contains(strings.Join(got, " "), "forged") {
			t.Errorf("GET %s: the node received %q; want %d certificate header(s), none of them forged", path, got, want)
		}
	}
}

// ---- TLS 1.3 early data over HTTP/3 ----

// ticketCache is a TLS session cache that reports when it stores a ticket.
type ticketCache struct {
	tls.ClientSessionCache
	stored chan struct{}
	once   sync.Once
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		c.once.Do(func() { close(c.stored) })
	}
}

// earlyConn is the client's UDP socket, steered so that a request really is early data when it
// reaches the gateway: while held, nothing is read (so the client cannot finish the handshake
// and must send what it writes as 0-RTT), and, if finish is set, datagrams that carry a
// Handshake packet (the client's Finished) are sent only once it is closed (letFinish), so the
// gateway handles the request before its handshake completes, however slow the machine.
type earlyConn struct {
	net.PacketConn
	hold     chan struct{} // closed: reads flow
	released sync.Once
	finish   chan struct{} // nil: Handshake packets go at once; closed: they go
	finished sync.Once
	zeroRTT  atomic.Int64 // datagrams written that carry a 0-RTT packet
}

// release lets reads flow; it may be called any number of times.
func (c *earlyConn) release() { c.released.Do(func() { close(c.hold) }) }

// letFinish sends the held Handshake packets; it may be called any number of times.
func (c *earlyConn) letFinish() {
	if c.finish != nil {
		c.finished.Do(func() { close(c.finish) })
	}
}

func (c *earlyConn) ReadFrom(p []byte) (int, net.Addr, error) {
	<-c.hold
	return c.PacketConn.ReadFrom(p)
}

func (c *earlyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	has0RTT, hasHandshake := longHeaderTypes(p)
	if has0RTT {
		c.zeroRTT.Add(1)
	}
	if hasHandshake && c.finish != nil {
		late := bytes.Clone(p)
		go func() {
			<-c.finish
			_, _ = c.PacketConn.WriteTo(late, addr)
		}()
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// longHeaderTypes reports whether a QUIC v1 datagram carries a 0-RTT and a Handshake packet,
// walking its coalesced long-header packets (RFC 9000, 17.2).
func longHeaderTypes(b []byte) (zeroRTT, handshake bool) {
	for len(b) > 7 && b[0]&0x80 != 0 {
		typ := b[0] >> 4 & 3
		zeroRTT = zeroRTT || typ == 1
		handshake = handshake || typ == 2
		p := 5 // flags, version
		p += 1 + int(b[p])
		if p >= len(b) {
			return
		}
		p += 1 + int(b[p])
		if typ == 0 { // Initial: token
			n, l, err := quicvarint.Parse(b[min(p, len(b)):])
			if err != nil {
				return
			}
			p += l + int(n)
		}
		if p >= len(b) {
			return
		}
		n, l, err := quicvarint.Parse(b[p:])
		if err != nil {
			return
		}
		p += l + int(n)
		if p > len(b) {
			return
		}
		b = b[p:]
	}
	return
}

// handshakeDone waits for conn's handshake to complete, failing the test when ctx ends first.
func handshakeDone(t *testing.T, ctx context.Context, conn *quic.Conn) {
	t.Helper()
	select {
	case <-conn.HandshakeComplete():
	case <-ctx.Done():
		t.Fatalf("the QUIC handshake did not complete: %v", ctx.Err())
	}
}

// TestEarlyDataRefused: a token-authenticated POST to /internal sent as TLS 1.3 early data
// (0-RTT over HTTP/3, which Caddy accepts by default) is answered 425 and never reaches the
// node; the same request after the handshake is served.
func TestEarlyDataRefused(t *testing.T) {
	t.Parallel()
	g := startSiteGatewayWith(t, relaxedSiteRate, "h1 h2 h3", false) // as the internal site: no client_auth
	// dial connects from a fresh UDP socket; early: the socket holds reads and delays the
	// client's Finished.
	dial := func(t *testing.T, ctx context.Context, cfg *tls.Config, early bool) (*quic.Conn, *earlyConn) {
		t.Helper()
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc := &earlyConn{PacketConn: udp, hold: make(chan struct{})}
		if early {
			pc.finish = make(chan struct{})
		} else {
			pc.release()
		}
		qt := &quic.Transport{Conn: pc}
		t.Cleanup(func() { qt.Close() })
		t.Cleanup(pc.letFinish)
		t.Cleanup(pc.release) // first: a transport whose reads are held never closes
		conn, err := qt.DialEarly(ctx, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: g.Port}, cfg, &quic.Config{})
		if err != nil {
			t.Fatalf("HTTP/3 dial: %v", err)
		}
		return conn, pc
	}
	cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), stored: make(chan struct{})}
	cfg := g.tlsConfig(nil)
	cfg.NextProtos = []string{http3.NextProtoH3}
	cfg.ClientSessionCache = cache
	h3 := &http3.Transport{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	post := func(t *testing.T, cc *http3.ClientConn, pc *earlyConn, id string) (int, error) {
		t.Helper()
		str, err := cc.OpenRequestStream(ctx)
		if err != nil {
			return 0, err
		}
		body := `{"probe":"` + id + `"}`
		req, err := http.NewRequest(http.MethodPost, "https://localhost:"+strconv.Itoa(g.Port)+"/internal/vdr/v2/"+id, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Authorization", g.bearer(t))
		req.Header.Set("Content-Type", "application/json")
		if err := str.SendRequestHeader(req); err != nil {
			return 0, err
		}
		if _, err := io.WriteString(str, body); err != nil {
			return 0, err
		}
		if err := str.Close(); err != nil {
			return 0, err
		}
		if pc.finish != nil { // 0-RTT: let the request leave before the handshake goes on
			sent := pc.zeroRTT.Load()
			eventually(t, 5*time.Second, "the early request leaves in a 0-RTT packet", func() bool { return pc.zeroRTT.Load() > sent })
			pc.release()
		}
		resp, err := str.ReadResponse() // an answer to early data comes before the client's Finished
		pc.letFinish()
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// A first connection: a request after the handshake, served; the gateway issues a ticket.
	conn, pc := dial(t, ctx, cfg, false)
	handshakeDone(t, ctx, conn)
	id := uuid.NewString()
	if status, err := post(t, h3.NewClientConn(conn), pc, id); err != nil || status != http.StatusOK || len(g.nodeRequestsWith(id)) != 1 {
		t.Fatalf("POST after the handshake: status %d, %v, node saw %d; want 200 and one", status, err, len(g.nodeRequestsWith(id)))
	}
	select {
	case <-cache.stored:
	case <-ctx.Done():
		t.Fatal("the gateway issued no session ticket")
	}
	_ = conn.CloseWithError(0, "")

	// A resumed connection: the POST goes out as 0-RTT early data.
	conn, pc = dial(t, ctx, cfg, true)
	defer conn.CloseWithError(0, "")
	id = uuid.NewString()
	status, err := post(t, h3.NewClientConn(conn), pc, id)
	pc.release() // if post failed before it let the handshake go on
	pc.letFinish()
	handshakeDone(t, ctx, conn)
	if !conn.ConnectionState().Used0RTT {
		t.Fatalf("the gateway did not accept 0-RTT (status %d, %v): the test proves nothing", status, err)
	}
	if err != nil || status != http.StatusTooEarly {
		t.Errorf("POST as early data: status %d, %v; want 425", status, err)
	}
	if seen := g.nodeRequestsWith(id); len(seen) != 0 {
		t.Errorf("the node received the early-data request %d time(s), want never", len(seen))
	}
}
