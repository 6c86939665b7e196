package mtlsident

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/internal/filewatch"
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

// The watcher's load puts in force only the content it saw settle: if the file holds another
// by then (a change through the store, or another edit), nothing changes and the watcher is
// told to look again.
func TestStoreLoadSettled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	if err := os.WriteFile(path, []byte("CN=a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewStore(path, nil)
	if err := s.load([]byte("")); !errors.Is(err, filewatch.ErrChanged) || len(s.List().Entries()) != 0 {
		t.Fatalf("load of a content the file no longer holds: %v, %d entries; want ErrChanged and nothing", err, len(s.List().Entries()))
	}
	if err := s.load([]byte("CN=a\n")); err != nil || len(s.List().Entries()) != 1 {
		t.Fatalf("load of the file's content: %v, %d entries; want 1", err, len(s.List().Entries()))
	}
}

// TestStoreWatch: Watch loads an edit of the file by hand and calls onLoad,
// but not for the content Load already put in force, and not once its
// context has ended.
func TestStoreWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	if err := os.WriteFile(path, []byte("CN=a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewStore(path, nil)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	loads := make(chan int, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Watch(ctx, 5*time.Millisecond, zap.NewNop(), func() { loads <- len(s.List().Entries()) })
	select {
	case n := <-loads:
		t.Fatalf("the content already in force was loaded again (%d entries)", n)
	case <-time.After(100 * time.Millisecond): // twenty checks
	}
	if err := os.WriteFile(path, []byte("CN=a\nCN=b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := <-loads; n != 2 {
		t.Fatalf("after an edit: %d entries in force, want 2", n)
	}
	cancel()
	time.Sleep(100 * time.Millisecond) // a check under way ends
	for len(loads) > 0 {
		<-loads
	}
	if err := os.WriteFile(path, []byte("CN=c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-loads:
		t.Fatalf("an edit was loaded after the watch ended (%d entries)", n)
	case <-time.After(100 * time.Millisecond):
	}
	if got := s.List().Entries(); len(got) != 2 {
		t.Fatalf("entries in force after the watch ended: %v, want the two of before", got)
	}
}
