package e2e

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// streamExchanges and streamPause shape the bidi stream: this many messages each way, with this
// pause between them, so the stream stays open for a while.
const (
	streamExchanges = 5
	streamPause     = 200 * time.Millisecond
)

// exchange sends one FullDuplexCall request asking for a payload of size bytes and receives it.
func exchange(stream testgrpc.TestService_FullDuplexCallClient, size int32) error {
	req := &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: size}},
	}
	if err := stream.Send(req); err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if got := len(resp.GetPayload().GetBody()); got != int(size) {
		return errors.New("payload of wrong size")
	}
	return nil
}

// expectCode asserts err is a gRPC status with code want.
func expectCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// TestGRPC proves the gRPC port end to end with a grpc-go client: a unary call reaches the node
// with the client's certificate in exactly one x-ssl-cert (the node reports the client's
// subject), even when the client sends its own x-ssl-cert; a bidi stream stays open for
// several exchanges with pauses, also across the denial of another client; a denied client gets PERMISSION_DENIED and never reaches the
// node; and denying a client through the admin API ends its open stream within 1 s, whether
// the client is sending on it or only listening.
func TestGRPC(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, n2nRate, grpcRate)

	t.Run("unary", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "grpc-unary")
		cl := g.grpcAs(t, c)
		header, err := cl.unary(t)
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		expectSubject(t, header, c)
		g.expectNodeCallsWithCert(t, cl, 1, c)
	})

	t.Run("client sends x-ssl-cert", func(t *testing.T) {
		t.Parallel()
		c, victim := g.pki.client(t, "grpc-spoofer"), g.pki.client(t, "grpc-victim")
		cl := g.grpcAs(t, c)
		header, err := cl.unary(t, "x-ssl-cert", victim.escapedPEM(), "X_SSL_CERT", victim.escapedPEM())
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		expectSubject(t, header, c)
		g.expectNodeCallsWithCert(t, cl, 1, c)
	})

	t.Run("bidi stream", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "grpc-stream")
		cl := g.grpcAs(t, c)
		stream, err := cl.FullDuplexCall(cl.ctx(t, 10*time.Second))
		if err != nil {
			t.Fatalf("FullDuplexCall: %v", err)
		}
		start := time.Now()
		for i := range streamExchanges {
			if i > 0 {
				time.Sleep(streamPause) // pacing: the stream must stay open across pauses
			}
			if i == 2 { // denying someone else must not touch this stream
				g.changeDeny(t, http.MethodPost, g.pki.client(t, "grpc-stream-bystander").subject())
			}
			if err := exchange(stream, int32(100+i)); err != nil {
				t.Fatalf("exchange %d after %s: %v", i+1, time.Since(start), err)
			}
		}
		header, err := stream.Header()
		if err != nil {
			t.Fatal(err)
		}
		expectSubject(t, header, c)
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Errorf("after CloseSend: Recv = %v, want io.EOF (status OK)", err)
		}
		g.expectNodeCallsWithCert(t, cl, 1, c)
	})

	t.Run("denied client", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "grpc-denied")
		g.changeDeny(t, http.MethodPost, c.subject())
		cl := g.grpcAs(t, c)
		expectCode(t, "UnaryCall of a denied client", cl.refusedUnary(t), codes.PermissionDenied)
		if calls := g.nodeCalls(cl); len(calls) != 0 {
			t.Errorf("the node accepted %d calls of a denied client", len(calls))
		}
	})

	// A denial must end the client's open stream whether or not the client is sending on it:
	// a peer that only listens must lose its stream too.
	for _, tc := range []struct {
		name    string
		sending bool
	}{
		{"deny ends open stream, client idle", false},
		{"deny ends open stream, client sending", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := g.pki.client(t, "grpc-cut-"+strconv.FormatBool(tc.sending))
			cl := g.grpcAs(t, c)
			ctx := cl.ctx(t, 10*time.Second)
			stream, err := cl.FullDuplexCall(ctx)
			if err != nil {
				t.Fatalf("FullDuplexCall: %v", err)
			}
			if err := exchange(stream, 10); err != nil {
				t.Fatalf("first exchange: %v", err)
			}
			ended := make(chan error, 1)
			go func() { // receives until the stream ends
				for {
					if _, err := stream.Recv(); err != nil {
						ended <- err
						return
					}
				}
			}()
			if tc.sending {
				go func() { // sends every 100 ms until the stream or the test ends
					req := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}}}
					for stream.Send(req) == nil && ctx.Err() == nil {
						time.Sleep(100 * time.Millisecond)
					}
				}()
			}

			denied := time.Now()
			g.changeDeny(t, http.MethodPost, c.subject())
			select {
			case err := <-ended:
				t.Logf("stream ended %s after the denial: %v", time.Since(denied).Round(time.Millisecond), err)
			case <-time.After(time.Second):
				t.Errorf("stream still open 1 s after the client was denied")
			}
			expectCode(t, "UnaryCall after the denial", cl.refusedUnary(t), codes.PermissionDenied)
		})
	}
}

// refusedUnary makes a UnaryCall that the gateway is expected to refuse, and returns its error.
// The call waits for a connection and is made again (at most 5 times) while it fails with
// Unavailable: the deny of a parallel subtest sweeps the denied client's connections, a fresh
// one included whose call has not reached mtls_ident yet, and grpc-go then reports the closed
// connection, not the refusal.
func (c *grpcClient) refusedUnary(t *testing.T) error {
	t.Helper()
	var err error
	for range 5 {
		_, err = c.UnaryCall(c.ctx(t, 10*time.Second), &testgrpc.SimpleRequest{ResponseSize: 16}, grpc.WaitForReady(true))
		if status.Code(err) != codes.Unavailable {
			return err
		}
	}
	return err
}

// expectNodeCallsWithCert asserts the node accepted n calls of cl, each with exactly one
// x-ssl-cert value that the node's parser reads back to c.
func (g *mtlsGateway) expectNodeCallsWithCert(t *testing.T, cl *grpcClient, n int, c *leafCert) {
	t.Helper()
	calls := g.nodeCalls(cl)
	if len(calls) != n {
		t.Errorf("the node accepted %d calls, want %d", len(calls), n)
	}
	for _, call := range calls {
		vals := call.Metadata.Get(testnode.DefaultCertHeader)
		cert, err := testnode.ParseCertHeader(vals)
		if err != nil || !cert.Equal(c.leaf) {
			t.Errorf("the node got x-ssl-cert %.120q (%v), want exactly the client's certificate", vals, err)
		}
		if call.Fingerprint != c.fingerprint() {
			t.Errorf("the node identified fingerprint %s, want %s", call.Fingerprint, c.fingerprint())
		}
	}
}
