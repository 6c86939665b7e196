package mtlsident

import (
	"context"
	"crypto/x509/pkix"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
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
	if n := s.Sweep(); n != 1 || ctxA.Err() == nil || ctxB.Err() != nil {
		t.Fatalf("sweep: %d, a %v, b %v", n, ctxA.Err(), ctxB.Err())
	}
	doneA() // done after the sweep is harmless
	if s.Len() != 1 {
		t.Fatalf("%d open, want 1", s.Len())
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
