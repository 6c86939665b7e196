package mtlsident

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStreamsSweep(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	b, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-b")}}))
	var list *DenyList
	denied := func(id Identity) bool { _, ok := list.Denies(id); return ok }
	var s Streams
	ctxA, doneA, _ := s.Open(context.Background(), a, 0, denied)
	ctxB, doneB, _ := s.Open(context.Background(), b, 0, denied)
	defer doneB()
	if n := s.Sweep(); n != 0 {
		t.Fatalf("swept %d with no list", n)
	}
	e, _ := ParseEntry("CN=node-a")
	list = NewDenyList([]Entry{e})
	if n := s.Sweep(); n != 1 || !CutOff(ctxA) || ctxB.Err() != nil {
		t.Fatalf("sweep: %d, a %v, b %v", n, context.Cause(ctxA), ctxB.Err())
	}
	doneA() // done after the sweep is harmless
	if s.Len() != 1 {
		t.Fatalf("%d open, want 1", s.Len())
	}
	doneB()
	if CutOff(ctxB) || ctxB.Err() == nil {
		t.Fatalf("a request that ended by itself: cause %v, want cancelled and not cut off", context.Cause(ctxB))
	}
}

// A request registered after a deny that its caller's check did not see (the sweep may have
// run before it was registered) is cut off at once.
func TestStreamsOpenDenied(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	var s Streams
	ctx, done, ok := s.Open(context.Background(), a, 1, func(Identity) bool { return true })
	if !ok || !CutOff(ctx) || s.Len() != 0 {
		t.Fatalf("open of a denied client: ok %v, cause %v, %d open; want cut off at once", ok, context.Cause(ctx), s.Len())
	}
	done()
	if n := s.OpenOf(a); n != 0 {
		t.Fatalf("%d counted after done, want 0", n)
	}
}

// closer records whether it was closed.
type closer struct{ closed bool }

func (c *closer) Close() error { c.closed = true; return nil }

func TestConnsSweep(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	b, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-b")}}))
	var list *DenyList
	denied := func(id Identity) bool { _, ok := list.Denies(id); return ok }
	var cs Conns
	ca, cb, anon := &closer{}, &closer{}, &closer{}
	ha, hb, hanon := cs.Track(ca), cs.Track(cb), cs.Track(anon)
	ha.Identified("handler", a, denied)
	ha.Identified("handler", a, denied) // again: no second entry
	hb.Identified("handler", b, denied)
	if n := cs.Sweep(); n != 0 {
		t.Fatalf("closed %d with no list", n)
	}
	e, _ := ParseEntry("CN=node-a")
	list = NewDenyList([]Entry{e})
	if n := cs.Sweep(); n != 1 || !ca.closed || cb.closed || anon.closed {
		t.Fatalf("sweep closed %d: a %v b %v anonymous %v", n, ca.closed, cb.closed, anon.closed)
	}
	if n := cs.Sweep(); n != 0 {
		t.Fatalf("a closed connection was closed again (%d)", n)
	}
	runtime.KeepAlive(hb)
	runtime.KeepAlive(hanon)
}

// A connection the server let go of is forgotten: the registry does not
// grow with the connections a long-running gateway has seen.
func TestConnsForget(t *testing.T) {
	var cs Conns
	for range 3 * pruneEvery {
		cs.Track(&closer{})
	}
	runtime.GC()
	cs.Track(&closer{})
	cs.Sweep() // drops what the collector took
	if n := cs.Len(); n > pruneEvery {
		t.Fatalf("%d connections tracked after all but one were let go", n)
	}
}

// selfSigned makes a certificate and key for cn that is its own issuer.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
}

// serverConn is the server side of a TLS connection; it records whether it
// was closed.
type serverConn struct {
	*tls.Conn
	closed atomic.Bool
}

func (c *serverConn) Close() error { c.closed.Store(true); return c.Conn.Close() }

