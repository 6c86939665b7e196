package caddymodule

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/nutsgate/nutsgate/mtlsident"
	"github.com/nutsgate/nutsgate/pki"
)

// clientCert makes a self-signed certificate for subject.
func clientCert(t testing.TB, subject pkix.Name) *x509.Certificate {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: subject, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// request is a request arriving with cert as its verified client
// certificate (nil for none), with a replacer as Caddy gives it.
func request(cert *x509.Certificate, header http.Header) (*http.Request, *caddy.Replacer) {
	r := httptest.NewRequest(http.MethodPost, "https://gw/n2n/x", nil)
	r.TLS = &tls.ConnectionState{}
	if cert != nil {
		r.TLS.PeerCertificates = []*x509.Certificate{cert}
		r.TLS.VerifiedChains = [][]*x509.Certificate{{cert}}
	}
	for k, v := range header {
		r.Header[k] = v
	}
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx), repl
}

func TestMTLSIdentForwards(t *testing.T) {
	cert := clientCert(t, pkix.Name{CommonName: "node-a", Organization: []string{"Nuts"}})
	for _, tc := range []struct {
		name   string
		m      MTLSIdent
		header string
		decode func(string) bool
	}{
		{"pem", MTLSIdent{Require: true}, "X-Ssl-Cert", func(v string) bool {
			pemText, err := url.QueryUnescape(v)
			return err == nil && strings.HasPrefix(pemText, "-----BEGIN CERTIFICATE-----\n")
		}},
		{"der", MTLSIdent{ForwardFormat: "der", ForwardHeader: "X-Client-Cert"}, "X-Client-Cert", func(v string) bool {
			return v == mtlsident.FormatDER.Encode(cert)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := provisioned(t, &tc.m)
			r, repl := request(cert, http.Header{"X-Ssl-Cert": {"forged"}, "X_ssl_cert": {"forged"}, "X-Client-Cert": {"forged", "forged"}})
			var next nextRecorder
			if err := m.ServeHTTP(httptest.NewRecorder(), r, &next); err != nil {
				t.Fatal(err)
			}
			got := next.got.Header
			if vals := got.Values(tc.header); len(vals) != 1 || !tc.decode(vals[0]) {
				t.Fatalf("%s: %q", tc.header, vals)
			}
			for key := range got {
				if key != tc.header && (strings.EqualFold(key, "x-ssl-cert") || strings.EqualFold(key, "x_ssl_cert") || strings.EqualFold(key, tc.header)) {
					t.Fatalf("a client-sent %s reached the node", key)
				}
			}
			if s, _ := repl.GetString("mtls.client.subject"); s != "CN=node-a,O=Nuts" {
				t.Fatalf("subject placeholder %q", s)
			}
			if cn, _ := repl.GetString("mtls.client.cn"); cn != "node-a" {
				t.Fatalf("cn placeholder %q", cn)
			}
		})
	}
}

func TestMTLSIdentRefuses(t *testing.T) {
	dir := t.TempDir()
	denyFile := filepath.Join(dir, "deny")
	if err := os.WriteFile(denyFile, []byte("# refused\nCN=from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := provisioned(t, &MTLSIdent{Require: true, Deny: []string{"cn = INLINE , o=nuts"}, DenyFile: denyFile})
	twoCN, err := x509.ParseCertificate(clientCert(t, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{2, 5, 4, 3}, Value: "a"}, {Type: []int{2, 5, 4, 3}, Value: "b"}}}).Raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		cert       *x509.Certificate
		status     int
		grpcStatus string
	}{
		{"no certificate", nil, http.StatusUnauthorized, "16"},
		{"inline deny", clientCert(t, pkix.Name{CommonName: "inline", Organization: []string{"Nuts"}}), http.StatusForbidden, "7"},
		{"deny file", clientCert(t, pkix.Name{CommonName: "from-file"}), http.StatusForbidden, "7"},
		{"two CNs", twoCN, http.StatusForbidden, "7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var next nextRecorder
			r, _ := request(tc.cert, nil)
			err := m.ServeHTTP(httptest.NewRecorder(), r, &next)
			var he caddyhttp.HandlerError
			if !errors.As(err, &he) || he.StatusCode != tc.status || next.got != nil {
				t.Fatalf("error %v (next called: %v), want %d", err, next.got != nil, tc.status)
			}
			r, _ = request(tc.cert, http.Header{"Content-Type": {"application/grpc+proto"}})
			w := httptest.NewRecorder()
			if err := m.ServeHTTP(w, r, &next); err != nil || next.got != nil {
				t.Fatalf("gRPC: error %v, next called %v", err, next.got != nil)
			}
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/grpc" || w.Header().Get("Grpc-Status") != tc.grpcStatus || w.Body.Len() != 0 {
				t.Fatalf("gRPC answer %d %v %q", w.Code, w.Header(), w.Body)
			}
		})
	}
}

