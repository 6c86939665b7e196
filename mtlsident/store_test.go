package mtlsident

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	changes := 0
	s := NewStore(path, func() { changes++ })
	if err := s.Load(); err != nil || len(s.List().Entries()) != 0 {
		t.Fatalf("a missing file is an empty list: %v", err)
	}
	changes = 0
	a, _ := ParseEntry("CN=node-a,O=Nuts")
	if added, err := s.Add(a); !added || err != nil {
		t.Fatalf("add: %v %v", added, err)
	}
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), "\nCN=node-a,O=Nuts\n") {
		t.Fatalf("file after add: %q %v", data, err)
	}
	if added, _ := s.Add(a); added {
		t.Fatal("added twice")
	}
	// a second store on the same file sees the entry: it survives a restart
	again := NewStore(path, nil)
	if err := again.Load(); err != nil || len(again.List().Entries()) != 1 {
		t.Fatalf("reloaded: %v %v", again.List().Entries(), err)
	}
	other, _ := ParseEntry("cn=NODE-A, o=nuts")
	if removed, err := s.Remove(other); !removed || err != nil {
		t.Fatalf("remove by another spelling: %v %v", removed, err)
	}
	if changes != 2 {
		t.Fatalf("%d change notifications, want 2", changes)
	}
	// a hand edit that does not parse keeps the list in force
	if err := os.WriteFile(path, []byte("CN=x\nnot a dn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(); err == nil || !strings.HasPrefix(err.Error(), path+":2: ") {
		t.Fatalf("bad reload: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// a failed write changes nothing
	if err := os.Chmod(filepath.Dir(path), 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(filepath.Dir(path), 0o700)
	if os.Geteuid() != 0 { // root writes anywhere
		if added, err := s.Add(a); added || err == nil || len(s.List().Entries()) != 0 {
			t.Fatalf("add into a read-only directory: %v %v %v", added, err, s.List().Entries())
		}
	}
	if _, err := NewStore("", nil).Add(a); !errors.Is(err, ErrNoFile) {
		t.Fatalf("store without file: %v", err)
	}
}

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
