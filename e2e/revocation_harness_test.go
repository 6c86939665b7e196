package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// ---- the CRL and denylist server ----

// serveMode is how the test server answers one path.
type serveMode int

const (
	serveContent serveMode = iota // the bytes set for the path, 200
	serveDown                     // 503, no body
	serveSlow                     // 200, then one byte every 100 ms until the client goes away
	serveReset                    // the connection is closed without an answer
)

// served is what the server answers for one path.
type served struct {
	mode serveMode
	data []byte
	hits int // requests received
}

// pkiServer is the HTTP server on loopback that the test certificates' CRL distribution points
// and the gateway's denylist url name. What it serves per path can be swapped at run time, and
// it counts the requests per path so a test can wait for the gateway's next fetch.
type pkiServer struct {
	*httptest.Server
	quit chan struct{} // closed when the test ends: slow answers stop

	mu    sync.Mutex
	paths map[string]*served
}

// newPKIServer starts a pkiServer on 127.0.0.1, closed when the test ends. An unknown path
// gets 404.
func newPKIServer(t *testing.T) *pkiServer {
	t.Helper()
	s := &pkiServer{quit: make(chan struct{}), paths: map[string]*served{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	t.Cleanup(func() {
		close(s.quit)
		s.Server.Close()
	})
	return s
}

func (s *pkiServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p := s.paths[r.URL.Path]
	var mode serveMode
	var data []byte
	if p != nil {
		p.hits++
		mode, data = p.mode, p.data
	}
	s.mu.Unlock()
	switch {
	case p == nil:
		http.NotFound(w, r)
	case mode == serveDown:
		w.WriteHeader(http.StatusServiceUnavailable)
	case mode == serveReset:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
	case mode == serveSlow:
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-s.quit:
				return
			case <-tick.C:
			}
			if _, err := w.Write([]byte{0x30}); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = w.Write(data)
	}
}

// url is the server's URL of path.
func (s *pkiServer) url(path string) string { return s.URL + path }

// set serves data at path from now on.
func (s *pkiServer) set(path string, data []byte) { s.setMode(path, serveContent, data) }

// setMode makes path answer the mode way (with data for serveContent).
func (s *pkiServer) setMode(path string, mode serveMode, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.paths[path]
	if p == nil {
		p = &served{}
		s.paths[path] = p
	}
	p.mode, p.data = mode, data
}

// hits is how many requests path has received.
func (s *pkiServer) hits(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.paths[path]; p != nil {
		return p.hits
	}
	return 0
}

// awaitFetches waits until path has received n more requests than it had at before: with
// n = 2 the fetch that started after a swap has been processed by the time the next one
// arrives. The gateway refreshes every refresh interval, so this is bounded.
func (s *pkiServer) awaitFetches(t *testing.T, path string, before, n int, within time.Duration) {
	t.Helper()
	eventually(t, within, fmt.Sprintf("the gateway did not fetch %s %d more times", path, n), func() bool {
		return s.hits(path) >= before+n
	})
}

// deadURL is an http URL on a loopback port nothing listens on: every fetch is refused.
func deadURL(t *testing.T, path string) string {
	t.Helper()
	return "http://127.0.0.1:" + strconv.Itoa(e2ebin.FreePort(t)) + path
}

// ---- certificate authorities with CRLs ----

// crlCA is a certificate authority of the test chain root -> intermediate -> leaves. Its
// certificates name crlURL as their CRL distribution point (if not empty), where the test
// server publishes its CRL at crlPath.
type crlCA struct {
	*testPKI
	name    string
	chain   [][]byte // DER of this CA and of the CAs above it, the root excluded
	srv     *pkiServer
	crlPath string
	crlURL  string // the distribution point its certificates name; "" for none

	mu      sync.Mutex
	number  int64 // the number of the last CRL made
	revoked map[string]time.Time
}

// newRootCA makes a self-signed root whose CRL is published at /<name>/crl on srv (no CA
// certificate names it unless an intermediate does).
func newRootCA(t *testing.T, srv *pkiServer, name string) *crlCA {
	t.Helper()
	ca := &crlCA{testPKI: newPKI(t, name), name: name, srv: srv, revoked: map[string]time.Time{}}
	ca.crlPath = "/" + strings.ReplaceAll(name, " ", "-") + "/crl"
	ca.crlURL = srv.url(ca.crlPath)
	return ca
}

// intermediate issues a sub-CA named name whose certificate names ca's crlURL as its
// distribution point; the sub-CA's own CRL is served at /<name>/crl.
func (ca *crlCA) intermediate(t *testing.T, name string) *crlCA {
	t.Helper()
	sub := ca.subCA(t, name)
	sub.crlPath = "/" + strings.ReplaceAll(name, " ", "-") + "/crl"
	sub.crlURL = ca.srv.url(sub.crlPath)
	return sub
}

// subCA is intermediate without setting where the sub-CA's CRL is.
func (ca *crlCA) subCA(t *testing.T, name string) *crlCA {
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
	if ca.crlURL != "" {
		tmpl.CRLDistributionPoints = []string{ca.crlURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("intermediate certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &crlCA{
		testPKI: &testPKI{cert: cert, key: key, pool: ca.pool, subjects: map[string]bool{}},
		name:    name,
		chain:   append([][]byte{der}, ca.chain...),
		srv:     ca.srv,
		revoked: map[string]time.Time{},
	}
}

// leaf issues a client certificate CN=<cn>,O=Test valid from an hour ago until notAfter (a day
// from now if zero), naming ca's crlURL as its distribution point. The client presents it with
// the intermediates above it.
func (ca *crlCA) leaf(t *testing.T, cn string, notAfter time.Time) *leafCert {
	t.Helper()
	tmpl := clientTemplate(testName(cn))
	if !notAfter.IsZero() {
		tmpl.NotAfter = notAfter
	}
	if ca.crlURL != "" {
		tmpl.CRLDistributionPoints = []string{ca.crlURL}
	}
	ca.testPKI.mu.Lock()
	dup := ca.subjects[cn]
	ca.subjects[cn] = true
	ca.testPKI.mu.Unlock()
	if dup {
		t.Fatalf("test bug: client %q issued twice by %s", cn, ca.name)
	}
	c := ca.issue(t, tmpl)
	c.tls.Certificate = append(c.tls.Certificate, ca.chain...)
	return c
}

// crlOptions vary a CRL from the CA's usual one.
type crlOptions struct {
	thisUpdate, nextUpdate time.Time // default a minute ago, an hour from now
	number                 int64     // default the CA's next number
	signer                 crypto.Signer
	issuer                 *x509.Certificate // default the CA's certificate
	pad                    int               // bytes of a non-critical extension, to make it large
	revoked                []*big.Int        // default the CA's revoked serials
}

// revoke adds serials to the CA's revoked serials (published by the next crl).
func (ca *crlCA) revoke(serials ...*big.Int) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, s := range serials {
		if _, ok := ca.revoked[s.String()]; !ok {
			ca.revoked[s.String()] = time.Now().Add(-time.Minute)
		}
	}
}

// crl makes a DER CRL with crypto/x509, signed by the CA (or as o says).
func (ca *crlCA) crl(t *testing.T, o crlOptions) []byte {
	t.Helper()
	ca.mu.Lock()
	if o.number == 0 {
		ca.number++
		o.number = ca.number
	} else if o.number > ca.number {
		ca.number = o.number
	}
	var entries []x509.RevocationListEntry
	if o.revoked == nil {
		for s, at := range ca.revoked {
			n, _ := new(big.Int).SetString(s, 10)
			entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: at})
		}
	} else {
		for _, s := range o.revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
		}
	}
	ca.mu.Unlock()
	now := time.Now()
	if o.thisUpdate.IsZero() {
		o.thisUpdate = now.Add(-time.Minute)
	}
	if o.nextUpdate.IsZero() {
		o.nextUpdate = now.Add(time.Hour)
	}
	if o.signer == nil {
		o.signer = ca.key
	}
	if o.issuer == nil {
		o.issuer = ca.cert
	}
	tmpl := &x509.RevocationList{
		Number:                    big.NewInt(o.number),
		ThisUpdate:                o.thisUpdate,
		NextUpdate:                o.nextUpdate,
		RevokedCertificateEntries: entries,
	}
	if o.pad > 0 {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Value: make([]byte, o.pad)}}
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, o.issuer, o.signer)
	if err != nil {
		t.Fatalf("CRL of %s: %v", ca.name, err)
	}
	return der
}

