package e2e

import (
	"crypto/x509/pkix"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestN2NForwarding proves that on /n2n a verified client reaches the node with exactly one
// X-SSL-CERT, its own certificate as URL-escaped PEM that the node's parser reads, whatever
// certificate headers the client sends itself; that /n2n refuses a request without a client
// certificate (401) even when it carries a forged header; and that /public, which does not
// require a certificate, passes such a request on without any certificate header.
func TestN2NForwarding(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, n2nRate, grpcRate)
	forged := g.pki.client(t, "forged-victim") // a certificate a client pretends to hold

	t.Run("verified client", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "fwd-plain")
		path := n2nPath("fwd")
		expectStatus(t, "GET "+path, g.get(t, c, path, nil), http.StatusOK)
		g.expectForwarded(t, path, c)
	})

	spoofs := []struct {
		name   string
		header http.Header
	}{
		{"X-SSL-CERT", http.Header{"X-SSL-CERT": {forged.escapedPEM()}}},
		{"x-ssl-cert", http.Header{"x-ssl-cert": {forged.escapedPEM()}}},
		{"X_SSL_CERT", http.Header{"X_SSL_CERT": {forged.escapedPEM()}}},
		{"all three, twice each", http.Header{
			"X-SSL-CERT": {forged.escapedPEM(), forged.escapedPEM()},
			"x-ssl-cert": {forged.escapedPEM(), forged.escapedPEM()},
			"X_SSL_CERT": {forged.escapedPEM(), forged.escapedPEM()},
		}},
	}
	for i, s := range spoofs {
		t.Run("client sends "+s.name, func(t *testing.T) {
			t.Parallel()
			c := g.pki.client(t, "fwd-spoof-"+string(rune('a'+i)))
			path := n2nPath("spoof")
			expectStatus(t, "GET "+path, g.get(t, c, path, s.header), http.StatusOK)
			g.expectForwarded(t, path, c)
		})
	}

	t.Run("no certificate, forged header", func(t *testing.T) {
		t.Parallel()
		path := n2nPath("nocert")
		expectStatus(t, "GET "+path, g.get(t, nil, path, spoofs[3].header), http.StatusUnauthorized)
		g.expectNodeSawNothing(t, path)
	})

	t.Run("/public, no certificate, forged header", func(t *testing.T) {
		t.Parallel()
		path := "/public/probe/" + uuid.NewString()
		expectStatus(t, "GET "+path, g.get(t, nil, path, spoofs[3].header), http.StatusOK)
		reqs := g.nodeRequests(path)
		if len(reqs) != 1 {
			t.Fatalf("the node received %d requests for %s, want 1", len(reqs), path)
		}
		if vals := certHeaderValues(reqs[0].Header); len(vals) != 0 {
			t.Errorf("the node received certificate header values %.120q, want none", vals)
		}
	})
}

// TestN2NClientCertificates proves which client certificates /n2n refuses, and that the node
// never sees a refused request: one from an untrusted CA (even with the subject of a trusted
// client) or an expired one fails the TLS handshake or the request; one whose subject holds
// two CNs gets 403; the client the route denies inline gets 403.
func TestN2NClientCertificates(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, n2nRate, grpcRate)
	untrusted := newPKI(t, "e2e untrusted CA")

	cases := []struct {
		name string
		cert func(t *testing.T) *leafCert
		want int // HTTP status; -1: the handshake or the request fails
	}{
		{"trusted", func(t *testing.T) *leafCert { return g.pki.client(t, "cert-trusted") }, http.StatusOK},
		{"untrusted CA, subject of a trusted client", func(t *testing.T) *leafCert {
			return untrusted.client(t, "cert-trusted")
		}, -1},
		{"expired", func(t *testing.T) *leafCert {
			tmpl := clientTemplate(testName("cert-expired"))
			tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
			return g.pki.issue(t, tmpl)
		}, -1},
		{"not yet valid", func(t *testing.T) *leafCert {
			tmpl := clientTemplate(testName("cert-future"))
			tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(time.Hour), time.Now().Add(48*time.Hour)
			return g.pki.issue(t, tmpl)
		}, -1},
		{"two CNs", func(t *testing.T) *leafCert {
			tmpl := clientTemplate(pkix.Name{})
			tmpl.RawSubject = rawSubject(t,
				pkix.AttributeTypeAndValue{Type: oidO, Value: "Test"},
				pkix.AttributeTypeAndValue{Type: oidCN, Value: "cert-two-a"},
				pkix.AttributeTypeAndValue{Type: oidCN, Value: "cert-two-b"})
			return g.pki.issue(t, tmpl)
		}, http.StatusForbidden},
		{"denied inline", func(t *testing.T) *leafCert { return g.pki.client(t, inlineDeniedCN) }, http.StatusForbidden},
		{"server certificate (no clientAuth usage)", func(t *testing.T) *leafCert { return g.pki.server(t) }, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.cert(t)
			path := n2nPath("cert")
			r := g.get(t, c, path, nil)
			switch {
			case tc.want == http.StatusOK:
				expectStatus(t, "GET "+path, r, http.StatusOK)
				g.expectForwarded(t, path, c)
				return
			case tc.want == -1 && r.err == nil:
				t.Errorf("GET %s: got %s, want the handshake or request to fail", path, r)
			case tc.want != -1:
				expectStatus(t, "GET "+path, r, tc.want)
			}
			g.expectNodeSawNothing(t, path)
		})
	}
}
