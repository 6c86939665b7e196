package mtlsident

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/internal/atomicfile"
	"github.com/nutsgate/nutsgate/internal/filewatch"
)

// Store is a deny list kept in a file: every change is written to the file
// (atomically) before it takes effect, and edits of the file by hand are
// read back by Load, or by Watch as they happen. A Store with no file keeps
// its list in memory only. It is safe for concurrent use.
type Store struct {
	path     string
	list     atomic.Pointer[DenyList]
	mu       sync.Mutex    // serialises changes
	skipped  []SkippedLine // the file's lines that do not parse; under mu
	read     []byte        // the content Load last read; under mu
	onChange func()
}

// NewStore returns a store for the file at path ("" for none), calling
// onChange (if not nil) after every change of the list in force.
func NewStore(path string, onChange func()) *Store {
	s := &Store{path: path, onChange: onChange}
	s.list.Store(NewDenyList(nil))
	return s
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// List returns the list in force.
func (s *Store) List() *DenyList { return s.list.Load() }

// Load reads the file and puts its list in force. A file that does not
// exist is an empty list. Lines that do not parse are skipped (Skipped
// returns them) and the others are in force; only a file that cannot be
// read is an error, and leaves the list in force. The file is read under
// the same lock as changes are written, so a load never puts back a list
// older than a change it raced with.
func (s *Store) Load() error { return s.load(nil) }

// load is Load; with want not nil, the file is loaded only if it holds
// want, else the error is filewatch.ErrChanged.
func (s *Store) load(want []byte) error {
	if s.path == "" {
		return nil
	}
	s.mu.Lock()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = []byte{}, nil
	}
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("reading deny file: %v", err)
	}
	if want != nil && !bytes.Equal(data, want) {
		s.mu.Unlock()
		return filewatch.ErrChanged
	}
	list, skipped := ParseDenyFile(data)
	s.list.Store(list)
	s.skipped = skipped
	s.read = data
	s.mu.Unlock()
	s.changed()
	return nil
}

// Watch keeps the list in step with edits of the file by hand until ctx
// ends: the file is read every interval and, once its content differs from
// what Load last read, loaded again, after which onLoad (if not nil) is
// called. A file that is removed counts as empty; one that cannot be read,
// or whose load fails, leaves the list in force and is logged to logger.
// Call Watch after a Load, so that the content in force is not loaded
// twice; it returns at once. A store with no file has nothing to watch.
func (s *Store) Watch(ctx context.Context, interval time.Duration, logger *zap.Logger, onLoad func()) {
	if s.path == "" {
		return
	}
	// The file is read again under the lock of changes: a change through
	// the store made since the watcher read it is never undone, and the
	// content in force is the one that settled.
	w := &filewatch.Watcher{Path: s.path, Logger: logger, MissingIsEmpty: true, Load: func(data []byte) error {
		if err := s.load(data); err != nil {
			return err
		}
		if onLoad != nil {
			onLoad()
		}
		return nil
	}}
	s.mu.Lock()
	w.Prime(s.read)
	s.mu.Unlock()
	go w.Run(ctx, interval)
}

// Skipped returns the lines of the file that did not parse when it was
// last read; a change through the store writes them back as they were.
func (s *Store) Skipped() []SkippedLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}

// ErrNoFile is returned by Add and Remove on a store with no file.
var ErrNoFile = errors.New("no deny_file is configured, so a change could not survive a restart")

// Add denies e: the file is written first, then the entry takes effect. It
// reports whether e was new.
func (s *Store) Add(e Entry) (bool, error) {
	return s.change(func(d *DenyList) (*DenyList, bool) { return d.With(e) })
}

// Remove lifts e, by meaning (another spelling of the same DN works). It
// reports whether e was there.
func (s *Store) Remove(e Entry) (bool, error) {
	return s.change(func(d *DenyList) (*DenyList, bool) { return d.Without(e) })
}

// Replace puts entries in force in place of the list, the file written
// first, and reports whether the list changed (by meaning: entries only in
// another order or spelling change nothing).
func (s *Store) Replace(entries []Entry) (bool, error) {
	return s.change(func(d *DenyList) (*DenyList, bool) {
		n := NewDenyList(entries)
		return n, !d.Same(n)
	})
}

func (s *Store) change(edit func(*DenyList) (*DenyList, bool)) (bool, error) {
	if s.path == "" {
		return false, ErrNoFile
	}
	s.mu.Lock()
	list, changed := edit(s.list.Load())
	if changed {
		data := FormatDenyFile(list, s.skipped)
		if err := atomicfile.Write(s.path, data, 0o600); err != nil {
			s.mu.Unlock()
			return false, err
		}
		s.list.Store(list)
		_, s.skipped = ParseDenyFile(data) // the same lines, numbered as now written
	}
	s.mu.Unlock()
	if changed {
		s.changed()
	}
	return changed, nil
}

func (s *Store) changed() {
	if s.onChange != nil {
		s.onChange()
	}
}