// publish serves the CA's CRL (its revoked serials, next number) at its crlPath.
func (ca *crlCA) publish(t *testing.T) {
	t.Helper()
	ca.srv.set(ca.crlPath, ca.crl(t, crlOptions{}))
}

// opensslCRL makes the CA's CRL with `openssl ca -gencrl` (Debian's openssl), revoking its
// revoked serials, and returns it in PEM (or DER if der).
func (ca *crlCA) opensslCRL(t *testing.T, der bool) []byte {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ca.mu.Lock()
	ca.number++
	number := ca.number
	var index strings.Builder
	for s, at := range ca.revoked {
		n, _ := new(big.Int).SetString(s, 10)
		hexSerial := strings.ToUpper(n.Text(16))
		if len(hexSerial)%2 == 1 {
			hexSerial = "0" + hexSerial
		}
		// status, expiry, revocation date, serial (hex), file, subject: tab-separated.
		fmt.Fprintf(&index, "R\t%s\t%s\t%s\tunknown\t/CN=revoked-%s\n",
			time.Now().Add(24*time.Hour).UTC().Format("060102150405Z"),
			at.UTC().Format("060102150405Z"), hexSerial, s)
	}
	nRevoked := len(ca.revoked)
	ca.mu.Unlock()
	numHex := strconv.FormatInt(number, 16)
	if len(numHex)%2 == 1 {
		numHex = "0" + numHex
	}
	files := map[string][]byte{
		"ca.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
		"ca.key":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"index.txt": []byte(index.String()),
		"crlnumber": []byte(numHex + "\n"),
		"openssl.cnf": []byte(`[ ca ]
default_ca = test_ca

[ test_ca ]
dir               = ` + dir + `
database          = $dir/index.txt
crlnumber         = $dir/crlnumber
certificate       = $dir/ca.pem
private_key       = $dir/ca.key
default_md        = sha256
default_crl_hours = 1
crl_extensions    = crl_ext

[ crl_ext ]
authorityKeyIdentifier = keyid:always
`),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "ca", "-gencrl", "-batch", "-config", filepath.Join(dir, "openssl.cnf"),
		"-out", filepath.Join(dir, "crl.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl ca -gencrl: %v\n%s", err, out)
	}
	if der {
		out, err := exec.Command("openssl", "crl", "-in", filepath.Join(dir, "crl.pem"), "-outform", "DER",
			"-out", filepath.Join(dir, "crl.der")).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl crl -outform DER: %v\n%s", err, out)
		}
	}
	name := "crl.pem"
	if der {
		name = "crl.der"
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	// The CRL must be what we meant: parsed by Go, signed by the CA, listing the serials.
	block, _ := pem.Decode(data)
	raw := data
	if block != nil {
		raw = block.Bytes
	}
	crl, err := x509.ParseRevocationList(raw)
	if err != nil {
		t.Fatalf("openssl's CRL does not parse: %v", err)
	}
	if err := crl.CheckSignatureFrom(ca.cert); err != nil || crl.Number.Int64() != number || len(crl.RevokedCertificateEntries) != nRevoked {
		t.Fatalf("openssl's CRL: signature %v, number %v (want %d), %d entries (want %d)",
			err, crl.Number, number, len(crl.RevokedCertificateEntries), nRevoked)
	}
	return data
}

