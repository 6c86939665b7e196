package h3conn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// wrapped is a response writer wrapper such as Caddy's.
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type connKey struct{}

// Of finds the very connection that the server's ConnContext hook was given,
// through wrappers too, and nothing for a response that is not HTTP/3.
func TestOf(t *testing.T) {
	type found struct {
		want, direct, viaWrapper *quic.Conn
		err                      error
	}
	results := make(chan found, 2)
	url, client := serve(t, func(ctx context.Context, c *quic.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var f found
		f.want, _ = r.Context().Value(connKey{}).(*quic.Conn)
		var err1, err2 error
		f.direct, err1 = Of(w)
		f.viaWrapper, err2 = Of(wrapped{wrapped{w}})
		if f.err = err1; f.err == nil {
			f.err = err2
		}
		results <- f
	}))
	for range 2 { // two requests on one connection
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		f := <-results
		if f.err != nil || f.want == nil || f.direct != f.want || f.viaWrapper != f.want {
			t.Fatalf("Of: %p and through wrappers %p (error %v), want the connection %p", f.direct, f.viaWrapper, f.err, f.want)
		}
	}

	if c, err := Of(httptest.NewRecorder()); c != nil || err != nil {
		t.Fatalf("an HTTP/1 response: %v, %v", c, err)
	}
	if c, err := Of(wrapped{httptest.NewRecorder()}); c != nil || err != nil {
		t.Fatalf("a wrapped HTTP/1 response: %v, %v", c, err)
	}
}

// serve runs an HTTP/3 server on loopback with handler and connContext, and
// returns its URL and a client of it.
func serve(tb testing.TB, connContext func(context.Context, *quic.Conn) context.Context, handler http.Handler) (string, *http.Client) {
	tb.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http3.Server{
		TLSConfig:   http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}}),
		ConnContext: connContext,
		Handler:     handler,
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(pc)
	tb.Cleanup(func() { srv.Close(); pc.Close() })
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	tb.Cleanup(func() { tr.Close() })
	return "https://" + pc.LocalAddr().String() + "/", &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// BenchmarkOf is the per-request cost of finding the QUIC connection of an
// HTTP/3 response behind one wrapper.
func BenchmarkOf(b *testing.B) {
	url, client := serve(b, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = wrapped{w}
		b.ReportAllocs()
		for b.Loop() {
			if c, err := Of(w); c == nil || err != nil {
				b.Error(c, err)
				return
			}
		}
	}))
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
}
