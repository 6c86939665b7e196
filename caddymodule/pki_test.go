package caddymodule

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/nutsgate/nutsgate/pki"
)

func TestPKICaddyfileAdapt(t *testing.T) {
	out, err := adapt(`{
	nutsgate {
		state_dir /var/lib/nutsgate/state
		pki {
			refresh 30m
			max_stale 4h
			fetch_timeout 5s
			crl https://ca.example/a.crl /etc/nutsgate/b.crl
			denylist {
				url https://cdn.example/denylist.jws
				trusted_signer /etc/nutsgate/signer.pem
			}
		}
	}
}
https://localhost:5555 {
	tls internal {
		client_auth {
			mode require_and_verify
			trust_pool file /etc/nutsgate/ca.pem
			verifier nuts_pki
		}
	}
	respond 200
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"nutsgate":{"state_dir":"/var/lib/nutsgate/state","pki":{"refresh":1800000000000,"max_stale":14400000000000,"fetch_timeout":5000000000,"crl":["https://ca.example/a.crl","/etc/nutsgate/b.crl"],"denylist":{"url":"https://cdn.example/denylist.jws","trusted_signer":"/etc/nutsgate/signer.pem"}}}`,
		`"verifiers":[{"verifier":"nuts_pki"}]`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, out)
		}
	}
	off, err := adapt("{\n nutsgate {\n pki {\n max_stale off\n denylist {\n url off\n }\n }\n }\n}\n:80")
	if err != nil || !strings.Contains(off, `"nutsgate":{"pki":{"denylist":{}}}`) {
		t.Errorf("max_stale off, url off: %s, %v", off, err)
	}
	for _, tc := range []struct{ body, err string }{
		{"{\n nutsgate {\n pki {\n refresh 0s\n }\n }\n}\n:80", `refresh: "0s" is not a positive duration`},
		{"{\n nutsgate {\n pki {\n max_stale -1h\n }\n }\n}\n:80", `max_stale: "-1h" is not a positive duration`},
		{"{\n nutsgate {\n pki {\n refresh soon\n }\n }\n}\n:80", `refresh: "soon" is not a positive duration`},
		{"{\n nutsgate {\n pki {\n refresh 1h\n refresh 2h\n }\n }\n}\n:80", "refresh already specified"},
		{"{\n nutsgate {\n pki {\n crl\n }\n }\n}\n:80", "wrong argument count"},
		{"{\n nutsgate {\n pki {\n ocsp on\n }\n }\n}\n:80", `unrecognized pki subdirective "ocsp"`},
		{"{\n nutsgate {\n pki {\n denylist {\n url\n }\n }\n }\n}\n:80", "wrong argument count"},
		{"{\n nutsgate {\n pki {\n denylist {\n signer x\n }\n }\n }\n}\n:80", `unrecognized denylist subdirective "signer"`},
		{"{\n nutsgate {\n pki\n pki\n }\n}\n:80", "pki already specified"},
		{"https://localhost {\n tls internal {\n client_auth {\n verifier nuts_pki {\n refresh 1h\n }\n }\n }\n}", "nuts_pki takes no options"},
	} {
		_, err := adapt(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: error %v, want one naming the file and %q", tc.body, err, tc.err)
		}
	}
}

// benchPKI is a CA whose CRL (revoking another certificate) is served on
// loopback, and a leaf it issued naming it.
func benchPKI(b *testing.B) (leaf, root *x509.Certificate, url string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	root, _ = x509.ParseCertificate(der)
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(99), RevocationTime: time.Now()}},
	}, root, key)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(crl) }))
	b.Cleanup(srv.Close)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ = x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node-a", Organization: []string{"Nuts"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		CRLDistributionPoints: []string{srv.URL + "/root.crl"},
	}, root, leafKey.Public(), key)
	leaf, _ = x509.ParseCertificate(der)
	return leaf, root, srv.URL
}

// BenchmarkMTLSIdentPKI is the per-request cost revocation checking adds
// to mtls_ident: a chain of two whose CRL is held, with and without it.
func BenchmarkMTLSIdentPKI(b *testing.B) {
	leaf, root, _ := benchPKI(b)
	m := &MTLSIdent{Require: true}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	if err := m.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	serve := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, _ := request(leaf, nil)
			r.TLS.VerifiedChains = [][]*x509.Certificate{{leaf, root}}
			if err := m.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
		}
	}
	b.Run("without pki", serve)
	checker := pki.New(pki.Config{})
	b.Cleanup(checker.Stop)
	if err := checker.Check(context.Background(), [][]*x509.Certificate{{leaf, root}}); err != nil {
		b.Fatal(err)
	}
	withApp(b, &App{checker: checker})
	b.Run("with pki", serve)
}
