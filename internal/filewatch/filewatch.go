// Package filewatch keeps something in step with a file on disk, such as an
// authorized_keys file or a deny list, without a config reload: the file is
// read every interval and, whenever its content changed, handed over again.
//
// Polling the content, rather than watching file system events, sees every
// way of changing a file (a rename over it, an in-place write, an edit on a
// mounted volume) at the cost of one small read per interval.
package filewatch

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"
)

// DefaultInterval is how often a file is read unless told otherwise.
const DefaultInterval = 500 * time.Millisecond

// DefaultSettle is how long a changed content must stay the same before it
// is put in force, unless told otherwise. A file written in place is truncated, then written: read between
// the two, it is empty or half written. Writing the file elsewhere and
// renaming it over the old one is never seen half done.
const DefaultSettle = 50 * time.Millisecond

// Watcher hands each new content of a file to Load.
type Watcher struct {
	// Path is the file.
	Path string
	// Load puts a new content in force. When it fails, the content in force
	// stays; the error is logged once for that content.
	Load func(data []byte) error
	// Logger receives load and read errors.
	Logger *zap.Logger
	// MissingIsEmpty makes a file that does not exist count as an empty
	// one, instead of leaving the content in force.
	MissingIsEmpty bool
	// Settle is how long a changed content must stay the same before it is
	// put in force. Default: DefaultSettle.
	Settle time.Duration

	last    []byte // the content last handed to Load
	missing bool   // the file could not be read at the last check
}

// Prime records data as the content in force, so that Check calls Load only
// once the file differs from it.
func (w *Watcher) Prime(data []byte) { w.last = data }

// ErrChanged is what Load returns when the file no longer holds the
// content it was given (it changed again meanwhile): nothing is logged, and
// the next check reads the file anew.
var ErrChanged = errors.New("the file changed while it was loaded")

// Check reads the file and hands it to Load if it changed and then stayed
// the same for w.Settle (a content still changing is left to a later check).
// A file that cannot be read (removed, unless MissingIsEmpty, or unreadable)
// leaves the content in force and is logged once.
func (w *Watcher) Check() { w.check(context.Background()) }

// check is Check, which gives up when ctx ends.
func (w *Watcher) check(ctx context.Context) {
	data, ok := w.read()
	if !ok || (w.last != nil && bytes.Equal(data, w.last)) {
		return
	}
	select {
	case <-time.After(cmp.Or(w.Settle, DefaultSettle)):
	case <-ctx.Done():
		return
	}
	if again, ok := w.read(); !ok || !bytes.Equal(again, data) {
		return
	}
	err := w.Load(data)
	if errors.Is(err, ErrChanged) {
		return
	}
	w.last = data
	if err != nil {
		w.Logger.Error("file invalid; keeping what is in force", zap.String("file", w.Path), zap.Error(err))
	}
}

// read returns the file's content, or false if it cannot be read.
func (w *Watcher) read() ([]byte, bool) {
	data, err := os.ReadFile(w.Path)
	if w.MissingIsEmpty && errors.Is(err, fs.ErrNotExist) {
		data, err = []byte{}, nil
	}
	if err != nil {
		if !w.missing {
			w.Logger.Error("file unreadable; keeping what is in force", zap.String("file", w.Path), zap.Error(err))
			w.missing = true
		}
		return nil, false
	}
	w.missing = false
	return data, true
}

// Run calls Check every interval until ctx ends.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil { // both were ready: the end wins
				return
			}
			w.check(ctx)
		}
	}
}
