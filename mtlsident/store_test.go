package mtlsident

import (
	"errors"
	"os"
	"path/filepath"
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
	// a hand edit with a line that does not parse: the others are in
	// force, the line is skipped, and a change keeps it in the file
	if err := os.WriteFile(path, []byte("CN=x\nnot a dn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(); err != nil {
		t.Fatalf("load with a bad line: %v", err)
	}
	if got := s.List().Entries(); len(got) != 1 || got[0].Text != "CN=x" {
		t.Fatalf("load with a bad line: entries in force %v, want [CN=x]", got)
	}
	if sk := s.Skipped(); len(sk) != 1 || sk[0].Line != 2 || sk[0].Text != "not a dn" || sk[0].Err == nil {
		t.Fatalf("load with a bad line: skipped %v, want line 2 \"not a dn\" with its error", sk)
	}
	if added, err := s.Add(a); !added || err != nil {
		t.Fatalf("add: %v %v", added, err)
	}
	data, err = os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), "\nCN=x\nCN=node-a,O=Nuts\n# The lines below") || !strings.HasSuffix(string(data), "\nnot a dn\n") {
		t.Fatalf("file after add: %q %v", data, err)
	}
	if sk := s.Skipped(); len(sk) != 1 || sk[0].Text != "not a dn" {
		t.Fatalf("skipped after add: %v", sk)
	}
	if _, err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// a failed write changes nothing: the path is a directory that is not
	// empty, which no rename (not even root's) replaces with a file
	if err := os.MkdirAll(filepath.Join(path, "occupied"), 0o700); err != nil {
		t.Fatal(err)
	}
	changes = 0
	before := s.List()
	if added, err := s.Add(a); added || err == nil || s.List() != before || changes != 0 {
		t.Fatalf("add onto a directory: added %v, error %v, entries %v (before %v), %d change notifications", added, err, s.List().Entries(), before.Entries(), changes)
	}
	if left, err := os.ReadDir(filepath.Dir(path)); err != nil || len(left) != 1 {
		t.Fatalf("a failed write left files behind: %v %v", left, err)
	}
	if _, err := NewStore("", nil).Add(a); !errors.Is(err, ErrNoFile) {
		t.Fatalf("store without file: %v", err)
	}
}
