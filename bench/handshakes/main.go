// Command handshakes is the load program of bench/pki.sh.
//
// "handshakes pki -dir D -port P" writes a test PKI to D (ca.pem: a root; client.pem: a leaf
// and the intermediate that issued it, with their key; server.pem and .key for localhost),
// whose certificates name CRLs on http://127.0.0.1:P, and a denylist (denylist.jws, signed by
// the key in signer.pem, 100 entries none of which bans the client), then serves the CRLs and
// the list on that port until killed.
//
// "handshakes load -addr A -dir D -duration T -conns N" makes N clients open new TLS
// connections to A (no session resumption) with the client certificate of D, each sending one
// HTTP/1.1 request and reading its answer, for T, and prints "handshakes <n> rate <n/s>".
// It talks to loopback addresses only.
package main

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: handshakes pki|load [flags]"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "directory of the test PKI")
	port := fs.Int("port", 0, "pki: loopback port the CRLs and denylist are served on")
	addr := fs.String("addr", "", "load: the gateway's address (host:port)")
	duration := fs.Duration("duration", 10*time.Second, "load: how long")
	conns := fs.Int("conns", 8, "load: concurrent clients")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "pki":
		err = servePKI(*dir, *port)
	case "load":
		err = load(*addr, *dir, *duration, *conns)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "handshakes:", err)
	os.Exit(1)
}

type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial atomic.Int64

// issue makes a certificate of tmpl signed by parent (self-signed if nil).
func issue(parent *ca, tmpl *x509.Certificate) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = big.NewInt(1000 + serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	signer, issuer := crypto.Signer(key), tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &ca{cert, key}, err
}

func caTemplate(name, crl string) *x509.Certificate {
	t := &x509.Certificate{Subject: pkix.Name{CommonName: name}, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	if crl != "" {
		t.CRLDistributionPoints = []string{crl}
	}
	return t
}

// crl is c's CRL, revoking 50 serials none of which is in use.
func (c *ca) crl() ([]byte, error) {
	var entries []x509.RevocationListEntry
	for i := range 50 {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(int64(900000 + i)), RevocationTime: time.Now()})
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, c.cert, c.key)
}

func servePKI(dir string, port int) error {
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	root, err := issue(nil, caTemplate("bench root", ""))
	if err != nil {
		return err
	}
	inter, err := issue(root, caTemplate("bench intermediate", base+"/root.crl"))
	if err != nil {
		return err
	}
	client, err := issue(inter, &x509.Certificate{
		Subject: pkix.Name{CommonName: "bench client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CRLDistributionPoints: []string{base + "/intermediate.crl"},
	})
	if err != nil {
		return err
	}
	server, err := issue(root, &x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": certPEM(root), "server.pem": certPEM(server), "server.key": keyPEM(server),
		"client.pem": append(append(certPEM(client), certPEM(inter)...), keyPEM(client)...)}
	served := map[string][]byte{}
	if served["/root.crl"], err = root.crl(); err != nil {
		return err
	}
	if served["/intermediate.crl"], err = inter.crl(); err != nil {
		return err
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(pub)
	files["signer.pem"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	if served["/denylist.jws"], err = denylist(key); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", port), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := served[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(data)
	}))
}

// denylist is a list of 100 entries for certificates of another CA, signed with key.
func denylist(key ed25519.PrivateKey) ([]byte, error) {
	type entry struct {
		Issuer        string `json:"issuer"`
		SerialNumber  string `json:"serialnumber"`
		JWKThumbprint string `json:"jwkthumbprint"`
		Reason        string `json:"reason"`
	}
	var entries []entry
	for i := range 100 {
		entries = append(entries, entry{"CN=Some Other CA", fmt.Sprint(5000 + i), "sVL9nJQu8nnBA3oZGwgryy8xGHMZNk_Amgkl12T-W-I", "bench"})
	}
	payload, err := json.Marshal(entries)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, nil)
	if err != nil {
		return nil, err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return nil, err
	}
	s, err := jws.CompactSerialize()
	return []byte(s), err
}

func certPEM(c *ca) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

func keyPEM(c *ca) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(c.key)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func load(addr, dir string, duration time.Duration, conns int) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.pem"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}, ClientSessionCache: nil}
	var done, failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := once(addr, cfg); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d handshakes failed, the first with: %v", failed.Load(), failed.Load()+done.Load(), firstErr.Load())
	}
	fmt.Printf("handshakes %d rate %.1f\n", done.Load(), float64(done.Load())/duration.Seconds())
	return nil
}

// once opens a new connection, sends one request and reads the answer.
func once(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /n2n/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
