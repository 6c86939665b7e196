package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testCA is a certificate authority of a test: it issues certificates
// whose distribution point is its CRL on the test's CRL server.
type testCA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	crlURL string // where its CRL is served
}

// crlServer serves the CRLs of a test over HTTP on loopback; each can be
// swapped, and the whole server made to fail.
type crlServer struct {
	*httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	status int // answer with this status instead, if not 0
	hits   atomic.Int64
	gate   chan struct{} // if set, every answer waits until it is closed
}

func newCRLServer(t *testing.T) *crlServer {
	s := &crlServer{files: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		data, ok := s.files[r.URL.Path]
		status, gate := s.status, s.gate
		s.mu.Unlock()
		if gate != nil {
			<-gate
		}
		switch {
		case status != 0:
			w.WriteHeader(status)
		case !ok:
			http.NotFound(w, r)
		default:
			_, _ = w.Write(data)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *crlServer) serve(path string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = data
}

func (s *crlServer) fail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serials atomic.Int64

// newRoot makes a self-signed CA whose CRL is served at srv's /name.crl.
func newRoot(t testing.TB, srv *crlServer, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(name, time.Now().Add(24*time.Hour))
	return makeCA(t, srv, name, tmpl, tmpl, key, key)
}

func caTemplate(name string, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(1000 + serials.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func makeCA(t testing.TB, srv *crlServer, name string, tmpl, parent *x509.Certificate, pub crypto.Signer, signer crypto.Signer) *testCA {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: pub, crlURL: srv.URL + "/" + name + ".crl"}
}

// issueCA issues an intermediate CA.
func (ca *testCA) issueCA(t testing.TB, srv *crlServer, name string) *testCA {
	t.Helper()
	tmpl := caTemplate(name, time.Now().Add(24*time.Hour))
	tmpl.CRLDistributionPoints = []string{ca.crlURL}
	return makeCA(t, srv, name, tmpl, ca.cert, newKey(t), ca.key)
}

// issue issues a leaf certificate valid until notAfter.
func (ca *testCA) issue(t testing.TB, name string, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000 + serials.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CRLDistributionPoints: []string{ca.crlURL},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, newKey(t).Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// crl is the CA's CRL numbered n, issued now and due in a day, revoking
// certs.
func (ca *testCA) crl(t testing.TB, n int64, certs ...*x509.Certificate) []byte {
	t.Helper()
	return ca.crlAt(t, n, time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour), certs...)
}

func (ca *testCA) crlAt(t testing.TB, n int64, thisUpdate, nextUpdate time.Time, certs ...*x509.Certificate) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, c := range certs {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(n),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// pkiSetup is root -> intermediate, with good and revoked-to-be leaves,
// and a CRL server that serves both CAs' CRLs, revoking nothing.
type pkiSetup struct {
	srv        *crlServer
	root, int  *testCA
	good, lost *x509.Certificate
}

func newSetup(t testing.TB) *pkiSetup {
	t.Helper()
	s := &pkiSetup{srv: newCRLServer(t.(*testing.T))}
	s.root = newRoot(t, s.srv, "root")
	s.int = s.root.issueCA(t, s.srv, "int")
	s.good = s.int.issue(t, "good", time.Now().Add(12*time.Hour))
	s.lost = s.int.issue(t, "lost", time.Now().Add(12*time.Hour))
	s.srv.serve("/root.crl", s.root.crl(t, 1))
	s.srv.serve("/int.crl", s.int.crl(t, 1))
	return s
}

func (s *pkiSetup) chain(leaf *x509.Certificate) [][]*x509.Certificate {
	return [][]*x509.Certificate{{leaf, s.int.cert, s.root.cert}}
}

// newChecker returns a started checker of cfg, stopped at the end of the
// test.
func newChecker(t *testing.T, cfg Config) *Checker {
	t.Helper()
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 2 * time.Second
	}
	c := New(cfg)
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// refetch fetches every known source again and waits for the fetches.
func refetch(t *testing.T, c *Checker) {
	t.Helper()
	c.mu.Lock()
	var wait []chan struct{}
	start := func(s *sourceState) {
		if s.fetching == nil {
			c.startFetch(s)
		}
		wait = append(wait, s.fetching)
	}
	for _, s := range c.allCRLs() {
		start(&s.sourceState)
	}
	if c.deny != nil {
		start(&c.deny.sourceState)
	}
	c.mu.Unlock()
	for _, ch := range wait {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("a fetch did not end")
		}
	}
}

// expectReason checks the verdict of chains: pass if want is "".
func expectReason(t *testing.T, what string, err error, want Reason) {
	t.Helper()
	var r *Refusal
	switch {
	case want == "" && err != nil:
		t.Fatalf("%s: refused (%v), want it to pass", what, err)
	case want == "":
	case !errors.As(err, &r):
		t.Fatalf("%s: %v, want a %s refusal", what, err, want)
	case r.Reason != want:
		t.Fatalf("%s: refused %s (%v), want %s", what, r.Reason, err, want)
	}
}

func sourceStatus(t *testing.T, c *Checker, source string) SourceStatus {
	t.Helper()
	for _, s := range c.Status() {
		if s.Source == source {
			return s
		}
	}
	t.Fatalf("no source %s in %+v", source, c.Status())
	return SourceStatus{}
}

func TestCheckRevocation(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
	c := newChecker(t, Config{})
	ctx := context.Background()
	expectReason(t, "good leaf", c.Check(ctx, s.chain(s.good)), "")
	expectReason(t, "revoked leaf", c.Check(ctx, s.chain(s.lost)), Revoked)

	// A revoked intermediate refuses every leaf below it, and is named.
	s.srv.serve("/root.crl", s.root.crl(t, 2, s.int.cert))
	refetch(t, c)
	err := c.Held(s.chain(s.good))
	expectReason(t, "leaf under a revoked intermediate", err, Revoked)
	if r := err.(*Refusal); r.Cert != s.int.cert {
		t.Fatalf("refusal names %s, want the intermediate", r.Cert.Subject)
	}

	// One refused chain of several refuses the certificate.
	other := newRoot(t, s.srv, "other")
	chains := append(s.chain(s.good), []*x509.Certificate{s.good, other.cert})
	expectReason(t, "second chain refused", c.Held(chains), Revoked)

	st := sourceStatus(t, c, s.int.crlURL)
	if st.Entries != 1 || st.Number != "2" || st.Issuer != "CN=int" || st.LastSuccess == nil || st.LastError != "" {
		t.Fatalf("status of the intermediate's CRL: %+v", st)
	}
}

func TestUntrustworthyCRLNotUsed(t *testing.T) {
	impostor := func(s *pkiSetup) []byte {
		// Same name as the intermediate, another key.
		fake := &testCA{cert: s.int.cert, key: newKey(t)}
		tmpl := caTemplate("int", time.Now().Add(time.Hour))
		fake = makeCA(t, s.srv, "int", tmpl, tmpl, fake.key, fake.key)
		return fake.crl(t, 9)
	}
	for _, tc := range []struct {
		name  string
		bad   func(s *pkiSetup) []byte
		error string
	}{
		{"signed by another key", impostor, "not signed by the CA"},
		{"thisUpdate in the future", func(s *pkiSetup) []byte {
			return s.int.crlAt(t, 9, time.Now().Add(time.Hour), time.Now().Add(2*time.Hour))
		}, "in the future"},
		{"number going back", func(s *pkiSetup) []byte { return s.int.crl(t, 1) }, "lower than the 2 held"},
		{"not a CRL", func(*pkiSetup) []byte { return []byte("<html>maintenance</html>") }, "not a CRL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
			c := newChecker(t, Config{})
			expectReason(t, "revoked leaf", c.Check(context.Background(), s.chain(s.lost)), Revoked)
			s.srv.serve("/int.crl", tc.bad(s))
			refetch(t, c)
			expectReason(t, "revoked leaf after a bad CRL", c.Held(s.chain(s.lost)), Revoked)
			if st := sourceStatus(t, c, s.int.crlURL); !strings.Contains(st.LastError, tc.error) || st.Number != "2" {
				t.Fatalf("status %+v, want the last good CRL (number 2) and an error with %q", st, tc.error)
			}
		})
	}
}

func TestCRLCut(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
	release := make(chan struct{})
	defer close(release)
	var mode atomic.Value
	mode.Store("")
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "huge":
			chunk := make([]byte, 1<<20)
			for range MaxCRLSize>>20 + 2 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "slow":
			for {
				if _, err := w.Write([]byte{0x30}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-release:
					return
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		default:
			_, _ = w.Write(s.int.crl(t, 2, s.lost))
		}
	}))
	defer bad.Close()
	for _, m := range []struct {
		mode, error string
		timeout     time.Duration
	}{{"huge", "larger than", 20 * time.Second}, {"slow", "deadline exceeded", 2 * time.Second}} { // the timeout bounds the first, good fetch too
		mode.Store("")
		c := newChecker(t, Config{CRLs: []string{bad.URL + "/int.crl"}, FetchTimeout: m.timeout})
		refetch(t, c)
		mode.Store(m.mode)
		refetch(t, c)
		st := sourceStatus(t, c, bad.URL+"/int.crl")
		if !strings.Contains(st.LastError, m.error) || st.Entries != 1 {
			t.Fatalf("%s answer: status %+v, want the last good CRL and an error with %q", m.mode, st, m.error)
		}
	}
}