// tlsPipe connects a client presenting client (none if nil) to a server that
// verifies client certificates if given, issued by trusted, over an in-memory
// pipe. wrap, if not nil, wraps the client's end. The handshake is not run.
func tlsPipe(t *testing.T, client *tls.Certificate, trusted *x509.CertPool, wrap func(net.Conn) net.Conn) (*serverConn, *tls.Conn) {
	t.Helper()
	s, c := net.Pipe()
	t.Cleanup(func() { s.Close(); c.Close() })
	if wrap != nil {
		c = wrap(c)
	}
	srvCert := selfSigned(t, "server.test")
	srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: trusted})
	cfg := &tls.Config{InsecureSkipVerify: true} // the server's side is under test
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	return &serverConn{Conn: srv}, tls.Client(c, cfg)
}

// handshake runs both sides' handshakes.
func handshake(t *testing.T, srv *serverConn, cl *tls.Conn) {
	t.Helper()
	errs := make(chan error, 1)
	go func() { errs <- cl.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// A connection that finished its TLS handshake with a verified client
// certificate and never sent a request is closed by Sweep once a deny check
// that applies to it refuses its client; others are left open.
func TestConnsSweepSilentHandshaken(t *testing.T) {
	denied, allowed := selfSigned(t, "silent-denied"), selfSigned(t, "silent-allowed")
	pool := x509.NewCertPool()
	pool.AddCert(denied.Leaf)
	pool.AddCert(allowed.Leaf)
	var list *DenyList
	var mu sync.Mutex
	deniedBy := func(id Identity) bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := list.Denies(id)
		return ok
	}
	var cs Conns
	conns := map[string]*serverConn{}
	var handles []*Conn
	for name, cert := range map[string]*tls.Certificate{"denied": &denied, "allowed": &allowed, "anonymous": nil} {
		srv, cl := tlsPipe(t, cert, pool, nil)
		handshake(t, srv, cl)
		h := cs.Track(srv)
		h.Watch(deniedBy)
		conns[name], handles = srv, append(handles, h)
	}
	if n := cs.Sweep(); n != 0 {
		t.Fatalf("closed %d with no list", n)
	}
	cs.checks.Wait()
	e, _ := ParseEntry("CN=silent-denied")
	mu.Lock()
	list = NewDenyList([]Entry{e})
	mu.Unlock()
	cs.Sweep()
	cs.checks.Wait()
	for name, srv := range conns {
		if srv.closed.Load() != (name == "denied") {
			t.Errorf("%s connection: closed %v", name, srv.closed.Load())
		}
	}
	if n := cs.Sweep(); n != 0 {
		t.Fatalf("a closed connection was closed again (%d)", n)
	}
	runtime.KeepAlive(handles)
}

// gatedConn blocks every write after the first until open is closed, and
// closes blocked when it starts blocking.
type gatedConn struct {
	net.Conn
	writes  int
	open    chan struct{}
	blocked chan struct{}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	if g.writes++; g.writes == 2 {
		close(g.blocked)
	}
	if g.writes >= 2 {
		<-g.open
	}
	return g.Conn.Write(p)
}

// Sweep never waits on a handshake under way (a hostile client can stall
// one): it returns at once, and the connection is judged when its handshake
// ends.
func TestConnsSweepMidHandshake(t *testing.T) {
	client := selfSigned(t, "slow-denied")
	pool := x509.NewCertPool()
	pool.AddCert(client.Leaf)
	gate := &gatedConn{open: make(chan struct{}), blocked: make(chan struct{})}
	srv, cl := tlsPipe(t, &client, pool, func(c net.Conn) net.Conn { gate.Conn = c; return gate })
	clientDone := make(chan error, 1)
	go func() { clientDone <- cl.Handshake() }()
	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.Handshake() }()
	<-gate.blocked // the server sent its flight and waits for the client's certificate

	e, _ := ParseEntry("CN=slow-denied")
	list := NewDenyList([]Entry{e})
	var cs Conns
	h := cs.Track(srv)
	h.Watch(func(id Identity) bool { _, ok := list.Denies(id); return ok })
	swept := make(chan int)
	go func() { swept <- cs.Sweep() }()
	select {
	case n := <-swept:
		if n != 0 {
			t.Fatalf("Sweep closed %d connections whose handshake is under way", n)
		}
	case <-time.After(5 * time.Second):
		close(gate.open)
		t.Fatal("Sweep is blocked by a handshake under way")
	}
	if srv.closed.Load() {
		t.Fatal("closed before the handshake ended")
	}
	close(gate.open)
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}
	<-clientDone
	cs.checks.Wait()
	if !srv.closed.Load() {
		t.Fatal("the denied client's connection is open after its handshake ended")
	}
	runtime.KeepAlive(h)
}

