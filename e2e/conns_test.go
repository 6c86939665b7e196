package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestDenyClosesConnections proves that denying a client closes the connections it holds even
// while they are idle: an HTTP/2 connection of a gRPC client between calls, and an HTTP/1.1
// keep-alive connection between requests. A denied peer does not keep its connection.
func TestDenyClosesConnections(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, relaxedRate, relaxedRate)

	t.Run("gRPC connection between calls", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "conn-grpc")
		closed := make(chan struct{})
		addr := g.addr(g.GRPC)
		cl := g.dialGRPC(t, "localhost:"+strconv.Itoa(g.GRPC),
			grpc.WithTransportCredentials(credentials.NewTLS(g.tlsConfig(c))),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				return &watchedConn{Conn: conn, closed: closed}, nil
			}))
		if _, err := cl.unary(t); err != nil {
			t.Fatalf("UnaryCall before the denial: %v", err)
		}
		denied := time.Now()
		g.changeDeny(t, http.MethodPost, c.subject())
		select {
		case <-closed:
			t.Logf("connection closed %s after the denial", time.Since(denied).Round(time.Millisecond))
		case <-time.After(time.Second):
			t.Fatal("the idle gRPC connection of a denied client is still open 1 s after the denial")
		}
	})

	t.Run("HTTP/1.1 keep-alive connection between requests", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "conn-http1")
		ended := g.openIdleH1(t, c)
		denied := time.Now()
		g.changeDeny(t, http.MethodPost, c.subject())
		var err error
		select {
		case err = <-ended:
		case <-time.After(time.Second):
			t.Fatal("the idle keep-alive connection of a denied client is still open 1 s after the denial")
		}
		t.Logf("connection closed %s after the denial: %v", time.Since(denied).Round(time.Millisecond), err)
	})

	// A request in flight when its client is denied gets no answer: its connection is closed.
	// A status (such as the 499 the proxy gives a cancelled request) would read as the node's.
	t.Run("HTTP/1.1 request in flight", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "conn-inflight")
		conn := g.dialH1(t, c)
		// a request whose body is still being sent: the proxy is in it until the body ends
		head := "POST " + n2nPath("inflight") + " HTTP/1.1\r\nHost: localhost:" + strconv.Itoa(g.N2N) + "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
		if _, err := conn.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		admitted := sample(metricClientReqs, "client", c.subject())
		eventually(t, 5*time.Second, "the in-flight request was not let through", func() bool {
			return scrapeMetricsAt(t, g.addr(g.Admin), metricClientReqs)[admitted] == 1
		})
		g.changeDeny(t, http.MethodPost, c.subject())
		if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the in-flight request of a denied client is still open 1 s after the denial")
		}
		if len(got) != 0 {
			t.Errorf("the in-flight request of a denied client was answered, want its connection closed: %.200q", got)
		}
	})
}

// TestDenyClosesSilentConnections proves that denying a client also closes the connections on
// which it finished the TLS handshake, with its certificate, but never sent a request: on the n2n
// port (client certificate verified if given) and on the gRPC port (required), while the same
// silent connections of a client that is not denied stay open.
func TestDenyClosesSilentConnections(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, relaxedRate, relaxedRate)
	denied, kept := g.pki.client(t, "silent-denied"), g.pki.client(t, "silent-kept")
	type silent struct {
		what string
		conn *tls.Conn
	}
	var deniedConns, keptConns []silent
	for _, site := range []struct {
		what string
		port int
		alpn string
	}{{"n2n port, HTTP/1.1", g.N2N, "http/1.1"}, {"gRPC port, HTTP/2", g.GRPC, "h2"}} {
		for _, c := range []*leafCert{denied, kept} {
			cfg := g.tlsConfig(c)
			cfg.NextProtos = []string{site.alpn}
			conn, err := tls.Dial("tcp", g.addr(site.port), cfg)
			if err != nil {
				t.Fatalf("%s: handshake of %s: %v", site.what, c.subject(), err)
			}
			t.Cleanup(func() { conn.Close() })
			if c == denied {
				deniedConns = append(deniedConns, silent{site.what, conn})
			} else {
				keptConns = append(keptConns, silent{site.what, conn})
			}
		}
	}
	before := len(g.node.Requests())
	g.changeDeny(t, http.MethodPost, denied.subject())
	var wg sync.WaitGroup
	for _, s := range deniedConns {
		wg.Go(func() {
			if err := readUntilEnd(s.conn, time.Second); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: the silent connection of a denied client is still open 1 s after the denial", s.what)
			} else {
				t.Logf("%s: the denied client's silent connection ended: %v", s.what, err)
			}
		})
	}
	for _, s := range keptConns {
		wg.Go(func() {
			if err := readUntilEnd(s.conn, time.Second); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: the silent connection of a client that is not denied ended: %v", s.what, err)
			}
		})
	}
	wg.Wait()
	if logged := strings.Count(g.Logs.String(), "closed a denied client's connection after its handshake"); logged != len(deniedConns) {
		t.Errorf("the gateway logged %d closes of a denied client's silent connection, want %d", logged, len(deniedConns))
	}
	if after := len(g.node.Requests()); after != before {
		t.Errorf("the node received %d requests, want none", after-before)
	}
}

// readUntilEnd reads and discards what conn receives until a read fails or d has passed, and
// returns the error that ended it (os.ErrDeadlineExceeded if the connection stayed open).
func readUntilEnd(conn net.Conn, d time.Duration) error {
	if err := conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			return err
		}
	}
}

// watchedConn closes closed when the connection ends: a read fails, or the client's TLS layer,
// having read the server's close_notify, closes it. The test closes it only at its end.
type watchedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.ended()
	}
	return n, err
}

func (w *watchedConn) Close() error {
	w.ended()
	return w.Conn.Close()
}

func (w *watchedConn) ended() { w.once.Do(func() { close(w.closed) }) }
