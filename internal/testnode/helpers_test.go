package testnode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

// newCert returns a fresh self-signed ECDSA P-256 certificate for cn.
func newCert(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Testnode"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// newCertWithPlus returns a certificate whose PEM holds a '+', the character
// url.QueryUnescape turns into a space.
func newCertWithPlus(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	for range 100 {
		if cert := newCert(t, cn); strings.Contains(pemOf(cert), "+") {
			return cert
		}
	}
	t.Fatal("no certificate with '+' in its PEM after 100 tries")
	return nil
}

// pemOf is the PEM encoding of cert.
func pemOf(cert *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

// escapedPEM is the header value nginx's $ssl_client_escaped_cert gives.
func escapedPEM(cert *x509.Certificate) string { return url.QueryEscape(pemOf(cert)) }

// base64DER is the header value HAProxy's ssl_c_der,base64 gives.
func base64DER(cert *x509.Certificate) string { return base64.StdEncoding.EncodeToString(cert.Raw) }

// escapeOnly percent-encodes only the given characters of s, as a proxy that
// escapes too little would.
func escapeOnly(s, chars string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(chars, r) {
			fmt.Fprintf(&b, "%%%02X", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// headerCase is one forwarded certificate header and whether the node accepts it.
type headerCase struct {
	name      string
	values    []string // nil: no header at all
	want      *x509.Certificate
	notOnWire bool // holds a newline, which no HTTP/2 header value may
}

// headerCases covers the formats proxies send and the ways the node refuses
// them. Shared by the ParseCertHeader test and the end-to-end gRPC test.
func headerCases(t testing.TB) []headerCase {
	leaf, other, plus := newCert(t, "node-a"), newCert(t, "node-b"), newCertWithPlus(t, "node-c")
	return []headerCase{
		{name: "URL-escaped PEM (nginx)", values: []string{escapedPEM(leaf)}, want: leaf},
		{name: "base64 DER (HAProxy)", values: []string{base64DER(leaf)}, want: leaf},
		{name: "PEM, only newlines and plus escaped", values: []string{escapeOnly(pemOf(plus), "\n+")}, want: plus},
		{name: "PEM, only newlines escaped, bare plus", values: []string{escapeOnly(pemOf(plus), "\n")}},
		{name: "PEM not escaped, with plus", values: []string{pemOf(plus)}, notOnWire: true},
		{name: "URL-escaped base64 DER", values: []string{url.QueryEscape(base64DER(plus))}},
		{name: "two values", values: []string{escapedPEM(leaf), escapedPEM(leaf)}},
		{name: "PEM chain of two", values: []string{url.QueryEscape(pemOf(leaf) + pemOf(other))}},
		{name: "PEM with trailing newline", values: []string{url.QueryEscape(pemOf(leaf) + "\n")}},
		{name: "garbage", values: []string{"not a certificate"}},
		{name: "invalid escape", values: []string{"%%%"}},
		{name: "empty value", values: []string{""}},
		{name: "missing"},
	}
}