func TestUnknownStatus(t *testing.T) {
	s := newSetup(t)
	s.srv.fail(http.StatusServiceUnavailable)
	ctx := context.Background()

	soft := newChecker(t, Config{})
	expectReason(t, "CRL server down, max_stale off", soft.Check(ctx, s.chain(s.good)), "")
	if st := sourceStatus(t, soft, s.int.crlURL); !strings.Contains(st.LastError, "503") {
		t.Fatalf("status %+v, want the 503", st)
	}

	hard := newChecker(t, Config{MaxStale: time.Hour})
	expectReason(t, "CRL never held, max_stale 1h", hard.Check(ctx, s.chain(s.good)), Stale)

	// Held, then past due: passes within max_stale, refused beyond it.
	s.srv.fail(0)
	s.srv.serve("/int.crl", s.int.crlAt(t, 2, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), s.lost))
	refetch(t, hard)
	expectReason(t, "fresh CRL", hard.Held(s.chain(s.good)), "")
	s.srv.fail(http.StatusServiceUnavailable)
	now := time.Now()
	hard.now = func() time.Time { return now.Add(90 * time.Minute) } // 30 minutes past due
	expectReason(t, "CRL 30 min past due, max_stale 1h", hard.Held(s.chain(s.good)), "")
	expectReason(t, "revoked serial in a past-due CRL", hard.Held(s.chain(s.lost)), Revoked)
	hard.now = func() time.Time { return now.Add(3 * time.Hour) }
	expectReason(t, "CRL 2h past due, max_stale 1h", hard.Held(s.chain(s.good)), Stale)
	expectReason(t, "revoked serial in a stale CRL", hard.Held(s.chain(s.lost)), Revoked)
}

