package mtlsident

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"weak"
)

// Store is a deny list kept in a file: every change is written to the file
// (atomically) before it takes effect, and edits of the file by hand are
// read back by Reload. A Store with no file keeps its list in memory only.
// It is safe for concurrent use.
type Store struct {
	path     string
	list     atomic.Pointer[DenyList]
	mu       sync.Mutex // serialises changes
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
// exist is an empty list; one that does not parse is an error naming the
// file and line, and leaves the list in force. The file is read under the
// same lock as changes are written, so a load never puts back a list older
// than a change it raced with.
func (s *Store) Load() error {
	if s.path == "" {
		return nil
	}
	s.mu.Lock()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = nil, nil
	}
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("reading deny file: %v", err)
	}
	list, err := ParseDenyFile(data)
	if err != nil {
		s.mu.Unlock()
		var le *LineError
		if errors.As(err, &le) {
			return fmt.Errorf("%s:%d: %v", s.path, le.Line, le.Err)
		}
		return err
	}
	s.list.Store(list)
	s.mu.Unlock()
	s.changed()
	return nil
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

func (s *Store) change(edit func(*DenyList) (*DenyList, bool)) (bool, error) {
	if s.path == "" {
		return false, ErrNoFile
	}
	s.mu.Lock()
	list, changed := edit(s.list.Load())
	if changed {
		if err := WriteFileAtomic(s.path, FormatDenyFile(list), 0o600); err != nil {
			s.mu.Unlock()
			return false, err
		}
		s.list.Store(list)
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

// Streams tracks the requests in flight of identified clients, so that
// denying a client also ends what it has open, such as a gRPC stream.
type Streams struct {
	mu   sync.Mutex
	open map[*openStream]struct{}
}

type openStream struct {
	id     Identity
	denied func(Identity) bool
	cancel context.CancelFunc
}

// Open registers a request of client id and returns the context to serve
// it with, and the function to call when it is done. The request is
// cancelled by Sweep once denied(id) holds.
func (s *Streams) Open(ctx context.Context, id Identity, denied func(Identity) bool) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	st := &openStream{id: id, denied: denied, cancel: cancel}
	s.mu.Lock()
	if s.open == nil {
		s.open = make(map[*openStream]struct{})
	}
	s.open[st] = struct{}{}
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		delete(s.open, st)
		s.mu.Unlock()
		cancel()
	}
}

// Sweep cancels every open request whose client is now denied, and returns
// how many it cancelled.
func (s *Streams) Sweep() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for st := range s.open {
		if st.denied(st.id) {
			st.cancel()
			delete(s.open, st)
			n++
		}
	}
	return n
}

// Len is how many requests are open.
func (s *Streams) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// Conns tracks the connections that identified clients hold, so that
// denying a client also closes them, idle keep-alive and HTTP/2 connections
// included: a denied peer does not keep its connection. A connection is
// forgotten once the server has let go of it (the registry holds it weakly).
type Conns struct {
	mu      sync.Mutex
	handles map[weak.Pointer[Conn]]struct{}
	added   int
}

// Conn is one tracked connection.
type Conn struct {
	closer  io.Closer
	mu      sync.Mutex
	clients map[any]connClient // by the handler that identified the client
}

type connClient struct {
	id     Identity
	denied func(Identity) bool
}

// pruneEvery is how many new connections pass between prunings of the
// registry.
const pruneEvery = 1024

// Track registers a new connection; c closes it.
func (cs *Conns) Track(c io.Closer) *Conn {
	h := &Conn{closer: c}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.handles == nil {
		cs.handles = make(map[weak.Pointer[Conn]]struct{})
	}
	cs.handles[weak.Make(h)] = struct{}{}
	if cs.added++; cs.added%pruneEvery == 0 {
		for wp := range cs.handles {
			if wp.Value() == nil {
				delete(cs.handles, wp)
			}
		}
	}
	return h
}

// Identified records that handler owner identified the connection's client
// as id, and that denied(id) tells when it must be cut off.
func (c *Conn) Identified(owner any, id Identity, denied func(Identity) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[owner]; ok && cl.id.Fingerprint == id.Fingerprint {
		return
	}
	if c.clients == nil {
		c.clients = make(map[any]connClient)
	}
	c.clients[owner] = connClient{id: id, denied: denied}
}

func (c *Conn) isDenied() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.clients {
		if cl.denied(cl.id) {
			return true
		}
	}
	return false
}

// Sweep closes every tracked connection whose client is now denied, and
// returns how many it closed.
func (cs *Conns) Sweep() int {
	cs.mu.Lock()
	var denied []*Conn
	for wp := range cs.handles {
		h := wp.Value()
		if h == nil {
			delete(cs.handles, wp)
			continue
		}
		if h.isDenied() {
			denied = append(denied, h)
			delete(cs.handles, wp)
		}
	}
	cs.mu.Unlock()
	for _, h := range denied {
		_ = h.closer.Close()
	}
	return len(denied)
}

// Len is how many connections are tracked, closed ones not yet forgotten
// included.
func (cs *Conns) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.handles)
}