// A connection that carries many requests (QUIC) is tracked once, closed by
// Sweep once its client is denied, and forgotten when its context ends.
func TestConnsTrackOnce(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "quic-a")}}))
	var list *DenyList
	denied := func(id Identity) bool { _, ok := list.Denies(id); return ok }
	var cs Conns
	ctx, cancel := context.WithCancel(context.Background())
	key, c := new(int), &closer{}
	h := cs.TrackOnce(ctx, key, c)
	for range 3 { // a request each
		if again := cs.TrackOnce(ctx, key, &closer{}); again != h {
			t.Fatal("a second Conn for the same connection")
		}
		h.Identified("handler", a, denied)
	}
	if cs.Len() != 1 {
		t.Fatalf("%d connections tracked, want 1", cs.Len())
	}
	e, _ := ParseEntry("CN=quic-a")
	list = NewDenyList([]Entry{e})
	if n := cs.Sweep(); n != 1 || !c.closed {
		t.Fatalf("sweep closed %d (closed %v), want the connection", n, c.closed)
	}
	other := cs.TrackOnce(ctx, new(int), &closer{})
	cancel() // the connections end
	deadline := time.Now().Add(5 * time.Second)
	for cs.Len() != 0 || cs.keyedLen() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still tracked after their context ended", cs.Len())
		}
		time.Sleep(time.Millisecond)
	}
	runtime.KeepAlive(other)
}

func (cs *Conns) keyedLen() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.keyed)
}

// BenchmarkConnsTrack is the per-connection cost of tracking a connection of
// a server with two mtls_ident handlers.
func BenchmarkConnsTrack(b *testing.B) {
	var cs Conns
	denied := func(Identity) bool { return false }
	b.Run("track only (as before)", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cs.Track(&closer{})
		}
	})
	b.Run("track and two deny checks", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := cs.Track(&closer{})
			h.Watch(denied)
			h.Watch(denied)
		}
	})
}

// BenchmarkConnsTrackOnceSeen is the per-request cost of finding the tracked
// Conn of a QUIC connection and recording its (known) client.
func BenchmarkConnsTrackOnceSeen(b *testing.B) {
	a, _ := FromCertificate(certWith(b, pkix.RDNSequence{{atv(oidCommonName, "quic-a")}}))
	var cs Conns
	denied := func(Identity) bool { return false }
	key := new(int)
	cs.TrackOnce(context.Background(), key, &closer{}).Identified("handler", a, denied)
	b.ReportAllocs()
	for b.Loop() {
		cs.TrackOnce(context.Background(), key, &closer{}).Identified("handler", a, denied)
	}
}

// Open admits at most max requests of one client at a time, counting by subject (two
// certificates of the same subject share the count), never more under any interleaving of
// concurrent opens and dones, and the count returns to zero once all are done.
func TestStreamsMaxOpen(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	a2, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}})) // same subject, another certificate
	b, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-b")}}))
	if a.Fingerprint == a2.Fingerprint {
		t.Fatal("the two certificates of node-a are the same")
	}
	never := func(Identity) bool { return false }
	var s Streams
	const max = 3
	var dones []func()
	for i := range max {
		id := a
		if i%2 == 1 {
			id = a2
		}
		_, done, ok := s.Open(context.Background(), id, max, never)
		if !ok {
			t.Fatalf("open %d of %d refused", i+1, max)
		}
		dones = append(dones, done)
	}
	if _, _, ok := s.Open(context.Background(), a2, max, never); ok {
		t.Fatalf("open %d of a subject with max %d admitted", max+1, max)
	}
	if n := s.OpenOf(a); n != max {
		t.Fatalf("%d open of node-a, want %d", n, max)
	}
	_, doneB, ok := s.Open(context.Background(), b, max, never)
	if !ok {
		t.Fatal("another client was refused")
	}
	if _, _, ok := s.Open(context.Background(), a, max+1, never); !ok {
		t.Fatal("a handler with a higher max_open refused the client")
	}
	dones[0]()
	dones[0]() // a second call changes nothing
	ctx, done, ok := s.Open(context.Background(), a, max+1, never)
	if !ok || ctx.Err() != nil {
		t.Fatalf("open after a done: admitted %v, ctx %v", ok, ctx.Err())
	}
	dones[0] = done
	if _, _, ok := s.Open(context.Background(), a, max+1, never); ok {
		t.Fatalf("open over max %d admitted", max+1)
	}
	doneB()

	// Many goroutines opening and closing at once: never more than max admitted at a time.
	var inside, peak atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 200 {
				_, done, ok := s.Open(context.Background(), b, max, never)
				if !ok {
					runtime.Gosched()
					continue
				}
				n := inside.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				runtime.Gosched()
				inside.Add(-1)
				done()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > max || p < 1 {
		t.Fatalf("at most %d requests were open at once, want 1..%d", p, max)
	}
	for _, done := range dones {
		done()
	}
	if a, b := s.OpenOf(a), s.OpenOf(b); a != 1 || b != 0 {
		// one of a's opens above (with max+1) was never done
		t.Fatalf("open after all done: node-a %d (want 1), node-b %d (want 0)", a, b)
	}
}