// A client denied while a request of it is open: the request's context is cancelled, and
// the request gets no answer at all (the handler aborts, so the connection is closed or the
// stream reset), not the status the proxy returns for a cancelled request, which the client
// would read as the node's.
func TestMTLSIdentGlobalDenyEndsStreams(t *testing.T) {
	store := mtlsident.NewStore(filepath.Join(t.TempDir(), "deny"), sweepDenied)
	withStore(t, store)

	m := provisioned(t, &MTLSIdent{})
	cert := clientCert(t, pkix.Name{CommonName: "streamer"})
	r, _ := request(cert, nil)
	w := httptest.NewRecorder()
	inside := make(chan context.Context)
	aborted := make(chan any)
	go func() {
		defer func() { aborted <- recover() }()
		err := m.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			inside <- r.Context()
			<-r.Context().Done()
			// what reverse_proxy returns when its request is cancelled
			return caddyhttp.Error(499, r.Context().Err())
		}))
		t.Errorf("ServeHTTP returned %v for a request cut off by a deny, want it to abort", err)
	}()
	ctx := <-inside
	e, _ := mtlsident.ParseEntry("CN=streamer")
	if _, err := store.Add(e); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-aborted:
		if got != http.ErrAbortHandler {
			t.Fatalf("ServeHTTP of a request cut off by a deny panicked with %v, want http.ErrAbortHandler", got)
		}
	case <-time.After(time.Second):
		t.Fatal("the open request of a denied client was not ended")
	}
	if !mtlsident.CutOff(ctx) {
		t.Errorf("the request's context: cause %v, want mtlsident.ErrCutOff", context.Cause(ctx))
	}
	if w.Code != http.StatusOK || w.Body.Len() != 0 || len(w.Header()) != 0 {
		t.Errorf("the cut-off request was answered: %d %v %q", w.Code, w.Header(), w.Body)
	}
	r, _ = request(cert, nil)
	if err := m.ServeHTTP(httptest.NewRecorder(), r, &nextRecorder{}); err == nil {
		t.Fatal("the denied client passed")
	}
}

// max_open bounds the requests one client holds open at once: over it, 429 with Retry-After
// (RESOURCE_EXHAUSTED for gRPC), logged as too_many_open, and the next handler never sees it.
// The count is one per client across handlers (each compares it with its own max_open), and
// it returns to zero as the requests end.
func TestMTLSIdentMaxOpen(t *testing.T) {
	small := provisioned(t, &MTLSIdent{MaxOpen: 2})
	larger := provisioned(t, &MTLSIdent{MaxOpen: 3})
	cert := clientCert(t, pkix.Name{CommonName: "max-open-holder"})
	id, err := mtlsident.Identify(cert)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	inside := make(chan struct{})
	served := make(chan error)
	hold := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		inside <- struct{}{}
		<-release
		return nil
	})
	for _, m := range []*MTLSIdent{small, small, larger} {
		go func() {
			r, _ := request(cert, nil)
			served <- m.ServeHTTP(httptest.NewRecorder(), r, hold)
		}()
		<-inside
	}
	refusedBefore := refusalCount(t, "too_many_open")
	for _, m := range []*MTLSIdent{small, larger} {
		var next nextRecorder
		r, _ := request(cert, nil)
		w := httptest.NewRecorder()
		err := m.ServeHTTP(w, r, &next)
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests || next.got != nil || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("max_open %d, 3 open: error %v, Retry-After %q (next called: %v), want 429 with Retry-After 1", m.MaxOpen, err, w.Header().Get("Retry-After"), next.got != nil)
		}
		r, _ = request(cert, http.Header{"Content-Type": {"application/grpc"}})
		w = httptest.NewRecorder()
		if err := m.ServeHTTP(w, r, &next); err != nil || next.got != nil {
			t.Fatalf("gRPC: error %v, next called %v", err, next.got != nil)
		}
		if w.Code != http.StatusOK || w.Header().Get("Grpc-Status") != "8" || w.Body.Len() != 0 {
			t.Fatalf("gRPC answer %d %v %q, want trailers-only grpc-status 8", w.Code, w.Header(), w.Body)
		}
	}
	if got := refusalCount(t, "too_many_open") - refusedBefore; got != 4 {
		t.Fatalf("too_many_open refusals counted %v, want 4", got)
	}
	other := clientCert(t, pkix.Name{CommonName: "max-open-other"})
	r, _ := request(other, nil)
	if err := small.ServeHTTP(httptest.NewRecorder(), r, &nextRecorder{}); err != nil {
		t.Fatalf("another client: %v", err)
	}
	close(release)
	for range 3 {
		if err := <-served; err != nil {
			t.Fatal(err)
		}
	}
	if n := gateway.streams.OpenOf(id); n != 0 {
		t.Fatalf("%d requests of the client counted open after all ended", n)
	}
	r, _ = request(cert, nil)
	if err := small.ServeHTTP(httptest.NewRecorder(), r, &nextRecorder{}); err != nil {
		t.Fatalf("after the requests ended: %v", err)
	}
}