func TestFirstFetchWaitsOnce(t *testing.T) {
	s := newSetup(t)
	c := newChecker(t, Config{})
	for range 3 {
		expectReason(t, "good leaf", c.Check(context.Background(), s.chain(s.good)), "")
	}
	// root.crl and int.crl, once each: later checks use what is held.
	if n := s.srv.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestStateDirSurvivesRestart(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
	dir := t.TempDir()
	first := New(Config{StateDir: dir})
	expectReason(t, "revoked leaf", first.Check(context.Background(), s.chain(s.lost)), Revoked)
	first.Stop()

	s.srv.fail(http.StatusServiceUnavailable)
	second := newChecker(t, Config{StateDir: dir, MaxStale: time.Hour})
	expectReason(t, "revoked leaf after a restart with the CRL server down", second.Check(context.Background(), s.chain(s.lost)), Revoked)
	expectReason(t, "good leaf after a restart with the CRL server down", second.Check(context.Background(), s.chain(s.good)), "")
	files, _ := filepath.Glob(filepath.Join(dir, "crl-*.der"))
	if len(files) != 2 {
		t.Fatalf("state directory holds %v, want the two CRLs", files)
	}
}

func TestConfiguredCRLFile(t *testing.T) {
	s := newSetup(t)
	leaf := s.int.issue(t, "no-cdp", time.Now().Add(3*time.Hour))
	leaf.CRLDistributionPoints = nil
	path := filepath.Join(t.TempDir(), "int.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: s.int.crl(t, 3, leaf)}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newChecker(t, Config{CRLs: []string{path}})
	refetch(t, c)
	chain := [][]*x509.Certificate{{leaf, s.int.cert, s.root.cert}}
	expectReason(t, "leaf revoked in a configured CRL", c.Check(context.Background(), chain), Revoked)
	// The same CRL says nothing of the root's certificates.
	expectReason(t, "intermediate itself", c.Check(context.Background(), [][]*x509.Certificate{{s.int.cert, s.root.cert}}), "")
}

func TestChangedAfterRefresh(t *testing.T) {
	s := newSetup(t)
	var changes atomic.Int64
	c := newChecker(t, Config{Changed: func() { changes.Add(1) }})
	expectReason(t, "good leaf", c.Check(context.Background(), s.chain(s.lost)), "")
	before := changes.Load()
	refetch(t, c) // the same CRLs
	if n := changes.Load(); n != before {
		t.Fatalf("Changed called %d times for CRLs that did not change", n-before)
	}
	s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
	refetch(t, c)
	if changes.Load() == before {
		t.Fatal("Changed not called after a CRL changed")
	}
	expectReason(t, "revoked after the refresh", c.Held(s.chain(s.lost)), Revoked)
}

func TestExpired(t *testing.T) {
	s := newSetup(t)
	c := newChecker(t, Config{})
	expectReason(t, "valid leaf", c.Check(context.Background(), s.chain(s.good)), "")
	c.now = func() time.Time { return s.good.NotAfter.Add(time.Second) }
	expectReason(t, "leaf past notAfter", c.Held(s.chain(s.good)), Expired)
	expectReason(t, "no chain", c.Held(nil), Unverified)
}

func TestDenylist(t *testing.T) {
	s := newSetup(t)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	s.srv.serve("/denylist.jws", dlSignEntries(t, key, dlEntry(t, s.lost, "test")))
	c := newChecker(t, Config{Denylist: s.srv.URL + "/denylist.jws", Signer: pub, StateDir: t.TempDir(), MaxStale: time.Hour})
	ctx := context.Background()
	expectReason(t, "banned leaf", c.Check(ctx, s.chain(s.lost)), Banned)
	expectReason(t, "other leaf", c.Check(ctx, s.chain(s.good)), "")

	// Banning the intermediate bans its tree.
	s.srv.serve("/denylist.jws", dlSignEntries(t, key, dlEntry(t, s.int.cert, "test")))
	refetch(t, c)
	expectReason(t, "leaf under a banned intermediate", c.Held(s.chain(s.good)), Banned)

	// A list signed by another key, or not EdDSA, is ignored: the last good
	// one stays.
	hs256 := strings.Join([]string{
		base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`)),
		base64.RawURLEncoding.EncodeToString([]byte(`[]`)),
		base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
	}, ".")
	for _, bad := range [][]byte{dlSignEntries(t, otherKey), []byte(hs256)} {
		s.srv.serve("/denylist.jws", bad)
		refetch(t, c)
		expectReason(t, "leaf under a banned intermediate after a bad list", c.Held(s.chain(s.good)), Banned)
		if st := sourceStatus(t, c, s.srv.URL+"/denylist.jws"); st.LastError == "" || st.Entries != 1 {
			t.Fatalf("status %+v, want the last good list and an error", st)
		}
	}

	// The last good list survives a restart with the source down.
	s.srv.fail(http.StatusNotFound)
	c.Stop() // as the process ends: the fetches under way finish writing first
	again := newChecker(t, Config{Denylist: s.srv.URL + "/denylist.jws", Signer: pub, StateDir: c.cfg.StateDir, MaxStale: time.Hour})
	expectReason(t, "banned after a restart with the list's source down", again.Check(ctx, s.chain(s.good)), Banned)
}

func TestRealDenylist(t *testing.T) {
	signer, err := ParseSigner(dlReadFixture(t, "pubkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	devRoot := dlFixtureCert(t)
	s := newSetup(t)
	c := newChecker(t, Config{Denylist: filepath.Join(dlFixtureDir, "denylist.jws"), Signer: signer})
	refetch(t, c)
	expectReason(t, "chain up to the banned development network root", c.Check(context.Background(), [][]*x509.Certificate{{devRoot}}), Banned)
	expectReason(t, "another chain", c.Check(context.Background(), s.chain(s.good)), "")
}

// A source whose first fetch failed is not waited for again while it is
// retried: only the first attempt is.
func TestRetryNotWaitedFor(t *testing.T) {
	s := newSetup(t)
	s.srv.fail(http.StatusServiceUnavailable)
	c := New(Config{FetchTimeout: 2 * time.Second})
	t.Cleanup(c.Stop)
	expectReason(t, "CRL server down", c.Check(context.Background(), s.chain(s.good)), "")
	c.mu.Lock()
	for _, src := range c.allCRLs() {
		c.startFetch(&src.sourceState) // the retry, under way
	}
	c.mu.Unlock()
	c.mu.RLock()
	ready := c.ready(s.chain(s.good))
	c.mu.RUnlock()
	if wait := c.prepare(context.Background(), s.chain(s.good)); !ready || len(wait) != 0 {
		t.Fatalf("during a retry: ready %v, %d fetches to wait for; want ready and none", ready, len(wait))
	}
}

// Past maxCRLSources, a distribution point not followed does not make
// every check take the write lock, and the cap is logged once.
func TestSourceCap(t *testing.T) {
	s := newSetup(t)
	core, logs := observer.New(zap.WarnLevel)
	c := New(Config{FetchTimeout: 2 * time.Second, Logger: zap.New(core)})
	t.Cleanup(c.Stop)
	c.mu.Lock()
	for i := range maxCRLSources {
		name := "https://full.example/" + strconv.Itoa(i)
		c.crls[name] = &crlSource{sourceState: sourceState{name: name, attempted: true}}
	}
	c.mu.Unlock()
	for range 3 {
		expectReason(t, "good leaf, its CRLs not followed", c.Check(context.Background(), s.chain(s.good)), "")
	}
	c.mu.RLock()
	ready := c.ready(s.chain(s.good))
	c.mu.RUnlock()
	if n := logs.FilterMessageSnippet("too many CRL").Len(); !ready || n != 1 {
		t.Fatalf("ready %v, cap logged %d times; want ready, logged once", ready, n)
	}
}

// A CRL whose nextUpdate comes before the next refresh is fetched again at
// its nextUpdate.
func TestRefetchAtNextUpdate(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crlAt(t, 2, time.Now().Add(-time.Minute), time.Now().Add(10*time.Minute)))
	c := New(Config{FetchTimeout: 2 * time.Second})
	t.Cleanup(c.Stop)
	expectReason(t, "good leaf", c.Check(context.Background(), s.chain(s.good)), "")
	c.mu.RLock()
	src := c.crls[s.int.crlURL]
	first := src.lastAttempt
	c.mu.RUnlock()
	now := time.Now()
	c.now = func() time.Time { return now.Add(11 * time.Minute) }
	c.tick()
	c.mu.RLock()
	fetched := src.fetching != nil || !src.lastAttempt.Equal(first)
	c.mu.RUnlock()
	if !fetched {
		t.Fatal("CRL past its nextUpdate (10 min) not fetched again before the refresh (1h)")
	}
}

// The denylist is not past due while its refresh is under way.
func TestDenylistNotDueAtRefresh(t *testing.T) {
	s := newSetup(t)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	s.srv.serve("/denylist.jws", dlSignEntries(t, key, dlEntry(t, s.lost, "test")))
	c := New(Config{Denylist: s.srv.URL + "/denylist.jws", Signer: pub, MaxStale: time.Second, FetchTimeout: 2 * time.Second})
	t.Cleanup(c.Stop)
	refetch(t, c)
	c.mu.RLock()
	last := c.deny.lastSuccess
	c.mu.RUnlock()
	c.now = func() time.Time { return last.Add(DefaultRefresh + 2*time.Second) }
	leaf := s.int.issue(t, "no-cdp", time.Now().Add(3*time.Hour))
	leaf.CRLDistributionPoints = nil
	expectReason(t, "2 s after the refresh started, max_stale 1s", c.Held([][]*x509.Certificate{{leaf}}), "")
}

// A fetch that Stop cancels is not a failed fetch.
func TestStopNotAFailure(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	var failed atomic.Int64
	core, logs := observer.New(zap.WarnLevel)
	c := New(Config{CRLs: []string{srv.URL + "/ca.crl"}, FetchTimeout: time.Minute, Logger: zap.New(core),
		FetchFailed: func(string) { failed.Add(1) }})
	c.Start()
	<-arrived
	c.Stop()
	if n := failed.Load(); n != 0 || logs.Len() != 0 {
		t.Fatalf("a fetch cancelled by Stop counted %d times as failed, logged %v", n, logs.All())
	}
}

// Stop does not race the fetches that checks start meanwhile (go test
// -race).
func TestStopWhileChecking(t *testing.T) {
	s := newSetup(t)
	for range 20 {
		c := New(Config{FetchTimeout: time.Second})
		c.Start()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _ = c.Check(context.Background(), s.chain(s.good)) })
		}
		c.Stop()
		wg.Wait()
	}
}

// A CRL issued before the one held (its thisUpdate earlier) is a rollback,
// whatever its number: a CA's CRLs without numbers are guarded too.
func TestCRLOlderThisUpdateRefused(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
	c := newChecker(t, Config{})
	expectReason(t, "revoked leaf", c.Check(context.Background(), s.chain(s.lost)), Revoked)
	s.srv.serve("/int.crl", s.int.crlAt(t, 3, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)))
	refetch(t, c)
	expectReason(t, "revoked leaf after an older CRL", c.Held(s.chain(s.lost)), Revoked)
	if st := sourceStatus(t, c, s.int.crlURL); !strings.Contains(st.LastError, "thisUpdate") || st.Number != "2" {
		t.Fatalf("status %+v, want the CRL held (number 2) and an error about thisUpdate", st)
	}
}

// A configured CRL that is also a distribution point is one source: listed
// once, one state file.
func TestConfiguredDistributionPointOneSource(t *testing.T) {
	s := newSetup(t)
	c := newChecker(t, Config{CRLs: []string{s.int.crlURL}, StateDir: t.TempDir()})
	expectReason(t, "good leaf", c.Check(context.Background(), s.chain(s.good)), "")
	n := 0
	for _, st := range c.Status() {
		if st.Source == s.int.crlURL {
			n++
		}
	}
	c.mu.RLock()
	same := c.crls[s.int.crlURL] == c.extra[0]
	c.mu.RUnlock()
	if n != 1 || !same {
		t.Fatalf("%s listed %d times, one source object: %v; want once, one", s.int.crlURL, n, same)
	}
}

// noCDP issues a leaf of ca that names no distribution point: only a
// configured CRL covers it.
func noCDP(t *testing.T, ca *testCA, name string) *x509.Certificate {
	t.Helper()
	leaf := ca.issue(t, name, time.Now().Add(12*time.Hour))
	leaf.CRLDistributionPoints = nil
	return leaf
}

// impostorCRL is a CRL in the name of ca, signed by another key.
func impostorCRL(t *testing.T, srv *crlServer, ca *testCA, n int64) []byte {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(ca.cert.Subject.CommonName, time.Now().Add(time.Hour))
	return makeCA(t, srv, "impostor", tmpl, tmpl, key, key).crl(t, n)
}

// A configured CRL source remembers, across a restart, the CA found to
// sign it: after the restart, a CRL in that CA's name signed by another key
// is refused and the good copy stays.
func TestConfiguredCRLIssuersKept(t *testing.T) {
	s := newSetup(t)
	leaf := noCDP(t, s.int, "no-cdp")
	s.srv.serve("/extra.crl", s.int.crl(t, 2, leaf))
	dir := t.TempDir()
	cfg := Config{CRLs: []string{s.srv.URL + "/extra.crl"}, StateDir: dir, FetchTimeout: 2 * time.Second}
	chain := [][]*x509.Certificate{{leaf, s.int.cert, s.root.cert}}
	first := newChecker(t, cfg)
	refetch(t, first)
	expectReason(t, "leaf revoked in a configured CRL", first.Check(context.Background(), chain), Revoked)
	first.Stop()

	s.srv.serve("/extra.crl", impostorCRL(t, s.srv, s.int, 3))
	second := newChecker(t, cfg)
	refetch(t, second)
	expectReason(t, "leaf after a restart and an impostor's CRL", second.Check(context.Background(), chain), Revoked)
	if st := sourceStatus(t, second, s.srv.URL+"/extra.crl"); !strings.Contains(st.LastError, "not signed") || st.Number != "2" {
		t.Fatalf("status %+v, want the good CRL (number 2) and the impostor's refused", st)
	}
}

// A configured CRL is written to the state directory only once a CA is
// found to sign it.
func TestConfiguredCRLKeptOnlyVerified(t *testing.T) {
	s := newSetup(t)
	leaf := noCDP(t, s.int, "no-cdp")
	s.srv.serve("/extra.crl", s.int.crl(t, 2))
	dir := t.TempDir()
	cfg := Config{CRLs: []string{s.srv.URL + "/extra.crl"}, StateDir: dir}
	c := newChecker(t, cfg)
	refetch(t, c)
	c.Stop() // waits for the writes
	if files, _ := filepath.Glob(filepath.Join(dir, "crl-*.der")); len(files) != 0 {
		t.Fatalf("state directory holds %v before any CA verified the CRL, want nothing", files)
	}
	c = newChecker(t, cfg)
	refetch(t, c)
	expectReason(t, "good leaf", c.Check(context.Background(), [][]*x509.Certificate{{leaf, s.int.cert, s.root.cert}}), "")
	c.Stop()
	if files, _ := filepath.Glob(filepath.Join(dir, "crl-*.der")); len(files) != 2 { // extra.crl, root.crl
		t.Fatalf("state directory holds %v once the CRL is verified, want it and the root's", files)
	}
}

// How a configured CRL judges a certificate: not at all if another CA
// issued it; unknown if it is in the certificate's issuer's name but not
// signed by it, or if it was never held.
func TestConfiguredCRLJudged(t *testing.T) {
	s := newSetup(t)
	leaf := noCDP(t, s.int, "no-cdp")
	other := newRoot(t, s.srv, "other")
	chain := [][]*x509.Certificate{{leaf, s.int.cert, s.root.cert}}
	for _, tc := range []struct {
		name string
		crl  func() []byte // nil: the source is down
		want Reason
	}{
		{"another CA's CRL", func() []byte { return other.crl(t, 1) }, ""},
		{"impostor in the issuer's name", func() []byte { return impostorCRL(t, s.srv, s.int, 1) }, Stale},
		{"never held", nil, Stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/" + strings.ReplaceAll(tc.name, " ", "-") + ".crl"
			if tc.crl != nil {
				s.srv.serve(path, tc.crl())
			}
			c := newChecker(t, Config{CRLs: []string{s.srv.URL + path}, MaxStale: time.Hour})
			refetch(t, c)
			expectReason(t, tc.name+", max_stale 1h", c.Check(context.Background(), chain), tc.want)
		})
	}
}

// A fetched CRL is parsed, indexed and verified without the Checker's
// lock (the clock, read when it is verified, sees the lock free), and a
// new source's state file is read without it (its warning is logged with
// the lock free).
func TestCRLWorkOffTheLock(t *testing.T) {
	s := newSetup(t)
	dir := t.TempDir()
	var c *Checker
	var probing atomic.Bool
	var locked atomic.Int64
	probe := func() {
		if !probing.Load() {
			return
		}
		if !c.mu.TryLock() {
			locked.Add(1)
		} else {
			c.mu.Unlock()
		}
	}
	logger := zap.New(observerCore(), zap.Hooks(func(zapcore.Entry) error { probe(); return nil }))
	c = New(Config{StateDir: dir, FetchTimeout: 5 * time.Second, Logger: logger})
	c.now = func() time.Time { probe(); return time.Now() }
	if err := os.WriteFile(c.statePath(s.int.crlURL), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	s.srv.mu.Lock()
	s.srv.gate = gate
	s.srv.mu.Unlock()

	probing.Store(true)
	c.prepare(context.Background(), s.chain(s.good)) // its fetches wait for the gate
	probing.Store(false)
	close(gate)
	c.fetches.Wait()
	c.mu.RLock()
	src := c.crls[s.int.crlURL]
	c.mu.RUnlock()
	probing.Store(true)
	c.fetchCRL(src)
	probing.Store(false)
	c.Stop()
	if n := locked.Load(); n != 0 {
		t.Fatalf("%d times the lock was held while a CRL was read, verified or its state file read", n)
	}
}

func observerCore() zapcore.Core {
	core, _ := observer.New(zap.DebugLevel)
	return core
}

// At most maxFetches fetches run at once.
func TestFetchesBounded(t *testing.T) {
	release := make(chan struct{})
	var inFlight, most atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	var sources []string
	for i := range 2 * maxFetches {
		sources = append(sources, srv.URL+"/"+strconv.Itoa(i)+".crl")
	}
	c := New(Config{CRLs: sources, FetchTimeout: 10 * time.Second})
	c.Start()
	// Let every fetch that may start reach the server.
	for deadline := time.Now().Add(time.Second); inFlight.Load() < int64(len(sources)) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	c.Stop()
	if n := most.Load(); n > maxFetches {
		t.Fatalf("%d fetches at once, want at most %d", n, maxFetches)
	}
}

// A CRL on disk newer than the one fetched (another Checker, as the old
// config's during a reload, wrote it) is not overwritten.
func TestStateKeepsNewerCRL(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crl(t, 3))
	c := New(Config{StateDir: t.TempDir(), FetchTimeout: 2 * time.Second})
	t.Cleanup(c.Stop)
	expectReason(t, "good leaf", c.Check(context.Background(), s.chain(s.good)), "")
	c.fetches.Wait()
	path := c.statePath(s.int.crlURL)
	if err := os.WriteFile(path, s.int.crl(t, 5), 0o600); err != nil {
		t.Fatal(err)
	}
	s.srv.serve("/int.crl", s.int.crl(t, 4))
	refetch(t, c)
	c.fetches.Wait()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ParseCRL(data)
	if err != nil || list.Number.Int64() != 5 {
		t.Fatalf("state file holds CRL %v (%v), want number 5 kept", list.Number, err)
	}
}

// After a reload, the new Checker judges the open connections of the old
// one's clients by what the old one held.
func TestAdopt(t *testing.T) {
	s := newSetup(t)
	s.srv.serve("/int.crl", s.int.crl(t, 2, s.lost))
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	banned := s.int.issue(t, "banned", time.Now().Add(12*time.Hour))
	s.srv.serve("/denylist.jws", dlSignEntries(t, key, dlEntry(t, banned, "test")))
	cfg := Config{Denylist: s.srv.URL + "/denylist.jws", Signer: pub, MaxStale: time.Hour, FetchTimeout: 2 * time.Second}
	prev := newChecker(t, cfg)
	expectReason(t, "revoked leaf", prev.Check(context.Background(), s.chain(s.lost)), Revoked)
	refetch(t, prev)
	s.srv.fail(http.StatusServiceUnavailable)

	next := New(cfg)
	t.Cleanup(next.Stop)
	next.Adopt(prev)
	expectReason(t, "revoked leaf after a reload", next.Held(s.chain(s.lost)), Revoked)
	expectReason(t, "banned leaf after a reload", next.Held(s.chain(banned)), Banned)
	expectReason(t, "good leaf after a reload", next.Held(s.chain(s.good)), "")
	next.mu.RLock()
	src := next.crls[s.int.crlURL]
	fresh := src != nil && src.attempted && src.fetching == nil && !src.lastSuccess.IsZero()
	next.mu.RUnlock()
	if !fresh {
		t.Fatal("the adopted source is not marked as fetched: it would be fetched again at once")
	}
	next.Adopt(nil) // the first config: nothing to adopt
}

// The warning of a source not known yet is rate-limited too.
func TestUnknownSourceWarnedOnce(t *testing.T) {
	s := newSetup(t)
	core, logs := observer.New(zap.WarnLevel)
	c := New(Config{Logger: zap.New(core)})
	t.Cleanup(c.Stop)
	for range 3 {
		expectReason(t, "good leaf, its CRLs not known", c.Held(s.chain(s.good)), "")
	}
	if n := logs.FilterMessageSnippet("status unknown").Len(); n != 1 {
		t.Fatalf("%d warnings, want 1", n)
	}
}
