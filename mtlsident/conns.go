package mtlsident

import (
	"context"
	"crypto/tls"
	"errors"
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
	cancel context.CancelCauseFunc
	ended  bool // done was called
}

// ErrCutOff is the cause (context.Cause) of the context of a request that
// Sweep ended because its client is now denied.
var ErrCutOff = errors.New("client denied while its request was open")

// CutOff reports whether Sweep ended the request served with ctx.
func CutOff(ctx context.Context) bool { return context.Cause(ctx) == ErrCutOff }

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
// request is cancelled, with cause ErrCutOff, by Sweep once denied(id)
// holds, or at once if it already holds: a deny that came after the
// caller's own check may have been swept before the request was registered.
func (s *Streams) Open(ctx context.Context, id Identity, max int, denied func(Identity) bool) (_ context.Context, done func(), ok bool) {
	ctx, cancel := context.WithCancelCause(ctx)
	st := &openStream{id: id, denied: denied, cancel: cancel}
	key := clientKey(id)
	s.mu.Lock()
	c := s.clients[key]
	if c == nil {
		c = s.newCount(key)
	}
	if max > 0 && c.n >= max {
		s.mu.Unlock()
		cancel(nil)
		return nil, nil, false
	}
	c.n++
	st.count = c
	s.open[st] = struct{}{}
	s.mu.Unlock()
	if denied(id) {
		s.mu.Lock()
		delete(s.open, st)
		s.mu.Unlock()
		cancel(ErrCutOff)
	}
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
	st.cancel(nil)
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
			st.cancel(ErrCutOff)
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

// Conns tracks the connections that clients hold, so that denying a client
// also closes them, idle keep-alive and HTTP/2 connections included: a
// denied peer does not keep its connection. A connection counts as the
// client's once a handler has identified the client on it (Identified), or,
// for a TLS connection no handler has identified yet, by the verified client
// certificate of its handshake, judged by the deny checks Watch gave it. A
// connection is forgotten once the server has let go of it (the registry
// holds it weakly), or once its context ends (TrackOnce).
type Conns struct {
	// Closed, if set, is called for each connection closed after Sweep has
	// returned: one whose handshake was under way or not yet judged when
	// Sweep ran, with its client.
	Closed func(Identity)

	mu      sync.Mutex
	handles map[weak.Pointer[Conn]]struct{}
	keyed   map[any]*Conn // TrackOnce's connections, by key
	added   int
	checks  sync.WaitGroup // handshake checks under way
}

// Conn is one tracked connection.
type Conn struct {
	closer io.Closer

	mu       sync.Mutex
	closed   bool
	clients  map[any]connClient // by the handler that identified the client
	watch    []func(Identity) bool
	peer     peerState
	peerID   *Identity // the handshake's client, once peer is peerVerified
	checking bool      // a handshake check is under way
}

// tlsState is a connection that can tell its TLS state, such as *tls.Conn.
// Its ConnectionState waits while a handshake is under way.
type tlsState interface {
	ConnectionState() tls.ConnectionState
}

// peerState is what the handshake of a connection tells of its client.
type peerState uint8

const (
	peerUnknown  peerState = iota // not judged yet, or the handshake has not ended
	peerNone                      // no verified certificate, or one that identifies no client
	peerVerified                  // *peerID is the client
)

type connClient struct {
	id     Identity
	denied func(Identity) bool
}

// pruneEvery is how many new connections pass between prunings of the
// registry.
const pruneEvery = 1024

// Track registers a new connection; c closes it. If c can tell its TLS state
// (a *tls.Conn), the deny checks of Watch apply to it until a handler
// identifies its client.
func (cs *Conns) Track(c io.Closer) *Conn {
	h := &Conn{closer: c}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.add(h)
	return h
}

// add registers h; cs.mu is held.
func (cs *Conns) add(h *Conn) {
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
}

// TrackOnce returns the Conn of the connection that key stands for (such as
// a QUIC connection, which carries many requests), tracking it with c as its
// closer the first time. It stays tracked until ctx, the connection's own
// context, ends; the caller need not hold the Conn. c's TLS state is not
// judged: such a connection is tracked once a handler identifies a client
// on it.
func (cs *Conns) TrackOnce(ctx context.Context, key any, c io.Closer) *Conn {
	cs.mu.Lock()
	if h, ok := cs.keyed[key]; ok {
		cs.mu.Unlock()
		return h
	}
	h := &Conn{closer: c}
	if cs.keyed == nil {
		cs.keyed = make(map[any]*Conn)
	}
	cs.keyed[key] = h
	cs.add(h)
	cs.mu.Unlock()
	// The callback holds h as long as the connection lives, and forgets it
	// when the connection ends, however it ends.
	context.AfterFunc(ctx, func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.keyed[key] == h {
			delete(cs.keyed, key)
		}
		delete(cs.handles, weak.Make(h))
	})
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

// Watch adds a deny check that applies to the connection while no handler
// has identified a client on it: such as the checks of every handler of the
// server that accepted it. If one refuses the client of the connection's
// TLS handshake (its verified leaf certificate), Sweep closes it.
func (c *Conn) Watch(denied func(Identity) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watch == nil {
		c.watch = make([]func(Identity) bool, 0, 2) // a server has one or two
	}
	c.watch = append(c.watch, denied)
}

// verdict is what Sweep does with a connection.
type verdict uint8

const (
	keep verdict = iota
	closeNow
	checkHandshake // judge the handshake's client, off the registry's lock
)

// judge tells what Sweep does with the connection, and marks a handshake
// check as under way.
func (c *Conn) judge() verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return keep
	}
	if len(c.clients) > 0 {
		for _, cl := range c.clients {
			if cl.denied(cl.id) {
				return closeNow
			}
		}
		return keep
	}
	if _, ok := c.closer.(tlsState); !ok || len(c.watch) == 0 {
		return keep
	}
	switch c.peer {
	case peerVerified:
		if c.watchDenies() {
			return closeNow
		}
	case peerUnknown:
		if !c.checking {
			c.checking = true
			return checkHandshake
		}
	}
	return keep
}

