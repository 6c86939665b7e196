// Command nuts-testnode is a stand-in for a Nuts node, for the quick start and
// for tests. It is NOT a Nuts node and implements none of its APIs.
//
// It listens where a node behind a TLS-offloading gateway would: a public
// HTTP port (the node's :8080), an internal one (:8081) and a plaintext
// HTTP/2 (h2c) gRPC port (:5555). HTTP requests are answered 200 with a JSON
// echo of listener, method and path, and, when the request carries the
// certificate header, the subject and SHA-256 fingerprint of the certificate
// in it (cert_subject, cert_fingerprint; cert_error if it is unreadable, read
// the node's way). gRPC serves grpc-go's interop
// TestService and authenticates the forwarded client certificate header
// exactly as the node does, refusing calls without a valid one
// (Unauthenticated) and reporting the client's subject and fingerprint in
// response header metadata. Every request and call is logged as one line to
// stdout.
//
// Usage:
//
//	nuts-testnode [--public 127.0.0.1:8080] [--internal 127.0.0.1:8081]
//	              [--grpc 127.0.0.1:5555] [--cert-header x-ssl-cert]
//	              [--cert-header-optional]
//
// It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

func main() {
	logger := log.New(os.Stdout, "", log.LstdFlags|log.Lmicroseconds)
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuts-testnode:", err)
		os.Exit(2)
	}
	opts.Logf = logger.Printf
	if err := run(opts, logger); err != nil {
		fmt.Fprintln(os.Stderr, "nuts-testnode:", err)
		os.Exit(1)
	}
}

// parseFlags turns the command line into node options.
func parseFlags(args []string) (testnode.Options, error) {
	var opts testnode.Options
	fs := flag.NewFlagSet("nuts-testnode", flag.ContinueOnError)
	fs.StringVar(&opts.PublicAddr, "public", "127.0.0.1:8080", "public HTTP listen address (the node's :8080)")
	fs.StringVar(&opts.InternalAddr, "internal", "127.0.0.1:8081", "internal HTTP listen address (the node's :8081)")
	fs.StringVar(&opts.GRPCAddr, "grpc", "127.0.0.1:5555", "gRPC (h2c) listen address (the node's :5555)")
	fs.StringVar(&opts.CertHeader, "cert-header", testnode.DefaultCertHeader, "forwarded client certificate header (the node's tls.certheader)")
	fs.BoolVar(&opts.CertHeaderOptional, "cert-header-optional", false, "serve gRPC calls that carry no certificate header")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return opts, nil
}

// run serves until SIGINT or SIGTERM.
func run(opts testnode.Options, logger *log.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	node, err := testnode.Start(opts)
	if err != nil {
		return err
	}
	defer node.Close()
	logger.Printf("nuts-testnode (a stand-in, not a Nuts node): public %s, internal %s, grpc h2c %s, cert header %s",
		node.PublicURL(), node.InternalURL(), node.GRPCAddr(), opts.CertHeader)
	<-ctx.Done()
	logger.Printf("nuts-testnode: stopping")
	return nil
}
