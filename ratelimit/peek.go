package ratelimit

import (
	"hash/maphash"
	"math"
	"time"
)

// Wait reports how long from now until key's bucket holds a token, without
// taking one: 0 when a call of Allow at now would succeed. It lets a caller
// check a budget before costly work and take from it (with Allow) only when
// the work counts against the budget. A key that is not tracked is answered
// for the bucket Allow would give it: a fresh one, or the overflow bucket
// when the table is full and no bucket may be dropped. Wait changes nothing.
func (l *Limiter) Wait(key string, now time.Time) time.Duration {
	s := &l.shards[0]
	if len(l.shards) > 1 {
		s = &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.keys[key]; e != nil {
		return l.wait(e.bucket, now)
	}
	if len(s.keys) < s.max {
		return 0
	}
	full := float64(l.burst)
	for e, i := s.tail, 0; e != nil && i < evictScan; e, i = e.prev, i+1 {
		if e.bucket.TokensAt(now) >= full {
			return 0
		}
	}
	return l.wait(l.overflow, now)
}

// wait is how long until b holds a whole token at now.
func (l *Limiter) wait(b interface{ TokensAt(time.Time) float64 }, now time.Time) time.Duration {
	missing := 1 - b.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	wait := time.Duration(math.Ceil(missing * float64(l.per) / float64(l.events)))
	if wait <= 0 {
		wait = 1
	}
	return wait
}