// A client whose request was swept still counts until its request is done: the handler is
// still running it.
func TestStreamsMaxOpenSwept(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	var denied bool
	var s Streams
	ctx, done, ok := s.Open(context.Background(), a, 1, func(Identity) bool { return denied })
	if !ok {
		t.Fatal("refused")
	}
	denied = true
	if n := s.Sweep(); n != 1 || ctx.Err() == nil {
		t.Fatalf("swept %d, ctx %v", n, ctx.Err())
	}
	if n := s.OpenOf(a); n != 1 {
		t.Fatalf("%d open after the sweep, want 1 until done", n)
	}
	done()
	if n, l := s.OpenOf(a), s.Len(); n != 0 || l != 0 {
		t.Fatalf("after done: %d open of the client, %d in all", n, l)
	}
}

// BenchmarkStreamsOpen is the cost of registering and ending one request, from both cores at
// once, all of one client.
func BenchmarkStreamsOpen(b *testing.B) {
	id, _ := FromCertificate(certWith(b, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	var s Streams
	never := func(Identity) bool { return false }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, done, ok := s.Open(context.Background(), id, 1<<20, never)
			if !ok {
				b.Fatal("refused")
			}
			done()
		}
	})
}

// The counts of clients with nothing open are dropped now and then: the registry does not grow
// with the clients a long-running gateway has seen.
func TestStreamsForgetsClients(t *testing.T) {
	var s Streams
	never := func(Identity) bool { return false }
	held := Identity{subjectKey: "cn=held"}
	_, doneHeld, _ := s.Open(context.Background(), held, 5, never)
	for i := range 3 * minPruneAt {
		_, done, ok := s.Open(context.Background(), Identity{subjectKey: "cn=" + strconv.Itoa(i)}, 1, never)
		if !ok {
			t.Fatalf("client %d refused", i)
		}
		done()
	}
	if n := len(s.clients); n > minPruneAt {
		t.Fatalf("%d client counts kept, want at most %d", n, minPruneAt)
	}
	if n := s.OpenOf(held); n != 1 {
		t.Fatalf("the client with a request open counts %d, want 1", n)
	}
	doneHeld()
}

// Sweep closes a denied client's TLS connection at once even when the client
// reads nothing: (*tls.Conn).Close would first send it a close_notify alert
// and wait up to 5 s for that write.
func TestConnsSweepClientNotReading(t *testing.T) {
	client := selfSigned(t, "not-reading")
	pool := x509.NewCertPool()
	pool.AddCert(client.Leaf)
	srv, cl := tlsPipe(t, &client, pool, nil) // net.Pipe: a write waits for the reader
	handshake(t, srv, cl)
	id, err := FromCertificate(client.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	var cs Conns
	h := cs.Track(srv.Conn)
	h.Identified("handler", id, func(Identity) bool { return true })
	swept := make(chan int)
	go func() { swept <- cs.Sweep() }()
	select {
	case n := <-swept:
		if n != 1 {
			t.Fatalf("Sweep closed %d connections, want 1", n)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Sweep waits on a client that does not read")
	}
	if _, err := cl.Read(make([]byte, 1)); err == nil {
		t.Error("the client's connection is still open")
	}
	runtime.KeepAlive(h)
}