// pemCRL wraps a DER CRL in PEM ("X509 CRL").
func pemCRL(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// ---- the Nuts denylist ----

// denylistEntry is one entry of the Nuts denylist.
type denylistEntry struct {
	Issuer        string `json:"issuer"`
	SerialNumber  string `json:"serialnumber"`
	JWKThumbprint string `json:"jwkthumbprint"`
	Reason        string `json:"reason"`
}

// banOf is the denylist entry that bans cert: its issuer as Go renders it, its decimal serial,
// and the RFC 7638 SHA-256 thumbprint of its public key.
func banOf(t *testing.T, cert *x509.Certificate) denylistEntry {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: cert.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return denylistEntry{
		Issuer:        cert.Issuer.String(),
		SerialNumber:  cert.SerialNumber.String(),
		JWKThumbprint: base64.RawURLEncoding.EncodeToString(tp),
		Reason:        "e2e",
	}
}

// signDenylist makes the compact JWS of entries with header {"alg":"EdDSA"}, signed by key.
func signDenylist(t *testing.T, key ed25519.PrivateKey, entries []denylistEntry) []byte {
	t.Helper()
	input := jwsInput(t, `{"alg":"EdDSA"}`, entries)
	return []byte(input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(input))))
}

// hs256Denylist makes the compact JWS of entries with header {"alg":"HS256"}, its MAC keyed with
// secret (as an attacker would key it with the trusted public key).
func hs256Denylist(t *testing.T, secret []byte, entries []denylistEntry) []byte {
	t.Helper()
	input := jwsInput(t, `{"alg":"HS256"}`, entries)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return []byte(input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)))
}

