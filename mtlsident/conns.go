package mtlsident

import (
	"context"
	"io"
	"sync"
	"weak"
)

// Streams tracks the requests in flight of identified clients, so that
// denying a client also ends what it has open, such as a gRPC stream, and so
// that one client cannot hold more than a bound of requests open at once.
// A client is counted by its subject, as deny entries match it (a client
// with an empty subject by its certificate's fingerprint), whatever
// connection or handler its requests arrive on.
type Streams struct {
	mu      sync.Mutex
	open    map[*openStream]struct{}
	clients map[string]*openCount // by client key; entries at 0 are pruned now and then
	pruneAt int                   // the size of clients at which the next new client prunes it
}

// openCount is how many requests one client has open.
type openCount struct{ n int }

type openStream struct {
	id     Identity
	count  *openCount // its client's
	denied func(Identity) bool
	cancel context.CancelFunc
	ended  bool // done was called
}

// minPruneAt is the least size of Streams.clients at which it is pruned.
const minPruneAt = 1024

// clientKey is the key by which Streams counts a client's requests.
func clientKey(id Identity) string {
	if id.subjectKey != "" {
		return id.subjectKey
	}
	return id.fingerprintKey
}

// Open registers a request of client id, unless the client already has max
// requests open (max < 1: no bound); the check and the registration are one
// step, so concurrent requests never get past the bound together. It returns
// the context to serve the request with and the function to call when it is
// done, or ok false (and nothing registered) when the client is at max. The
// request is cancelled by Sweep once denied(id) holds.
func (s *Streams) Open(ctx context.Context, id Identity, max int, denied func(Identity) bool) (_ context.Context, done func(), ok bool) {
	ctx, cancel := context.WithCancel(ctx)
	st := &openStream{id: id, denied: denied, cancel: cancel}
	key := clientKey(id)
	s.mu.Lock()
	c := s.clients[key]
	if c == nil {
		c = s.newCount(key)
	}
	if max > 0 && c.n >= max {
		s.mu.Unlock()
		cancel()
		return nil, nil, false
	}
	c.n++
	st.count = c
	s.open[st] = struct{}{}
	s.mu.Unlock()
	return ctx, func() { s.end(st) }, true
}

// newCount adds the count of a client not in s.clients, first dropping the
// counts at zero if the map has grown to pruneAt: the map holds the clients
// with requests open and at most as many others again, or minPruneAt.
// s.mu must be held.
func (s *Streams) newCount(key string) *openCount {
	if s.clients == nil {
		s.open = make(map[*openStream]struct{})
		s.clients = make(map[string]*openCount)
	}
	if len(s.clients) >= s.pruneAt {
		for k, c := range s.clients {
			if c.n == 0 {
				delete(s.clients, k)
			}
		}
		s.pruneAt = max(2*len(s.clients), minPruneAt)
	}
	c := new(openCount)
	s.clients[key] = c
	return c
}

// end forgets a request: the first call for st only.
func (s *Streams) end(st *openStream) {
	s.mu.Lock()
	if !st.ended {
		st.ended = true
		delete(s.open, st)
		st.count.n--
	}
	s.mu.Unlock()
	st.cancel()
}

// OpenOf is how many requests client id has open, counted as Open counts
// them: by subject.
func (s *Streams) OpenOf(id Identity) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clients[clientKey(id)]; c != nil {
		return c.n
	}
	return 0
}

// Sweep cancels every open request whose client is now denied, and returns
// how many it cancelled. A cancelled request counts towards its client's
// bound until it is done: its handler still runs until then.
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

// Len is how many requests are open and not swept.
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
