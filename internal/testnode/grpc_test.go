package testnode

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// dial returns a TestService client speaking h2c to n's gRPC listener.
func dial(t *testing.T, n *Node) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// callContext is a bounded context carrying each of values as one copy of
// the certificate header.
func callContext(t *testing.T, header string, values ...string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	for _, v := range values {
		ctx = metadata.AppendToOutgoingContext(ctx, header, v)
	}
	return ctx
}

// identify makes one call and returns the response header metadata.
type identify func(context.Context, testgrpc.TestServiceClient) (metadata.MD, error)

// identifyUnary identifies with EmptyCall.
func identifyUnary(ctx context.Context, c testgrpc.TestServiceClient) (metadata.MD, error) {
	var header metadata.MD
	_, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&header))
	return header, err
}

// identifyStream identifies with a FullDuplexCall that sends nothing.
func identifyStream(ctx context.Context, c testgrpc.TestServiceClient) (metadata.MD, error) {
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.Header()
}

// checkIdentity fails t unless header reports cert.
func checkIdentity(t *testing.T, header metadata.MD, cert *x509.Certificate) {
	t.Helper()
	subject, fingerprint := header.Get(SubjectHeader), header.Get(FingerprintHeader)
	if len(subject) != 1 || subject[0] != cert.Subject.String() || len(fingerprint) != 1 || fingerprint[0] != Fingerprint(cert) {
		t.Errorf("header reports %v %v, want %q %q", subject, fingerprint, cert.Subject, Fingerprint(cert))
	}
}

// checkRefused fails t unless err is the node's refusal.
func checkRefused(t *testing.T, err error) {
	t.Helper()
	if s := status.Convert(err); s.Code() != codes.Unauthenticated || s.Message() != AuthFailedMessage {
		t.Errorf("got %v, want Unauthenticated %q", err, AuthFailedMessage)
	}
}

// checkCall fails t unless the last recorded call is method by cert.
func checkCall(t *testing.T, n *Node, method string, cert *x509.Certificate) {
	t.Helper()
	calls := n.GRPCCalls()
	if len(calls) == 0 {
		t.Fatal("no call recorded")
	}
	c := calls[len(calls)-1]
	if c.Method != method || c.Subject != cert.Subject.String() || c.Fingerprint != Fingerprint(cert) || c.Time.IsZero() {
		t.Errorf("recorded %+v, want %s by %s", c, method, cert.Subject)
	}
}

func TestGRPCUnary(t *testing.T) {
	n := startNode(t, Options{})
	cert := newCert(t, "node-a")
	ctx := callContext(t, DefaultCertHeader, escapedPEM(cert))
	var header metadata.MD
	resp, err := dial(t, n).UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 1234}, grpc.Header(&header))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetPayload().GetBody()); got != 1234 {
		t.Errorf("payload of %d bytes, want 1234", got)
	}
	checkIdentity(t, header, cert)
	checkCall(t, n, "/grpc.testing.TestService/UnaryCall", cert)
}

// TestGRPCFullDuplex exchanges several messages each way on one open stream:
// each answer arrives before the next request is sent.
func TestGRPCFullDuplex(t *testing.T) {
	n := startNode(t, Options{})
	cert := newCert(t, "node-a")
	stream, err := dial(t, n).FullDuplexCall(callContext(t, DefaultCertHeader, base64DER(cert)))
	if err != nil {
		t.Fatal(err)
	}
	for i := int32(1); i <= 5; i++ {
		sizes := []int32{i, 100 * i}
		if err := stream.Send(outputRequestOf(sizes...)); err != nil {
			t.Fatal(err)
		}
		recvSizes(t, stream, sizes...)
	}
	header, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, header, cert)
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	checkCall(t, n, "/grpc.testing.TestService/FullDuplexCall", cert)
}

// outputRequestOf asks for one response per size.
func outputRequestOf(sizes ...int32) *outputRequest {
	req := &outputRequest{}
	for _, size := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: size})
	}
	return req
}

// recvSizes receives one response per size and checks its payload size.
func recvSizes(t *testing.T, stream interface {
	Recv() (*outputResponse, error)
}, sizes ...int32) {
	t.Helper()
	for _, want := range sizes {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := len(resp.GetPayload().GetBody()); got != int(want) {
			t.Fatalf("payload of %d bytes, want %d", got, want)
		}
	}
}