// watchDenies reports whether a Watch check refuses the handshake's client;
// c.mu is held.
func (c *Conn) watchDenies() bool {
	for _, denied := range c.watch {
		if denied(*c.peerID) {
			return true
		}
	}
	return false
}

// Sweep closes every tracked connection whose client is now denied, and
// returns how many it closed. A TLS connection that no handler has
// identified is judged by the client of its handshake: at once if that is
// known; else a goroutine of its own waits for the handshake to end (it
// may be under way, and a hostile client can stall it; the server's
// handshake timeout bounds the wait) and closes the connection then if it
// is denied, calling Closed. Sweep itself never waits on a handshake.
func (cs *Conns) Sweep() int {
	cs.mu.Lock()
	var denied, check []*Conn
	for wp := range cs.handles {
		h := wp.Value()
		if h == nil {
			delete(cs.handles, wp)
			continue
		}
		switch h.judge() {
		case closeNow:
			denied = append(denied, h)
			delete(cs.handles, wp)
		case checkHandshake:
			check = append(check, h)
		}
	}
	cs.mu.Unlock()
	n := 0
	for _, h := range denied {
		if h.close() {
			n++
		}
	}
	for _, h := range check {
		cs.checks.Add(1)
		go cs.checkHandshake(h)
	}
	return n
}

// checkHandshake learns the client of h's handshake, waiting for a
// handshake under way to end, and closes h if a Watch check refuses it.
func (cs *Conns) checkHandshake(h *Conn) {
	defer cs.checks.Done()
	st := h.closer.(tlsState).ConnectionState()
	peer, id := peerNone, (*Identity)(nil)
	switch {
	case !st.HandshakeComplete:
		peer = peerUnknown // not begun yet, or failed: judged again next time
	case len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0:
		if got, err := Identify(st.VerifiedChains[0][0]); err == nil {
			got.Chains = st.VerifiedChains
			peer, id = peerVerified, &got
		}
	}
	h.mu.Lock()
	h.checking = false
	if h.peer == peerUnknown {
		h.peer, h.peerID = peer, id
	}
	deny := len(h.clients) == 0 && h.peer == peerVerified && h.watchDenies()
	h.mu.Unlock()
	if !deny {
		return
	}
	cs.mu.Lock()
	delete(cs.handles, weak.Make(h))
	cs.mu.Unlock()
	if h.close() && cs.Closed != nil {
		cs.Closed(*id)
	}
}

// close closes the connection unless it was closed already, and reports
// whether it closed it. A TLS connection's transport is closed directly:
// the close_notify alert that (*tls.Conn).Close sends first would wait up
// to 5 s for a client that does not read, and hold up the sweep.
func (c *Conn) close() bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.closed = true
	c.mu.Unlock()
	if tc, ok := c.closer.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
	} else {
		_ = c.closer.Close()
	}
	return true
}

// Len is how many connections are tracked, closed ones not yet forgotten
// included.
func (cs *Conns) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.handles)
}
