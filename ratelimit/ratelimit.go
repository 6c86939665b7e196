// Package ratelimit limits requests per client key with token buckets, in
// bounded memory.
//
// Every key (a client identity such as a certificate subject, or a client IP)
// has its own token bucket: it holds at most Burst tokens, refills at
// Events/Per tokens per unit of time, and each allowed request takes one
// token. A request that finds no token is refused, and the caller learns how
// long until the next token arrives (see RetryAfterSeconds for the HTTP
// Retry-After header). The package does not interpret keys: the caller must
// never pass a key that many clients share by accident, such as "".
//
// # Bounded memory
//
// At most MaxKeys buckets exist at any moment, whatever the traffic. When the
// table is full and a new key arrives, the least recently seen buckets (up to
// four, oldest first) are examined, and the first one that has refilled
// completely is dropped and reused for the new key. Dropping a full bucket
// loses nothing: the key, should it return, gets a full bucket, which is what
// it had. A bucket that is not full is never dropped, so flooding the limiter
// with new keys can never hand an active client a fresh bucket. When no
// examined bucket is full, the new key is served by one overflow bucket,
// shared by all such keys, with the same rate and burst; it gets a bucket of
// its own on a later request, once one can be freed.
//
// # Concurrency
//
// A Limiter is safe for concurrent use. With MaxKeys of 1024 or more, keys are
// spread by hash over 16 shards, each with its own lock, least-recently-seen
// order and share of MaxKeys (MaxKeys/16, the remainder going one each to the
// first shards), so the shares add up to exactly MaxKeys. A shard that is full
// handles a new key as described above even while other shards have room, so
// with sharding new keys may meet eviction or the overflow bucket a little
// before MaxKeys keys are tracked in total. Smaller tables use one shard.
//
// Time is passed in by the caller (usually time.Now()), which keeps the
// limiter deterministic under test.
package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is the number of keys tracked when Config.MaxKeys is 0.
const DefaultMaxKeys = 100000

const (
	shardCount    = 16   // shards of a large table
	minShardedMax = 1024 // smallest MaxKeys that is sharded
	evictScan     = 4    // least recently seen buckets examined for eviction
)

// ParseRate parses a rate written as "<n>/<duration>", such as "50/1s",
// "3000/24h" or "10/100ms": n events per duration. n is a positive decimal
// integer and the duration, in time.ParseDuration syntax, is positive.
func ParseRate(s string) (events int, per time.Duration, err error) {
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("invalid rate %q: want <events>/<duration>, such as 50/1s", s)
	}
	events, err = strconv.Atoi(n)
	if err != nil || events <= 0 || !isDigits(n) {
		return 0, 0, fmt.Errorf("invalid rate %q: event count %q is not a positive integer", s, n)
	}
	per, err = time.ParseDuration(d)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid rate %q: %q is not a duration such as 1s or 24h", s, d)
	}
	if per <= 0 {
		return 0, 0, fmt.Errorf("invalid rate %q: duration %q is not positive", s, d)
	}
	return events, per, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// RetryAfterSeconds rounds a wait up to whole seconds, at least 1, as the
// value of a Retry-After header: 100ms gives 1, 1.2s gives 2, 3s gives 3.
func RetryAfterSeconds(d time.Duration) int {
	if d <= 0 {
		return 1
	}
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	return int(s)
}

// Config describes a Limiter.
type Config struct {
	Events  int           // events per Per: the refill rate is Events/Per
	Per     time.Duration // must be positive
	Burst   int           // bucket size; 0 means Events
	MaxKeys int           // most keys tracked at once; 0 means DefaultMaxKeys
}

// Limiter holds a token bucket per key. Create one with New.
type Limiter struct {
	events int
	per    time.Duration
	limit  rate.Limit
	burst  int
	seed   maphash.Seed
	shards []shard

	// overflow serves new keys while no tracked bucket may be dropped.
	overflow *rate.Limiter
}

type shard struct {
	mu         sync.Mutex
	max        int
	keys       map[string]*entry
	head, tail *entry // most and least recently seen
	_          [64]byte
}

type entry struct {
	key        string
	prev, next *entry // towards head, towards tail
	bucket     *rate.Limiter
}

// New returns a Limiter for cfg, or an error naming the first invalid field.
func New(cfg Config) (*Limiter, error) {
	if cfg.Events <= 0 {
		return nil, fmt.Errorf("rate limit: events must be positive, got %d", cfg.Events)
	}
	if cfg.Per <= 0 {
		return nil, fmt.Errorf("rate limit: period must be positive, got %s", cfg.Per)
	}
	if cfg.Burst < 0 {
		return nil, fmt.Errorf("rate limit: burst must not be negative, got %d", cfg.Burst)
	}
	if cfg.MaxKeys < 0 {
		return nil, fmt.Errorf("rate limit: max keys must not be negative, got %d", cfg.MaxKeys)
	}
	if cfg.Burst == 0 {
		cfg.Burst = cfg.Events
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	limit := rate.Limit(float64(cfg.Events) / cfg.Per.Seconds())
	n := 1
	if cfg.MaxKeys >= minShardedMax {
		n = shardCount
	}
	l := &Limiter{
		events:   cfg.Events,
		per:      cfg.Per,
		limit:    limit,
		burst:    cfg.Burst,
		seed:     maphash.MakeSeed(),
		shards:   make([]shard, n),
		overflow: rate.NewLimiter(limit, cfg.Burst),
	}
	for i := range l.shards {
		l.shards[i].max = cfg.MaxKeys / n
		if i < cfg.MaxKeys%n {
			l.shards[i].max++
		}
		l.shards[i].keys = make(map[string]*entry)
	}
	return l, nil
}

// Allow takes one token from key's bucket at time now and reports whether
// there was one. When it refuses, retryAfter is how long until a token is
// available (always > 0); otherwise it is 0.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	s := &l.shards[0]
	if len(l.shards) > 1 {
		s = &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.keys[key]
	if e != nil {
		s.unlink(e)
	} else if e = l.admit(s, key, now); e == nil {
		return l.take(l.overflow, now)
	}
	s.pushFront(e)
	return l.take(e.bucket, now)
}

// Len returns the number of keys tracked now.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.keys)
		s.mu.Unlock()
	}
	return n
}

// take takes a token from b at now, or says how long until one is there.
func (l *Limiter) take(b *rate.Limiter, now time.Time) (bool, time.Duration) {
	if b.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.TokensAt(now)
	wait := time.Duration(math.Ceil(missing * float64(l.per) / float64(l.events)))
	if wait <= 0 {
		// Another goroutine moved the shared overflow bucket on meanwhile.
		wait = 1
	}
	return false, wait
}

// admit returns a bucket for the untracked key, linked into the map but
// not into the recency list, or nil when key must use the overflow bucket.
// The caller holds s.mu.
func (l *Limiter) admit(s *shard, key string, now time.Time) *entry {
	if len(s.keys) < s.max {
		e := &entry{key: key, bucket: rate.NewLimiter(l.limit, l.burst)}
		s.keys[key] = e
		return e
	}
	full := float64(l.burst)
	for e, i := s.tail, 0; e != nil && i < evictScan; e, i = e.prev, i+1 {
		if e.bucket.TokensAt(now) >= full {
			// A full bucket is as good as a new one: reuse it.
			s.unlink(e)
			delete(s.keys, e.key)
			e.key = key
			s.keys[key] = e
			return e
		}
	}
	return nil
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	} else {
		s.tail = e
	}
	s.head = e
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if s.head == e {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if s.tail == e {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
