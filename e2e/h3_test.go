package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Caddyfile is mtlsCaddyfile with HTTP/3 on.
var h3Caddyfile = strings.Replace(mtlsCaddyfile, "protocols h1 h2\n", "protocols h1 h2 h3\n", 1)

// TestDenyClosesHTTP3Connections proves that denying a client closes its HTTP/3 (QUIC)
// connection, not only the request it has open: a client that made a request over HTTP/3 on
// /n2n sees its connection closed by the gateway (H3_REQUEST_REJECTED, "client denied") within
// 1 s of the denial, a new request on it fails with that connection error instead of getting an
// answer, and the node sees no request after the denial.
func TestDenyClosesHTTP3Connections(t *testing.T) {
	t.Parallel()
	if !strings.Contains(h3Caddyfile, "protocols h1 h2 h3") {
		t.Fatal("the HTTP/3 configuration does not turn HTTP/3 on")
	}
	g := startMTLSGatewayWith(t, h3Caddyfile, relaxedRate, relaxedRate)
	c := g.pki.client(t, "h3-denied")
	cfg := g.tlsConfig(c)
	cfg.NextProtos = []string{http3.NextProtoH3}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var qc *quic.Conn
	eventually(t, 5*time.Second, "no QUIC connection to the gateway's HTTP/3 listener", func() bool {
		var err error
		qc, err = quic.DialAddr(ctx, g.addr(g.N2N), cfg, &quic.Config{})
		return err == nil
	})
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	cc := (&http3.Transport{}).NewClientConn(qc)
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://localhost:"+strconv.Itoa(g.N2N)+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cc.RoundTrip(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}

	path := n2nPath("h3")
	resp, err := get(path)
	if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 3 {
		t.Fatalf("request over HTTP/3 before the denial: %v %v, want 200 over HTTP/3", resp, err)
	}
	g.expectForwarded(t, path, c)

	denied := time.Now()
	g.changeDeny(t, http.MethodPost, c.subject())
	select {
	case <-qc.Context().Done():
		t.Logf("QUIC connection closed %s after the denial", time.Since(denied).Round(time.Millisecond))
	case <-time.After(time.Second):
		t.Fatal("the HTTP/3 connection of a denied client is still open 1 s after the denial")
	}
	var appErr *quic.ApplicationError
	if cause := context.Cause(qc.Context()); !errors.As(cause, &appErr) || !appErr.Remote ||
		appErr.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeRequestRejected) || appErr.ErrorMessage != "client denied" {
		t.Errorf("the connection ended with %v, want the gateway's H3_REQUEST_REJECTED \"client denied\"", cause)
	}

	after := n2nPath("h3-after")
	if resp, err := get(after); err == nil {
		t.Errorf("a new request on the closed connection got %d, want a connection error", resp.StatusCode)
	}
	g.expectNodeSawNothing(t, after)
}