// TestGRPCCertHeader sends every header case over a real connection, on a
// unary and on a streaming call: accepted ones are reported and recorded,
// the others refused as at the node and not recorded.
func TestGRPCCertHeader(t *testing.T) {
	n := startNode(t, Options{})
	client := dial(t, n)
	for _, tc := range headerCases(t) {
		if tc.notOnWire {
			continue
		}
		for kind, call := range map[string]identify{"unary": identifyUnary, "stream": identifyStream} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				n.Reset()
				header, err := call(callContext(t, DefaultCertHeader, tc.values...), client)
				if tc.want == nil {
					checkRefused(t, err)
					if calls := n.GRPCCalls(); len(calls) != 0 {
						t.Errorf("refused call recorded: %+v", calls)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				checkIdentity(t, header, tc.want)
			})
		}
	}
}

func TestGRPCCertHeaderName(t *testing.T) {
	n := startNode(t, Options{CertHeader: "X-Client-Cert"})
	client, cert := dial(t, n), newCert(t, "node-a")
	header, err := identifyUnary(callContext(t, "x-client-cert", escapedPEM(cert)), client)
	if err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, header, cert)
	_, err = identifyUnary(callContext(t, DefaultCertHeader, escapedPEM(cert)), client)
	checkRefused(t, err)
}

// TestGRPCCertHeaderOptional serves calls without the header, but still
// refuses a header that does not parse.
func TestGRPCCertHeaderOptional(t *testing.T) {
	n := startNode(t, Options{CertHeaderOptional: true})
	client := dial(t, n)
	header, err := identifyUnary(callContext(t, DefaultCertHeader), client)
	if err != nil {
		t.Fatal(err)
	}
	if len(header.Get(SubjectHeader)) != 0 {
		t.Errorf("identity reported without a certificate: %v", header)
	}
	if calls := n.GRPCCalls(); len(calls) != 1 || calls[0].Subject != "" {
		t.Errorf("recorded %+v, want one call without identity", calls)
	}
	_, err = identifyUnary(callContext(t, DefaultCertHeader, "garbage"), client)
	checkRefused(t, err)
}

func TestGRPCStreamingOutputCall(t *testing.T) {
	n := startNode(t, Options{CertHeaderOptional: true})
	req := outputRequestOf(3, 5, 7)
	req.ResponseParameters[1].IntervalUs = 1000
	stream, err := dial(t, n).StreamingOutputCall(callContext(t, DefaultCertHeader), req)
	if err != nil {
		t.Fatal(err)
	}
	recvSizes(t, stream, 3, 5, 7)
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last response: %v, want EOF", err)
	}
}

func TestGRPCStreamingInputCall(t *testing.T) {
	n := startNode(t, Options{CertHeaderOptional: true})
	stream, err := dial(t, n).StreamingInputCall(callContext(t, DefaultCertHeader))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{10, 20, 30} {
		if err := stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, size)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil || resp.GetAggregatedPayloadSize() != 60 {
		t.Fatalf("got %v, %v; want aggregated size 60", resp, err)
	}
}

func TestGRPCHalfDuplexCall(t *testing.T) {
	n := startNode(t, Options{CertHeaderOptional: true})
	stream, err := dial(t, n).HalfDuplexCall(callContext(t, DefaultCertHeader))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int32{1, 2, 3} {
		if err := stream.Send(outputRequestOf(size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	recvSizes(t, stream, 1, 2, 3)
}

func TestGRPCEchoStatusAndBadSize(t *testing.T) {
	n := startNode(t, Options{CertHeaderOptional: true})
	client, ctx := dial(t, n), callContext(t, DefaultCertHeader)
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Aborted), Message: "asked"}})
	if s := status.Convert(err); s.Code() != codes.Aborted || s.Message() != "asked" {
		t.Errorf("echo status: %v", err)
	}
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: MaxPayloadSize + 1})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("oversized payload: %v, want InvalidArgument", err)
	}
}

// TestCloseEndsStreams shows Close does not wait for open streams.
func TestCloseEndsStreams(t *testing.T) {
	n := startNode(t, Options{CertHeaderOptional: true})
	stream, err := dial(t, n).FullDuplexCall(callContext(t, DefaultCertHeader))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(outputRequestOf(1)); err != nil {
		t.Fatal(err)
	}
	recvSizes(t, stream, 1)
	n.Close()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Close: %v, want Unavailable", err)
	}
}

func TestStartBusyAddress(t *testing.T) {
	n := startNode(t, Options{})
	if _, err := Start(Options{GRPCAddr: n.GRPCAddr()}); err == nil {
		t.Fatal("started on a busy address")
	}
}
