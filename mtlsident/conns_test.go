package mtlsident

import (
	"context"
	"crypto/x509/pkix"
	"runtime"
	"testing"
)

func TestStreamsSweep(t *testing.T) {
	a, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}}))
	b, _ := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-b")}}))
	var list *DenyList
	denied := func(id Identity) bool { _, ok := list.Denies(id); return ok }
	var s Streams
	ctxA, doneA := s.Open(context.Background(), a, denied)
	ctxB, doneB := s.Open(context.Background(), b, denied)
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
