package filewatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	var loads []string
	core, logs := observer.New(zap.InfoLevel)
	w := &Watcher{Path: path, Logger: zap.New(core), Load: func(data []byte) error {
		if string(data) == "bad" {
			return errors.New("bad content")
		}
		loads = append(loads, string(data))
		return nil
	}}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w.Check() // missing: logged once, nothing loaded
	w.Check()
	if len(loads) != 0 || logs.FilterMessageSnippet("unreadable").Len() != 1 {
		t.Fatalf("missing file: loads %q, %d logs", loads, logs.Len())
	}
	write("a")
	w.Check()
	w.Check()  // unchanged: not loaded again
	write("b") // same size, in place
	w.Check()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte("c"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	w.Check()
	write("bad")
	w.Check()
	w.Check() // a bad content is logged once
	if got := logs.FilterMessageSnippet("invalid").Len(); got != 1 {
		t.Fatalf("bad content logged %d times", got)
	}
	write("")
	w.Check()
	if want := []string{"a", "b", "c", ""}; len(loads) != len(want) || loads[0] != "a" || loads[1] != "b" || loads[2] != "c" || loads[3] != "" {
		t.Fatalf("loads %q, want %q", loads, want)
	}
}

func TestWatcherMissingIsEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	var loads []string
	w := &Watcher{Path: path, Logger: zap.NewNop(), MissingIsEmpty: true, Load: func(data []byte) error {
		loads = append(loads, string(data))
		return nil
	}}
	w.Prime([]byte("x"))
	w.Check()
	if len(loads) != 1 || loads[0] != "" {
		t.Fatalf("a missing file should load as empty: %q", loads)
	}
}

func TestWatcherRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	loaded := make(chan string, 10)
	w := &Watcher{Path: path, Logger: zap.NewNop(), Load: func(data []byte) error {
		loaded <- string(data)
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx, 10*time.Millisecond); close(done) }()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-loaded:
		if got != "x" {
			t.Fatalf("loaded %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the change was not seen")
	}
	cancel()
	<-done
}

// A file written in place is truncated, then written: a check between the two must not put
// the empty (or half-written) content in force, as that would lift every deny entry, or drop
// every key, until the next check. The content is taken once it has stopped changing.
func TestWatcherHalfWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	var loads []string
	// the writer finishes 10 ms after the truncation: far within Settle, however slow the machine
	w := &Watcher{Path: path, Logger: zap.NewNop(), Settle: 500 * time.Millisecond, Load: func(data []byte) error {
		loads = append(loads, string(data))
		return nil
	}}
	if err := os.WriteFile(path, []byte("CN=a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Check()
	// the writer has truncated the file and writes the rest a moment later
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		time.Sleep(10 * time.Millisecond)
		_, err := f.WriteString("CN=a\nCN=b\n")
		wrote <- errors.Join(err, f.Close())
	}()
	w.Check() // reads the truncated file
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	w.Check()
	if want := []string{"CN=a\n", "CN=a\nCN=b\n"}; !slices.Equal(loads, want) {
		t.Fatalf("loads %q, want %q: a half-written file was put in force", loads, want)
	}
}

// A Load that finds the file changed again (ErrChanged) leaves nothing recorded: the next
// check hands the content over again, and nothing is logged.
func TestWatcherLoadFindsChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	calls := 0
	w := &Watcher{Path: path, Logger: zap.New(core), Settle: time.Millisecond, Load: func([]byte) error {
		calls++
		if calls == 1 {
			return ErrChanged
		}
		return nil
	}}
	w.Check()
	w.Check()
	w.Check() // loaded at the second: unchanged since
	if calls != 2 || logs.Len() != 0 {
		t.Fatalf("Load called %d times, %d log lines; want 2 and none", calls, logs.Len())
	}
}
