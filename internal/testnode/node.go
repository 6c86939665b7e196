// Package testnode is a stand-in Nuts node for tests and the quick start. It
// is NOT a Nuts node: it implements none of the node's APIs, it only shows
// what a gateway in front of it forwards.
//
// A Node listens on 127.0.0.1 like a node bound to localhost behind a
// TLS-offloading proxy:
//
//   - a public HTTP listener (the node's :8080) and an internal one (:8081)
//     that record every request and answer 200 with a small JSON echo
//     (/status answers "OK");
//   - a gRPC listener (the node's :5555) speaking plaintext HTTP/2 (h2c) and
//     serving grpc-go's interop TestService. Every call first authenticates
//     the forwarded client certificate header the way the node does
//     (ParseCertHeader) and reports the identity it found in response
//     header metadata.
package testnode

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/grpc"
)

// Defaults used for zero-valued Options fields.
const (
	// DefaultCertHeader is the node's usual tls.certheader (X-SSL-CERT), as
	// gRPC metadata keys are lower case.
	DefaultCertHeader = "x-ssl-cert"
	// DefaultMaxBodyBytes is how much of each HTTP request body is recorded.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMaxRecords is how many requests and calls are kept (the latest).
	DefaultMaxRecords = 10000
	defaultAddr       = "127.0.0.1:0"
)

// Options configure a Node. The zero value is ready to use: free ports on
// 127.0.0.1, header x-ssl-cert required on every gRPC call.
type Options struct {
	// PublicAddr, InternalAddr and GRPCAddr are the listen addresses; empty
	// means 127.0.0.1:0 (a free port).
	PublicAddr   string
	InternalAddr string
	GRPCAddr     string
	// CertHeader names the forwarded client certificate header; empty means
	// DefaultCertHeader. Matched case-insensitively.
	CertHeader string
	// CertHeaderOptional serves gRPC calls that carry no certificate header
	// (with an empty identity), for plain tests. A header that is present
	// must still parse. By default the header is required, as at the node.
	CertHeaderOptional bool
	// MaxBodyBytes caps the recorded part of each HTTP body; 0 means
	// DefaultMaxBodyBytes. The rest is read and counted, not kept.
	MaxBodyBytes int64
	// MaxRecords caps the kept requests and calls each; 0 means DefaultMaxRecords.
	MaxRecords int
	// Logf, when set, receives one line per HTTP request and gRPC call,
	// refused calls included.
	Logf func(format string, args ...any)
}

// withDefaults returns o with every zero field given its default.
func (o Options) withDefaults() Options {
	o.PublicAddr = orDefault(o.PublicAddr, defaultAddr)
	o.InternalAddr = orDefault(o.InternalAddr, defaultAddr)
	o.GRPCAddr = orDefault(o.GRPCAddr, defaultAddr)
	o.CertHeader = strings.ToLower(orDefault(o.CertHeader, DefaultCertHeader))
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Node is a running stand-in node. Its methods are safe for concurrent use.
type Node struct {
	opts     Options
	requests recorder[Request]
	calls    recorder[Call]

	public, internal *http.Server
	grpc             *grpc.Server
	addrs            [3]net.Addr // public, internal, gRPC
	wg               sync.WaitGroup
	closeOnce        sync.Once
}

// Start listens on the three addresses and serves until Close.
func Start(opts Options) (*Node, error) {
	opts = opts.withDefaults()
	n := &Node{opts: opts}
	n.requests.max, n.calls.max = opts.MaxRecords, opts.MaxRecords
	lis, err := listenAll(opts.PublicAddr, opts.InternalAddr, opts.GRPCAddr)
	if err != nil {
		return nil, err
	}
	n.public = n.newHTTPServer(ListenerPublic)
	n.internal = n.newHTTPServer(ListenerInternal)
	n.grpc = n.newGRPCServer()
	for i, l := range lis {
		n.addrs[i] = l.Addr()
	}
	n.serve(func() error { return n.public.Serve(lis[0]) })
	n.serve(func() error { return n.internal.Serve(lis[1]) })
	n.serve(func() error { return n.grpc.Serve(lis[2]) })
	return n, nil
}

// listenAll opens a TCP listener per address, or none at all on error.
func listenAll(addrs ...string) ([]net.Listener, error) {
	var lis []net.Listener
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, open := range lis {
				open.Close()
			}
			return nil, fmt.Errorf("testnode: listen on %s: %w", addr, err)
		}
		lis = append(lis, l)
	}
	return lis, nil
}

// serve runs a server loop in the background, logging an unexpected end.
func (n *Node) serve(loop func() error) {
	n.wg.Go(func() {
		err := loop()
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			n.opts.Logf("testnode: server stopped: %v", err)
		}
	})
}

// Close stops every listener at once, ending open connections and gRPC
// streams, and waits for the servers to return. It may be called repeatedly.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		n.public.Close()
		n.internal.Close()
		n.grpc.Stop()
		n.wg.Wait()
	})
}

// PublicURL is the base URL of the public listener, e.g. http://127.0.0.1:8080.
func (n *Node) PublicURL() string { return "http://" + n.addrs[0].String() }

// InternalURL is the base URL of the internal listener.
func (n *Node) InternalURL() string { return "http://" + n.addrs[1].String() }

// GRPCAddr is the host:port of the gRPC (h2c) listener.
func (n *Node) GRPCAddr() string { return n.addrs[2].String() }

// Reset forgets every recorded HTTP request and gRPC call.
func (n *Node) Reset() {
	n.requests.reset()
	n.calls.reset()
}
