package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// testPKI is a certificate authority made up for one test: it issues the gateway's server
// certificate and the clients' certificates.
type testPKI struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool // just this CA

	mu       sync.Mutex
	subjects map[string]bool // subjects handed out by client, to keep rate-limit buckets apart
}

// newPKI makes a self-signed CA named name.
func newPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	key := newECKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"nutsgate e2e"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testPKI{cert: cert, key: key, pool: pool, subjects: map[string]bool{}}
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// caPEM is the CA certificate in PEM, for the gateway's trust_pool.
func (p *testPKI) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw})
}

// leafCert is an issued certificate with its key.
type leafCert struct {
	leaf *x509.Certificate
	tls  tls.Certificate
}

// subject is the certificate's subject as Go (and so the test node) renders it.
func (c *leafCert) subject() string { return c.leaf.Subject.String() }

// fingerprint is the lower-case hex SHA-256 of the certificate.
func (c *leafCert) fingerprint() string { return testnode.Fingerprint(c.leaf) }

// pem is the certificate alone in PEM.
func (c *leafCert) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.leaf.Raw})
}

// escapedPEM is the certificate as the gateway forwards it by default and as nginx's
// $ssl_client_escaped_cert writes it.
func (c *leafCert) escapedPEM() string { return url.QueryEscape(string(c.pem())) }

// keyPEM is the private key in PKCS#8 PEM.
func (c *leafCert) keyPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.tls.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// issue signs tmpl (given a fresh serial number and key) with the CA.
func (p *testPKI) issue(t *testing.T, tmpl *x509.Certificate) *leafCert {
	t.Helper()
	key := newECKey(t)
	tmpl.SerialNumber = newSerial(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatalf("issue certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &leafCert{leaf: leaf, tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}
}

// server issues the gateway's certificate: DNS name localhost and IP address 127.0.0.1.
func (p *testPKI) server(t *testing.T) *leafCert {
	t.Helper()
	now := time.Now()
	return p.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// clientTemplate is a client certificate valid from an hour ago for a day, with subject name.
func clientTemplate(name pkix.Name) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		Subject:     name,
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// testName is the subject "CN=<cn>,O=Test".
func testName(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{"Test"}}
}

// client issues a valid client certificate with subject CN=<cn>,O=Test. Every call must name a
// new subject: rate-limit buckets are per subject, so tests sharing a gateway must not share one.
func (p *testPKI) client(t *testing.T, cn string) *leafCert {
	t.Helper()
	return p.clientNamed(t, testName(cn))
}

// clientNamed is client with any subject name.
func (p *testPKI) clientNamed(t *testing.T, name pkix.Name) *leafCert {
	t.Helper()
	p.mu.Lock()
	dup := p.subjects[name.String()]
	p.subjects[name.String()] = true
	p.mu.Unlock()
	if dup {
		t.Fatalf("test bug: client subject %q issued twice by one CA", name)
	}
	return p.issue(t, clientTemplate(name))
}

// rawSubject encodes RDNs, one attribute each, in the order given (the certificate's order,
// which is the reverse of the RFC 2253 string).
func rawSubject(t *testing.T, atvs ...pkix.AttributeTypeAndValue) []byte {
	t.Helper()
	var seq pkix.RDNSequence
	for _, atv := range atvs {
		seq = append(seq, pkix.RelativeDistinguishedNameSET{atv})
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Attribute types for rawSubject.
var (
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
)
