package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcra takes one token of a bucket kept in Redis (the generic cell rate
// algorithm), on Redis's own clock, so that the replicas' clocks do not
// matter. KEYS[1] holds the bucket's theoretical arrival time in
// microseconds; ARGV[1] is the microseconds between two events, ARGV[2] the
// bucket size in microseconds (interval times burst). It returns {1, 0}
// when the token is taken, or {0, microseconds until one is free}.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next = tat + interval
if next - now > size then
  return {0, next - now - size}
end
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return {1, 0}
`)

// Limiter is a rate limit shared by the fleet: one bucket per key in Redis,
// the same for every replica whose zone has the same name under the same
// prefix. A key over its limit is remembered locally until its retry time,
// so that a client that keeps trying costs no Redis call.
type Limiter struct {
	c        *Client
	interval int64  // microseconds between events
	size     int64  // interval times burst
	prefix   string // of the bucket keys
	over     overLimit
}

// NewLimiter returns the limiter of zone: events per period, in bursts of
// at most burst; at most maxKeys keys over their limit are remembered.
func NewLimiter(c *Client, zone string, events int, per time.Duration, burst, maxKeys int) *Limiter {
	l := &Limiter{c: c, interval: max(per.Microseconds()/int64(events), 1), over: overLimit{max: maxKeys}}
	l.size = l.interval * int64(burst)
	l.prefix = c.Key(fmt.Sprintf("rl:{%s}:%d:%d:", zone, l.interval, l.size))
	return l
}

// Allow takes a token of key's bucket. An error means Redis could not
// decide in time (it is down, slow or failing): the caller decides
// locally.
func (l *Limiter) Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error) {
	defer func() {
		if r := recover(); r != nil { // go-redis on a reply no Redis sends
			ok, retryAfter, err = false, 0, fmt.Errorf("reading Redis's answer: %v", r)
		}
	}()
	now := time.Now()
	if until, over := l.over.get(key); over && now.Before(until) {
		return false, until.Sub(now), nil
	}
	if !l.c.usable() {
		return false, 0, ErrDown
	}
	ctx, cancel := l.c.requestContext(ctx)
	defer cancel()
	res, err := gcra.Run(ctx, l.c.rdb, []string{l.bucket(key)}, l.interval, l.size).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("rate limit script answered %v", res)
	}
	if err != nil {
		l.c.failed(ctx, "rate_limit", err)
		return false, 0, err
	}
	l.c.succeeded()
	if res[0] == 1 {
		return true, 0, nil
	}
	if res[1] < 0 || res[1] > l.interval {
		// No bucket of this zone makes a client wait longer than one
		// interval: the bucket's value is not one the script wrote.
		return false, 0, fmt.Errorf("rate limit script answered a wait of %dµs, past the interval of %dµs", res[1], l.interval)
	}
	wait := time.Duration(res[1]) * time.Microsecond
	l.over.set(key, now.Add(wait))
	return false, wait, nil
}

// bucket is the Redis key of key's bucket: the zone in braces (one Redis
// Cluster slot per zone) with its rate, so that zones of the same name
// with other rates (a rolling change) never share a bucket, and the key
// hashed, so that its length is bounded whatever a client sends.
func (l *Limiter) bucket(key string) string {
	sum := sha256.Sum256([]byte(key))
	return l.prefix + hex.EncodeToString(sum[:16])
}

// overLimit remembers, by key, until when a key is over its limit.
type overLimit struct {
	max int
	mu  sync.Mutex
	m   map[string]time.Time
}

func (o *overLimit) get(key string) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.m[key]
	return t, ok
}

// set remembers key as over its limit until until; when full, it first
// forgets the keys whose time has passed, and remembers nothing more if
// none has.
func (o *overLimit) set(key string, until time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[string]time.Time)
	}
	if _, ok := o.m[key]; !ok && len(o.m) >= o.max {
		now := time.Now()
		for k, t := range o.m {
			if !now.Before(t) {
				delete(o.m, k)
			}
		}
		if len(o.m) >= o.max {
			return
		}
	}
	o.m[key] = until
}