// refusalCount is nutsgate_mtls_refusals_total{reason=reason} now.
func refusalCount(t *testing.T, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := mtlsRefusals.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestGRPCMessage(t *testing.T) {
	if got := grpcMessage("client denied: 100% \u00e9\n"); got != "client denied: 100%25 %C3%A9%0A" {
		t.Fatalf("%q", got)
	}
}

func TestCaddyfileAdapt(t *testing.T) {
	out, err := adapt(`{
	nutsgate {
		deny_file /var/lib/nutsgate/deny
	}
}
:8443 {
	client_rate_limit {
		rate 50/1s
		burst 10
	}
	mtls_ident {
		require
		forward_format der
		deny "CN=a, O=b"
		max_open 20
	}
	reverse_proxy 127.0.0.1:8080
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"nutsgate":{"deny_file":"/var/lib/nutsgate/deny"}`,
		`{"deny":["CN=a, O=b"],"forward_format":"der","handler":"mtls_ident","max_open":20,"require":true},{"burst":10,"handler":"client_rate_limit","rate":"50/1s","zone":"client_rate_limit#1"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, out)
		}
	}
	for _, tc := range []struct{ body, err string }{
		{":80 {\n mtls_ident {\n deny not-a-dn\n }\n}", `deny: "not-a-dn" is not a subject DN`},
		{":80 {\n mtls_ident {\n forward_format xml\n }\n}", "forward_format"},
		{":80 {\n mtls_ident {\n deny CN=a, O=b\n }\n}", "quote a DN"},
		{":80 {\n mtls_ident {\n max_open 0\n }\n}", `max_open: "0" is not a positive whole number`},
		{":80 {\n mtls_ident {\n max_open -3\n }\n}", `max_open: "-3" is not a positive whole number`},
		{":80 {\n mtls_ident {\n max_open many\n }\n}", `max_open: "many" is not a positive whole number`},
		{":80 {\n mtls_ident {\n max_open\n }\n}", "max_open takes one value"},
		{":80 {\n mtls_ident {\n max_open 5\n max_open 6\n }\n}", "max_open: already specified"},
		{":80 {\n client_rate_limit {\n rate 5\n }\n}", `rate: invalid rate "5": want <events>/<duration>`},
		{":80 {\n client_rate_limit {\n burst 5\n }\n}", "rate is required"},
		{":80 {\n client_rate_limit {\n rate 5/1s\n max_keys -1\n }\n}", `max_keys: "-1" is not a positive whole number`},
		{"{\n nutsgate {\n deny_file\n }\n}\n:80", "wrong argument count"},
	} {
		_, err := adapt(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: error %v, want one naming the file and %q", tc.body, err, tc.err)
		}
	}
}

// BenchmarkMTLSIdent is the per-request cost of identifying a client seen
// before, checking the three deny lists (each holding an entry) and
// forwarding its certificate.
func BenchmarkMTLSIdent(b *testing.B) {
	dir := b.TempDir()
	denyFile := filepath.Join(dir, "deny")
	if err := os.WriteFile(denyFile, []byte("CN=someone-else\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	store := mtlsident.NewStore(filepath.Join(dir, "global"), nil)
	e, _ := mtlsident.ParseEntry("sha256:" + strings.Repeat("ab", 32))
	if _, err := store.Add(e); err != nil {
		b.Fatal(err)
	}
	withStore(b, store)
	m := &MTLSIdent{Require: true, Deny: []string{"CN=another"}, DenyFile: denyFile}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel) // ends watching the deny file
	if err := m.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	cert := clientCert(b, pkix.Name{CommonName: "node-a", Organization: []string{"Nuts"}})
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	// The handler's own cost is the difference between the two.
	b.Run("request setup only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			request(cert, nil)
		}
	})
	serve := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, _ := request(cert, nil)
			if err := m.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("setup and mtls_ident", serve)
	// As in a config with the nutsgate app: each request first sees that it has started.
	a, _ := startedApp(b, "sha256:"+strings.Repeat("ab", 32)+"\n")
	b.Cleanup(func() { a.Stop() })
	m.app = a
	b.Run("setup and mtls_ident, with the app", serve)
}

// A client whose chain holds a CA certificate that expires before its own
// is cut off when that CA's certificate expires: the sweep is set for the
// earliest notAfter of its chains, and the client is then expired.
func TestExpiryOfTheChain(t *testing.T) {
	leafEnd := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	caEnd := time.Now().Add(-time.Second).Truncate(time.Second) // just expired
	leaf := &x509.Certificate{NotAfter: leafEnd}
	chains := [][]*x509.Certificate{{leaf, {NotAfter: caEnd}, {NotAfter: leafEnd.Add(time.Hour)}}}
	id := mtlsident.Identity{NotAfter: leafEnd, Chains: chains}
	var r *pki.Refusal
	if err := expired(id); !errors.As(err, &r) || r.Reason != pki.Expired {
		t.Fatalf("client under an expired CA: %v, want an expired refusal", err)
	}
	soon := time.Now().Add(time.Hour).Truncate(time.Second)
	watchExpiry([][]*x509.Certificate{{leaf, {NotAfter: soon}}})
	if _, ok := expiryWatches.Load(soon.Unix()); !ok {
		t.Fatal("no sweep set for the CA's notAfter, the earliest of the chain")
	}
}

// Caddy starts a config's apps in no set order, so the http app's listeners can take a request
// before the nutsgate app has put its deny list in force. mtls_ident waits for it: the request
// of a client that deny_file names is refused once the app has started, never let through
// with the empty list of that moment; and if the config ends without starting, it gets 503.
func TestMTLSIdentAwaitsTheApp(t *testing.T) {
	withStore(t, nil) // no app has started yet
	a, _ := provisionedApp(t, "CN=early\n")
	t.Cleanup(func() { a.Stop() })
	m := provisioned(t, &MTLSIdent{})
	m.app = a // what Provision finds in a config with the app
	cert := clientCert(t, pkix.Name{CommonName: "early"})

	serve := func() (*nextRecorder, chan error) {
		r, _ := request(cert, nil)
		next, served := &nextRecorder{}, make(chan error, 1)
		go func() { served <- m.ServeHTTP(httptest.NewRecorder(), r, next) }()
		return next, served
	}
	next, served := serve()
	select {
	case err := <-served:
		t.Fatalf("a request before the app started was judged (error %v, next called %v), want it to wait", err, next.called())
	case <-time.After(100 * time.Millisecond):
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if status := statusOf(err); status != http.StatusForbidden || next.called() {
			t.Fatalf("after the app started: status %d, next called %v; want 403 by the deny_file", status, next.called())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request still waits after the app started")
	}

	b, endB := provisionedApp(t, "CN=early\n")
	m.app = b
	next, served = serve()
	endB() // the config ends (a failed reload) before b starts
	select {
	case err := <-served:
		if status := statusOf(err); status != http.StatusServiceUnavailable || next.called() {
			t.Fatalf("the config ended before its app started: error %v, next called %v; want 503", err, next.called())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request still waits after its config ended")
	}
}
