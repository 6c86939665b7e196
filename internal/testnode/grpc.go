package testnode

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Response header metadata keys that report the authenticated client.
const (
	SubjectHeader     = "x-testnode-client-subject"     // the certificate's Subject.String()
	FingerprintHeader = "x-testnode-client-fingerprint" // lower-case hex SHA-256 of its DER
)

// AuthFailedMessage is the status message of a refused call, as at the node.
const AuthFailedMessage = "TLS client certificate authentication failed"

// Call is one gRPC call the node accepted.
type Call struct {
	Method      string      // full method, e.g. /grpc.testing.TestService/UnaryCall
	Subject     string      // empty when no header was sent and CertHeaderOptional is set
	Fingerprint string      // lower-case hex SHA-256 of the certificate's DER
	Metadata    metadata.MD // the request metadata as received
	Time        time.Time
}

// GRPCCalls returns the accepted gRPC calls, oldest first. Refused calls are
// not recorded (they are logged through Options.Logf).
func (n *Node) GRPCCalls() []Call { return n.calls.snapshot() }

// newGRPCServer returns a plaintext gRPC server whose every call passes the
// certificate header check first. grpc.Server on a bare TCP listener speaks
// HTTP/2 with prior knowledge (h2c), as the node's port does behind a proxy.
func (n *Node) newGRPCServer() *grpc.Server {
	s := grpc.NewServer(grpc.UnaryInterceptor(n.unaryAuth), grpc.StreamInterceptor(n.streamAuth))
	testgrpc.RegisterTestServiceServer(s, testService{})
	return s
}

// unaryAuth authenticates a unary call before running it.
func (n *Node) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	header, err := n.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := grpc.SetHeader(ctx, header); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamAuth authenticates a streaming call before running it.
func (n *Node) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	header, err := n.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if err := ss.SetHeader(header); err != nil {
		return err
	}
	return handler(srv, ss)
}

// authenticate reads the certificate header as the node does, records the
// call and returns the response header metadata that reports the identity.
func (n *Node) authenticate(ctx context.Context, method string) (metadata.MD, error) {
	in, _ := metadata.FromIncomingContext(ctx)
	call := Call{Method: method, Metadata: in.Copy(), Time: time.Now()}
	values := in.Get(n.opts.CertHeader)
	if len(values) == 0 && n.opts.CertHeaderOptional {
		n.accept(call)
		return metadata.MD{}, nil
	}
	cert, err := ParseCertHeader(values)
	if err != nil {
		n.opts.Logf("grpc %s refused: %v", method, err)
		return nil, status.Error(codes.Unauthenticated, AuthFailedMessage)
	}
	call.Subject, call.Fingerprint = cert.Subject.String(), Fingerprint(cert)
	n.accept(call)
	return metadata.Pairs(SubjectHeader, call.Subject, FingerprintHeader, call.Fingerprint), nil
}

// accept records and logs an authenticated call.
func (n *Node) accept(call Call) {
	n.calls.add(call)
	n.opts.Logf("grpc %s subject=%q fingerprint=%s", call.Method, call.Subject, call.Fingerprint)
}

// Fingerprint is the lower-case hex SHA-256 of the certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}