func jwsInput(t *testing.T, header string, entries []denylistEntry) string {
	t.Helper()
	if entries == nil {
		entries = []denylistEntry{}
	}
	payload, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
}

// newSigner makes an Ed25519 key pair and returns the private key and the public key in PEM
// ("PUBLIC KEY", PKIX), as trusted_signer reads it.
func newSigner(t *testing.T) (ed25519.PrivateKey, []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// writeSigner writes a signer's public key PEM to a file of its own and returns its path.
func writeSigner(t *testing.T, pubPEM []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signer.pem")
	if err := os.WriteFile(path, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pkiRefusals is the gateway's nutsgate_pki_refusals_total{reason}.
func (g *pkiGateway) pkiRefusals(t *testing.T, reason string) float64 {
	t.Helper()
	return scrapeMetricsAt(t, g.addr(g.Admin), "nutsgate_pki_")[sample("nutsgate_pki_refusals_total", "reason", reason)]
}

// ---- the gateway ----

// pkiCaddyfile is the configuration of the revocation gateways: the n2n port (client
// certificate verified if given, then by nuts_pki; /n2n behind mtls_ident) and the gRPC port
// (required, nuts_pki, mtls_ident, h2c to the node); and a third site whose client_auth has no
// verifier, where only mtls_ident consults the verdicts at request time (/n2n to the node's
// HTTP listener, everything else to its gRPC one). PKI_BLOCK and PLAIN_PORT are replaced by the
// test's pki options and the third site's port before the template is rendered.
const pkiCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
	log {
		level INFO
	}
	nutsgate {
		deny_file {{.Dir}}/deny.txt
		state_dir {{.Dir}}/state
PKI_BLOCK
	}
}

https://localhost:{{.N2N}} {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode verify_if_given
			trust_pool file {{.Dir}}/ca.pem
			verifier nuts_pki
		}
	}
	handle /n2n/* {
		mtls_ident {
			require
		}
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
			verifier nuts_pki
		}
	}
	mtls_ident {
		require
	}
	reverse_proxy h2c://{{.NodeGRPC}}
}

https://localhost:PLAIN_PORT {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode verify_if_given
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	mtls_ident {
		require
	}
	handle /n2n/* {
		reverse_proxy {{.NodePublic}}
	}
	handle {
		reverse_proxy h2c://{{.NodeGRPC}}
	}
}
`

// pkiConfig is the gateway's pki block, written as the Caddyfile's lines.
type pkiConfig struct {
	none         bool   // no pki block at all: verifier nuts_pki with the defaults
	refresh      string // default 1s
	maxStale     string // default: not given (off)
	fetchTimeout string // default 1s
	crls         []string
	denylistURL  string
	signerFile   string
}

func (c pkiConfig) block() string {
	if c.none {
		return ""
	}
	var b strings.Builder
	b.WriteString("\t\tpki {\n")
	fmt.Fprintf(&b, "\t\t\trefresh %s\n", cmpOr(c.refresh, "1s"))
	fmt.Fprintf(&b, "\t\t\tfetch_timeout %s\n", cmpOr(c.fetchTimeout, "1s"))
	if c.maxStale != "" {
		fmt.Fprintf(&b, "\t\t\tmax_stale %s\n", c.maxStale)
	}
	if len(c.crls) > 0 {
		fmt.Fprintf(&b, "\t\t\tcrl %s\n", strings.Join(c.crls, " "))
	}
	if c.denylistURL != "" {
		fmt.Fprintf(&b, "\t\t\tdenylist {\n\t\t\t\turl %s\n\t\t\t\ttrusted_signer %s\n\t\t\t}\n", c.denylistURL, c.signerFile)
	}
	b.WriteString("\t\t}\n")
	return b.String()
}

// template is pkiCaddyfile with this pki block and the third site on port plain.
func (c pkiConfig) template(plain int) string {
	tmpl := strings.Replace(pkiCaddyfile, "PKI_BLOCK\n", c.block(), 1)
	return strings.Replace(tmpl, "PLAIN_PORT", strconv.Itoa(plain), 1)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// pkiGateway is a running gateway of pkiCaddyfile whose trust pool is root, a CA of the test
// chain, with the server that publishes the CRLs.
type pkiGateway struct {
	*mtlsGateway
	root  *crlCA
	srv   *pkiServer
	plain int // the port of the site without the verifier
}

// startPKIGateway starts a test node and a gateway of pkiCaddyfile with the pki block cfg,
// trusting root only (whose certificate also signs the server's), and returns once it listens.
func startPKIGateway(t *testing.T, root *crlCA, cfg pkiConfig) *pkiGateway {
	t.Helper()
	node, err := testnode.Start(testnode.Options{CertHeaderOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	g := &mtlsGateway{pki: root.testPKI, node: node}
	g.mtlsSettings = mtlsSettings{
		Admin: e2ebin.FreePort(t), N2N: e2ebin.FreePort(t), GRPC: e2ebin.FreePort(t),
		Dir:        t.TempDir(),
		NodePublic: strings.TrimPrefix(node.PublicURL(), "http://"),
		NodeGRPC:   node.GRPCAddr(),
	}
	plain := e2ebin.FreePort(t)
	tmpl := cfg.template(plain)
	g.cfgPath = writeGatewayDir(t, g.Dir, serverFiles(t, root.testPKI, map[string][]byte{
		"deny.txt": []byte("# e2e\n"),
	}), tmpl, g.mtlsSettings)
	g.start(t)
	return &pkiGateway{mtlsGateway: g, root: root, srv: root.srv, plain: plain}
}

// ---- requests as a client of the chain ----

// h1 requests a fresh /n2n path over HTTP/1.1 on a fresh connection as c; it returns the
// outcome and the path.
func (g *pkiGateway) h1(t *testing.T, c *leafCert) (httpsResult, string) {
	t.Helper()
	path := n2nPath("pki")
	cfg := g.tlsConfig(c)
	cfg.NextProtos = []string{"http/1.1"}
	return httpsRequest{tls: cfg, port: g.N2N, path: path}.do(t), path
}

// h2 is h1 over HTTP/2.
func (g *pkiGateway) h2(t *testing.T, c *leafCert) (httpsResult, string) {
	t.Helper()
	path := n2nPath("pki")
	cfg := g.tlsConfig(c)
	cfg.NextProtos = []string{"h2"}
	resp, err := h2Client(cfg, g.N2N).Get("https://localhost:" + strconv.Itoa(g.N2N) + path)
	if err != nil {
		return httpsResult{err: err}, path
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.ProtoMajor != 2 {
		t.Errorf("GET %s: protocol %s, want HTTP/2", path, resp.Proto)
	}
	return httpsResult{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}, path
}

// expectPasses asserts that c is served over HTTP/1.1 and HTTP/2 on the n2n port (the node got
// each request with c's certificate) and that a unary call on the gRPC port reaches the node
// as c.
func (g *pkiGateway) expectPasses(t *testing.T, what string, c *leafCert) {
	t.Helper()
	for _, req := range []func(*testing.T, *leafCert) (httpsResult, string){g.h1, g.h2} {
		r, path := req(t, c)
		if r.statusOr() != http.StatusOK {
			t.Errorf("%s: GET %s as %s: got %s, want 200", what, path, c.subject(), r)
			continue
		}
		g.expectForwarded(t, path, c)
	}
	cl := g.grpcAs(t, c)
	header, err := cl.unary(t)
	if err != nil {
		t.Errorf("%s: UnaryCall as %s: %v", what, c.subject(), err)
		return
	}
	expectSubject(t, header, c)
}

// n2nPasses reports whether an HTTP/1.1 request of c on the n2n port is served (200). A request
// refused with a status must not have reached the node; one that got no answer (a refused
// handshake, or a request cut off by a refresh that refused its client while it was at the
// node) does not pass.
func (g *pkiGateway) n2nPasses(t *testing.T, c *leafCert) bool {
	t.Helper()
	r, path := g.h1(t, c)
	if r.err == nil && r.status != http.StatusOK {
		g.expectNodeSawNothing(t, path)
	}
	return r.statusOr() == http.StatusOK
}

// expectHandshakeRefused asserts that c cannot get anything through either port: on the n2n
// port (verify_if_given) a raw TLS connection ends with a TLS alert at the first read, and
// HTTP/1.1 and HTTP/2 requests fail without a response; on the gRPC port (require_and_verify) a
// raw connection gets an alert and a grpc-go unary call fails. The node sees none of it.
func (g *pkiGateway) expectHandshakeRefused(t *testing.T, what string, c *leafCert) {
	t.Helper()
	for _, port := range []int{g.N2N, g.GRPC} {
		if err := g.tlsAlert(c, port); err != nil {
			t.Errorf("%s: port %d, raw TLS as %s: %v", what, port, c.subject(), err)
		}
	}
	for name, req := range map[string]func(*testing.T, *leafCert) (httpsResult, string){"HTTP/1.1": g.h1, "HTTP/2": g.h2} {
		r, path := req(t, c)
		if r.err == nil {
			t.Errorf("%s: %s GET %s as %s: got %s, want the handshake refused", what, name, path, c.subject(), r)
		}
		g.expectNodeSawNothing(t, path)
	}
	cl := g.grpcAs(t, c)
	if _, err := cl.unary(t); err == nil {
		t.Errorf("%s: UnaryCall as %s succeeded, want the handshake refused", what, c.subject())
	}
	if calls := g.nodeCalls(cl); len(calls) != 0 {
		t.Errorf("%s: the node accepted %d calls of %s", what, len(calls), c.subject())
	}
}

// tlsAlert connects to port as c, completes the client side of the handshake, sends a request
// and reads: it returns nil if the server refused with a TLS alert (in the handshake, or with
// TLS 1.3 at the first read), and an error describing what happened otherwise.
func (g *pkiGateway) tlsAlert(c *leafCert, port int) error {
	cfg := g.tlsConfig(c)
	cfg.NextProtos = []string{"http/1.1"}
	if port == g.GRPC {
		cfg.NextProtos = []string{"h2"}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.addr(port), cfg)
	if err != nil {
		if strings.Contains(err.Error(), "remote error: tls:") {
			return nil
		}
		return fmt.Errorf("handshake failed without an alert: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "GET /n2n/alert HTTP/1.1\r\nHost: localhost\r\n\r\n")
	_, err = conn.Read(make([]byte, 1))
	switch {
	case err == nil:
		return fmt.Errorf("the server answered")
	case strings.Contains(err.Error(), "remote error: tls:"):
		return nil
	default:
		return fmt.Errorf("the connection ended without a TLS alert: %v", err)
	}
}

// expectIdentRefused asserts that c, whose handshake the site without the verifier accepts, is
// refused by mtls_ident there: HTTP 403 (without a body, as every refusal of the gateway), and
// gRPC PERMISSION_DENIED with the message "client certificate <why>"; the node sees neither.
func (g *pkiGateway) expectIdentRefused(t *testing.T, what string, c *leafCert, why string) {
	t.Helper()
	want := "client certificate " + why
	// A sweep after another subtest's refresh closes the fresh connections of refused clients,
	// this one's included: a closed connection is tried again, a few times (refusedUnary does the
	// same for gRPC).
	path := n2nPath("ident")
	var r httpsResult
	for range 5 {
		if r = (httpsRequest{tls: g.tlsConfig(c), port: g.plain, path: path}.do(t)); r.err == nil {
			break
		}
	}
	if r.statusOr() != http.StatusForbidden {
		t.Errorf("%s: GET %s on the site without the verifier: got %s, want 403", what, path, r)
	}
	g.expectNodeSawNothing(t, path)
	cl := g.dialGRPC(t, "localhost:"+strconv.Itoa(g.plain),
		grpc.WithTransportCredentials(credentials.NewTLS(g.tlsConfig(c))),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", g.addr(g.plain))
		}))
	err := cl.refusedUnary(t)
	if calls := g.nodeCalls(cl); len(calls) != 0 {
		t.Errorf("%s: the node accepted %d calls of %s", what, len(calls), c.subject())
	}
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want {
		t.Errorf("%s: UnaryCall on the site without the verifier: %v, want PermissionDenied %q", what, err, want)
	}
}

// ---- admin API ----

// pkiSource is one source of GET /nutsgate/pki.
type pkiSource struct {
	Kind        string  `json:"kind"`
	Source      string  `json:"source"`
	Issuer      string  `json:"issuer"`
	LastSuccess *string `json:"last_success"`
	LastAttempt *string `json:"last_attempt"`
	ThisUpdate  *string `json:"this_update"`
	NextUpdate  *string `json:"next_update"`
	Number      string  `json:"number"`
	Entries     int     `json:"entries"`
	LastError   string  `json:"last_error"`
}

// pkiStatus is the answer of GET /nutsgate/pki.
type pkiStatus struct {
	Refresh  string      `json:"refresh"`
	MaxStale string      `json:"max_stale"`
	StateDir string      `json:"state_dir"`
	Sources  []pkiSource `json:"sources"`
}

// adminPKI GETs /nutsgate/pki and returns the status code and the body.
func (g *pkiGateway) adminPKI(t *testing.T) (int, []byte) {
	t.Helper()
	resp, err := httpClient.Get("http://" + g.addr(g.Admin) + "/nutsgate/pki")
	if err != nil {
		t.Fatalf("GET /nutsgate/pki: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// pkiStatus GETs /nutsgate/pki and decodes it, failing the test unless it is 200 JSON.
func (g *pkiGateway) pkiStatus(t *testing.T) pkiStatus {
	t.Helper()
	code, body := g.adminPKI(t)
	if code != http.StatusOK {
		t.Fatalf("GET /nutsgate/pki: status %d, body %q", code, body)
	}
	var st pkiStatus
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("GET /nutsgate/pki: %v in %s", err, body)
	}
	return st
}

// source returns the admin API's entry for source (a URL or a path), if listed.
func (g *pkiGateway) source(t *testing.T, source string) (pkiSource, bool) {
	t.Helper()
	for _, s := range g.pkiStatus(t).Sources {
		if s.Source == source {
			return s, true
		}
	}
	return pkiSource{}, false
}

// awaitSource polls the admin API until source is listed and ok says it is as wanted.
func (g *pkiGateway) awaitSource(t *testing.T, source string, within time.Duration, what string, ok func(pkiSource) bool) pkiSource {
	t.Helper()
	var last pkiSource
	var listed bool
	deadline := time.Now().Add(within)
	for {
		last, listed = g.source(t, source)
		if listed && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: source %s %s (listed %v, last %+v)", within, source, what, listed, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serialForms are c's serial as a refusal log line may print it: decimal or hex.
func serialForms(c *leafCert) []string {
	return []string{c.leaf.SerialNumber.String(), hex.EncodeToString(c.leaf.SerialNumber.Bytes()), c.leaf.SerialNumber.Text(16)}
}
