package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// timeoutsCaddyfile has the server timeouts of the shipped Caddyfiles, with a short body
// deadline: a public site whose request bodies must arrive within {{.ReadBody}}, and a gRPC
// port whose streams are never cut for being quiet.
const timeoutsCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers 127.0.0.1:{{.GRPC}} {
		protocols h1 h2
		timeouts {
			read_header 10s
			read_body_idle -1s
			idle 5m
		}
	}
	servers {
		protocols h1 h2
		timeouts {
			read_header 10s
			read_body {{.ReadBody}}
			idle 5m
		}
	}
}

https://localhost:{{.Public}} {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key
	request_body {
		max_size 1MB
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
	reverse_proxy h2c://{{.NodeGRPC}} {
		flush_interval -1
		transport http {
			read_timeout 0
			write_timeout 0
		}
	}
}
`

// bodyDeadline is the public site's body deadline in TestRequestBodyDeadline.
const bodyDeadline = 2 * time.Second

// TestRequestBodyDeadline proves the server timeouts of the shipped Caddyfiles through the
// binary. Public site: 20 HTTP/2 requests on one connection and one HTTP/1.1 request, each
// sending its body one byte every 300 ms, are cut once the body deadline has passed: the node's
// handlers, blocked reading those bodies, are released long before the clients would have
// finished (the node has no body timeout of its own). gRPC port: a bidirectional stream that
// stays quiet for twice that deadline still works afterwards.
func TestRequestBodyDeadline(t *testing.T) {
	t.Parallel()
	node, err := testnode.Start(testnode.Options{CertHeaderOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	pki := newPKI(t, "e2e timeouts CA")
	settings := struct {
		Admin, Public, GRPC  int
		Dir, ReadBody        string
		NodePublic, NodeGRPC string
	}{
		Admin: e2ebin.FreePort(t), Public: e2ebin.FreePort(t), GRPC: e2ebin.FreePort(t),
		Dir: t.TempDir(), ReadBody: bodyDeadline.String(),
		NodePublic: strings.TrimPrefix(node.PublicURL(), "http://"), NodeGRPC: node.GRPCAddr(),
	}
	cfgPath := writeGatewayDir(t, settings.Dir, serverFiles(t, pki, nil), timeoutsCaddyfile, settings)
	client := pki.client(t, "quiet-peer")
	clientTLS := withClientCert(&tls.Config{RootCAs: pki.pool, ServerName: "localhost"}, client)
	publicAddr, grpcAddr := "127.0.0.1:"+strconv.Itoa(settings.Public), "127.0.0.1:"+strconv.Itoa(settings.GRPC)
	e2ebin.Start(t, binPath, cfgPath, func() bool {
		return tlsReady(publicAddr, clientTLS) && tlsReady(grpcAddr, clientTLS)
	})

	t.Run("public bodies that trickle", func(t *testing.T) {
		t.Parallel()
		const streams = 20
		trickleFor := 15 * time.Second // far past the deadline: the gateway must cut first
		ctx, cancel := context.WithTimeout(context.Background(), trickleFor)
		defer cancel()
		h2 := &http.Transport{TLSClientConfig: clientTLS.Clone(), ForceAttemptHTTP2: true}
		h1 := &http.Transport{TLSClientConfig: clientTLS.Clone(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		for _, tr := range []*http.Transport{h1, h2} {
			tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, publicAddr)
			}
			defer tr.CloseIdleConnections()
		}
		id := uuid.NewString()
		var answered atomic.Int32
		start := time.Now()
		send := func(tr *http.Transport, path, proto string) {
			body, w := io.Pipe()
			go func() { // one byte every 300 ms until the request is over
				defer w.Close()
				for ctx.Err() == nil {
					if _, err := w.Write([]byte{'x'}); err != nil {
						return
					}
					time.Sleep(300 * time.Millisecond)
				}
			}()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://localhost"+path, body)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != map[string]int{"h1": 1, "h2": 2}[proto] {
					t.Errorf("%s: answered over HTTP/%d", path, resp.ProtoMajor)
				}
				if resp.StatusCode < 400 {
					t.Errorf("%s: status %d for a body cut short, want an error", path, resp.StatusCode)
				}
			}
			body.Close()
			answered.Add(1)
		}
		for i := range streams {
			go send(h2, fmt.Sprintf("/iam/trickle/%s/h2-%d", id, i), "h2")
		}
		go send(h1, fmt.Sprintf("/iam/trickle/%s/h1", id), "h1")

		// The node records a request once its handler has finished reading the body.
		released := func() int {
			n := 0
			for _, r := range node.Requests() {
				if strings.HasPrefix(r.Path, "/iam/trickle/"+id+"/") {
					n++
				}
			}
			return n
		}
		eventually(t, 4*bodyDeadline, fmt.Sprintf("the node still holds trickling requests (%d of %d released)", released(), streams+1), func() bool {
			return released() == streams+1 && answered.Load() == streams+1
		})
		if since := time.Since(start); since >= trickleFor {
			t.Errorf("the requests ended after %s, when the clients stopped sending, not at the gateway's deadline", since)
		}
		for _, r := range node.Requests() {
			if strings.HasPrefix(r.Path, "/iam/trickle/"+id+"/") && r.BodySize > int64(4*bodyDeadline/(300*time.Millisecond)) {
				t.Errorf("%s: the node read %d bytes of body, more than a body cut at the deadline holds", r.Path, r.BodySize)
			}
		}
	})

	t.Run("quiet gRPC stream", func(t *testing.T) {
		t.Parallel()
		conn, err := grpc.NewClient("passthrough:///localhost:"+strconv.Itoa(settings.GRPC),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", grpcAddr)
			}),
			grpc.WithTransportCredentials(credentials.NewTLS(clientTLS.Clone())))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(ctx)
		if err != nil {
			t.Fatalf("FullDuplexCall: %v", err)
		}
		if err := exchange(stream, 16); err != nil {
			t.Fatalf("first exchange: %v", err)
		}
		time.Sleep(2 * bodyDeadline)
		if err := exchange(stream, 16); err != nil {
			t.Fatalf("exchange after %s of quiet: %v (the gRPC port must not cut quiet streams)", 2*bodyDeadline, err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Errorf("end of stream: %v, want io.EOF", err)
		}
	})
}
