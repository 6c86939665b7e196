package ratelimit

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func mustNew(t testing.TB, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return l
}

// take calls Allow n times for key at now and returns how many were allowed.
func take(l *Limiter, key string, now time.Time, n int) int {
	allowed := 0
	for range n {
		if ok, _ := l.Allow(key, now); ok {
			allowed++
		}
	}
	return allowed
}

// tracked reports whether key has a bucket of its own.
func tracked(l *Limiter, key string) bool {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		_, ok := s.keys[key]
		s.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

func TestParseRate(t *testing.T) {
	valid := []struct {
		in     string
		events int
		per    time.Duration
	}{
		{"50/1s", 50, time.Second},
		{"3000/24h", 3000, 24 * time.Hour},
		{"10/100ms", 10, 100 * time.Millisecond},
		{"1/1h30m", 1, 90 * time.Minute},
		{"007/1.5s", 7, 1500 * time.Millisecond},
	}
	for _, tc := range valid {
		t.Run(tc.in, func(t *testing.T) {
			events, per, err := ParseRate(tc.in)
			if err != nil || events != tc.events || per != tc.per {
				t.Fatalf("ParseRate(%q) = %d, %s, %v; want %d, %s, nil", tc.in, events, per, err, tc.events, tc.per)
			}
		})
	}
	invalid := []string{
		"", "0/1s", "-1/1s", "+5/1s", "5/0s", "5/-1s", "5/", "/1s", "abc", "5", "5/1x",
		"5/s", " 5/1s", "5/1s ", "5 /1s", "5/ 1s", "5/1s/2", "1.5/1s", "0x10/1s",
		"99999999999999999999/1s", "5/1s\n",
	}
	for _, in := range invalid {
		t.Run(strconv.Quote(in), func(t *testing.T) {
			events, per, err := ParseRate(in)
			if err == nil {
				t.Fatalf("ParseRate(%q) = %d, %s, nil; want an error", in, events, per)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, strconv.Quote(in)) || strings.ToLower(msg[:1]) != msg[:1] {
				t.Fatalf("error %q: want one lowercase line quoting the input", msg)
			}
		})
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"50/1s", "3000/24h", "10/100ms", "0/1s", "5/0s", "5/", "/1s", "abc", "1/1µs", "9223372036854775807/2562047h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		events, per, err := ParseRate(s)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !strings.HasPrefix(msg, "invalid rate ") {
				t.Fatalf("ParseRate(%q): error %q is not one line starting %q", s, msg, "invalid rate ")
			}
			return
		}
		if events <= 0 || per <= 0 {
			t.Fatalf("ParseRate(%q) = %d, %s: want both positive", s, events, per)
		}
		again := fmt.Sprintf("%d/%s", events, per)
		e2, p2, err := ParseRate(again)
		if err != nil || e2 != events || p2 != per {
			t.Fatalf("ParseRate(%q) = %d, %s, but its rendering %q parses as %d, %s, %v", s, events, per, again, e2, p2, err)
		}
		if _, err := New(Config{Events: events, Per: per}); err != nil {
			t.Fatalf("New with parsed rate %q: %v", s, err)
		}
	})
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want int
	}{
		{-time.Second, 1},
		{0, 1},
		{1, 1},
		{100 * time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{1200 * time.Millisecond, 2},
		{3 * time.Second, 3},
		{28800 * time.Millisecond, 29},
		{24 * time.Hour, 86400},
		{time.Duration(1<<63 - 1), 9223372037},
	} {
		t.Run(tc.in.String(), func(t *testing.T) {
			if got := RetryAfterSeconds(tc.in); got != tc.want {
				t.Fatalf("RetryAfterSeconds(%s) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"zero events", Config{Events: 0, Per: time.Second}, "events"},
		{"negative events", Config{Events: -1, Per: time.Second}, "events"},
		{"zero period", Config{Events: 1}, "period"},
		{"negative burst", Config{Events: 1, Per: time.Second, Burst: -1}, "burst"},
		{"negative max keys", Config{Events: 1, Per: time.Second, MaxKeys: -1}, "max keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%+v) = %v, want an error about %s", tc.cfg, err, tc.want)
			}
		})
	}
}

// TestShardShares checks that the per-shard bounds add up to exactly MaxKeys.
func TestShardShares(t *testing.T) {
	for _, tc := range []struct{ maxKeys, shards int }{
		{1, 1}, {15, 1}, {1023, 1}, {1024, 16}, {1025, 16}, {0, 16}, {100001, 16},
	} {
		t.Run(strconv.Itoa(tc.maxKeys), func(t *testing.T) {
			l := mustNew(t, Config{Events: 1, Per: time.Second, MaxKeys: tc.maxKeys})
			want := tc.maxKeys
			if want == 0 {
				want = DefaultMaxKeys
			}
			sum := 0
			for i := range l.shards {
				sum += l.shards[i].max
			}
			if len(l.shards) != tc.shards || sum != want {
				t.Fatalf("%d shards holding %d keys, want %d shards holding %d", len(l.shards), sum, tc.shards, want)
			}
		})
	}
}

func TestBurstThenRefusal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		burst int
	}{
		{"50/1s", Config{Events: 50, Per: time.Second}, 50},
		{"3000/24h", Config{Events: 3000, Per: 24 * time.Hour}, 3000},
		{"10/100ms burst 3", Config{Events: 10, Per: 100 * time.Millisecond, Burst: 3}, 3},
		{"1/1s burst 20", Config{Events: 1, Per: time.Second, Burst: 20}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustNew(t, tc.cfg)
			if got := take(l, "a", t0, tc.burst); got != tc.burst {
				t.Fatalf("first %d requests: %d allowed, want all", tc.burst, got)
			}
			ok, wait := l.Allow("a", t0)
			if ok || wait <= 0 {
				t.Fatalf("request %d: Allow = %v, %s; want refused with a positive wait", tc.burst+1, ok, wait)
			}
		})
	}
}

func TestRefill(t *testing.T) {
	l := mustNew(t, Config{Events: 10, Per: time.Second}) // a token per 100ms, burst 10
	take(l, "a", t0, 10)
	steps := []struct {
		at      time.Duration
		tries   int
		allowed int
	}{
		{0, 1, 0},
		{99 * time.Millisecond, 1, 0},
		{100 * time.Millisecond, 2, 1}, // one token back
		{350 * time.Millisecond, 3, 2}, // 2.5 tokens: two, half a token left
		{400 * time.Millisecond, 2, 1},
		{time.Hour, 20, 10}, // never more than the burst
	}
	for _, s := range steps {
		t.Run(s.at.String(), func(t *testing.T) {
			if got := take(l, "a", t0.Add(s.at), s.tries); got != s.allowed {
				t.Fatalf("at +%s: %d of %d allowed, want %d", s.at, got, s.tries, s.allowed)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		elapsed time.Duration // after draining the bucket
		want    time.Duration
		seconds int
	}{
		{"1/3s exactly 3s", Config{Events: 1, Per: 3 * time.Second}, 0, 3 * time.Second, 3},
		{"1/3s 1.2s left", Config{Events: 1, Per: 3 * time.Second}, 1800 * time.Millisecond, 1200 * time.Millisecond, 2},
		{"10/1s 100ms", Config{Events: 10, Per: time.Second}, 0, 100 * time.Millisecond, 1},
		{"10/1s 40ms left", Config{Events: 10, Per: time.Second}, 60 * time.Millisecond, 40 * time.Millisecond, 1},
		{"3000/24h 28.8s", Config{Events: 3000, Per: 24 * time.Hour, Burst: 5}, 0, 28800 * time.Millisecond, 29},
		{"2/5s 2.5s", Config{Events: 2, Per: 5 * time.Second}, 0, 2500 * time.Millisecond, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustNew(t, tc.cfg)
			for {
				if ok, _ := l.Allow("a", t0); !ok {
					break
				}
			}
			ok, wait := l.Allow("a", t0.Add(tc.elapsed))
			if ok {
				t.Fatal("allowed, want refused")
			}
			// The wait is computed in floating point and rounded up to the
			// nanosecond, so allow 1µs of error above the exact value.
			if wait < tc.want || wait > tc.want+time.Microsecond {
				t.Fatalf("retryAfter = %s, want %s", wait, tc.want)
			}
			if got := RetryAfterSeconds(wait); got != tc.seconds {
				t.Fatalf("RetryAfterSeconds(%s) = %d, want %d", wait, got, tc.seconds)
			}
			// Waiting that long is enough.
			if ok, _ := l.Allow("a", t0.Add(tc.elapsed+wait)); !ok {
				t.Fatalf("refused after waiting the retryAfter of %s", wait)
			}
		})
	}
}

func TestKeysIndependent(t *testing.T) {
	for _, maxKeys := range []int{10, 0} { // one shard, and sharded
		t.Run(fmt.Sprintf("max_keys=%d", maxKeys), func(t *testing.T) {
			l := mustNew(t, Config{Events: 5, Per: time.Second, MaxKeys: maxKeys})
			if got := take(l, "a", t0, 10); got != 5 {
				t.Fatalf("a: %d allowed, want 5", got)
			}
			if got := take(l, "b", t0, 10); got != 5 {
				t.Fatalf("b after a was drained: %d allowed, want 5", got)
			}
			if got := take(l, "c", t0, 2); got != 2 {
				t.Fatalf("c: %d allowed, want 2", got)
			}
			if got := take(l, "a", t0, 1); got != 0 {
				t.Fatal("a allowed again after others were served")
			}
			if l.Len() != 3 {
				t.Fatalf("Len = %d, want 3", l.Len())
			}
		})
	}
}

// TestEvictionKeepsActiveBucket drains client A partly, floods the limiter
// with many times MaxKeys new keys, and checks that A still has exactly the
// tokens it had plus what time refilled: a fresh bucket would give it the
// whole burst back.
func TestEvictionKeepsActiveBucket(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxKeys int
		flood   int
		step    time.Duration // between flood keys
		want    int           // tokens A has after the flood
	}{
		// Each flood key takes one token; it is full again 100ms later, so
		// with MaxKeys keys per 200ms old flood keys are evicted all along,
		// A (the least recently seen, never full) stays. 2s refill 20 tokens.
		{"one shard, evicting", 100, 1000, 2 * time.Millisecond, 3 + 20},
		// No time passes: nothing is ever full, flood keys use overflow.
		{"one shard, frozen clock", 100, 1000, 0, 3},
		{"sharded, evicting", DefaultMaxKeys, 250000, 2 * time.Microsecond, 3 + 5},
		{"sharded, frozen clock", DefaultMaxKeys, 250000, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustNew(t, Config{Events: 10, Per: time.Second, Burst: 100, MaxKeys: tc.maxKeys})
			if got := take(l, "A", t0, 97); got != 97 {
				t.Fatalf("A: %d allowed, want 97", got)
			}
			limit := tc.maxKeys
			now := t0
			for i := range tc.flood {
				now = now.Add(tc.step)
				l.Allow("flood-"+strconv.Itoa(i), now)
				if i%1000 == 0 && l.Len() > limit {
					t.Fatalf("Len = %d > MaxKeys %d", l.Len(), limit)
				}
			}
			if l.Len() > limit {
				t.Fatalf("Len = %d > MaxKeys %d", l.Len(), limit)
			}
			if !tracked(l, "A") {
				t.Fatal("A, not full, was evicted")
			}
			evicting := tracked(l, "flood-"+strconv.Itoa(tc.flood-1))
			if evicting != (tc.step > 0) {
				t.Fatalf("last flood key tracked = %v, want %v", evicting, tc.step > 0)
			}
			if got := take(l, "A", now, 200); got != tc.want {
				t.Fatalf("A after the flood: %d allowed, want %d", got, tc.want)
			}
		})
	}
}

func TestOverflowShared(t *testing.T) {
	l := mustNew(t, Config{Events: 3, Per: time.Second, MaxKeys: 2})
	take(l, "A", t0, 1)
	take(l, "B", t0, 1)
	// Both tracked buckets are active: C and D share the overflow bucket.
	if got := take(l, "C", t0, 2); got != 2 {
		t.Fatalf("C: %d allowed, want 2", got)
	}
	if got := take(l, "D", t0, 5); got != 1 {
		t.Fatalf("D, sharing overflow with C: %d allowed, want 1", got)
	}
	ok, wait := l.Allow("E", t0)
	if ok || wait < time.Second/3 || wait > time.Second/3+time.Microsecond {
		t.Fatalf("E on a drained overflow: Allow = %v, %s; want refused, ~333ms", ok, wait)
	}
	if got := take(l, "A", t0, 5); got != 2 {
		t.Fatalf("A: %d allowed, want its own remaining 2", got)
	}
	if l.Len() != 2 || tracked(l, "C") || tracked(l, "D") {
		t.Fatalf("Len = %d, C tracked %v, D tracked %v; want 2, false, false", l.Len(), tracked(l, "C"), tracked(l, "D"))
	}
	// 1.2 tokens later B is full again, A (drained) is not: C takes B's place.
	t1 := t0.Add(400 * time.Millisecond)
	if ok, _ := l.Allow("C", t1); !ok || !tracked(l, "C") || tracked(l, "B") || !tracked(l, "A") {
		t.Fatalf("at +400ms: C allowed %v, tracked A %v B %v C %v; want C in B's place",
			ok, tracked(l, "A"), tracked(l, "B"), tracked(l, "C"))
	}
}

func TestEvictedFullKeyComesBackFull(t *testing.T) {
	l := mustNew(t, Config{Events: 5, Per: time.Second, MaxKeys: 1})
	if got := take(l, "A", t0, 10); got != 5 {
		t.Fatalf("A: %d allowed, want 5", got)
	}
	// Still refilling: B must use the overflow, A keeps its bucket.
	t1 := t0.Add(500 * time.Millisecond)
	take(l, "B", t1, 1)
	if !tracked(l, "A") || tracked(l, "B") {
		t.Fatal("A, half refilled, was evicted for B")
	}
	// Refilled completely: B takes A's place.
	t2 := t0.Add(time.Second)
	take(l, "B", t2, 1)
	if tracked(l, "A") || !tracked(l, "B") {
		t.Fatal("A, full, was not evicted for B")
	}
	// A comes back once B is full again and gets a full bucket.
	t3 := t2.Add(time.Second)
	if got := take(l, "A", t3, 10); got != 5 || !tracked(l, "A") {
		t.Fatalf("A back: %d allowed, tracked %v; want 5 on its own bucket", got, tracked(l, "A"))
	}
}

// TestMaxKeysBound offers 300k distinct keys to a default limiter and checks
// the number of buckets and the heap they use.
func TestMaxKeysBound(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	// Measured on amd64 with Go 1.26, 13-byte keys: 178 bytes per tracked
	// key without evictions, 213 with (bucket 80, list entry 48, key 16, map
	// 34 to 69: deletions leave the map tables larger), steady over 5M keys.
	// Longer keys add their length. The bound leaves room for other runtimes.
	const bytesPerKey = 320
	for _, tc := range []struct {
		name string
		step time.Duration
	}{
		{"evicting", 2 * time.Microsecond}, // old keys refill and are evicted
		{"frozen clock", 0},                // nothing refills: overflow
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := heapAlloc()
			l := mustNew(t, Config{Events: 10, Per: time.Second})
			now := t0
			for i := range 300000 {
				now = now.Add(tc.step)
				l.Allow(fmt.Sprintf("client-%06d", i), now)
				if i%10000 == 0 && l.Len() > DefaultMaxKeys {
					t.Fatalf("Len = %d after %d keys, want <= %d", l.Len(), i+1, DefaultMaxKeys)
				}
			}
			n := l.Len()
			if n > DefaultMaxKeys || n < DefaultMaxKeys*9/10 {
				t.Fatalf("Len = %d, want at most %d and near it", n, DefaultMaxKeys)
			}
			used := heapAlloc() - before
			runtime.KeepAlive(l)
			t.Logf("%d keys tracked, heap %d bytes, %d bytes per key", n, used, used/uint64(n))
			if limit := uint64(bytesPerKey * DefaultMaxKeys); used > limit {
				t.Fatalf("heap grew by %d bytes, want < %d (%d bytes x MaxKeys)", used, limit, bytesPerKey)
			}
		})
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestConcurrent hammers one limiter from many goroutines (run with -race):
// a shared key allows exactly its burst, and the table never exceeds MaxKeys.
func TestConcurrent(t *testing.T) {
	for _, maxKeys := range []int{64, 2048} {
		t.Run(fmt.Sprintf("max_keys=%d", maxKeys), func(t *testing.T) {
			l := mustNew(t, Config{Events: 100, Per: time.Hour})
			l2 := mustNew(t, Config{Events: 1, Per: time.Millisecond, Burst: 1, MaxKeys: maxKeys})
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Go(func() {
					for i := range 2000 {
						if ok, _ := l.Allow("hot", t0); ok {
							allowed.Add(1)
						}
						now := t0.Add(time.Duration(i) * time.Microsecond)
						l2.Allow(fmt.Sprintf("g%d-%d", g, i), now)
						l2.Allow("shared", now)
						if i%100 == 0 && l2.Len() > maxKeys {
							t.Errorf("Len = %d > %d", l2.Len(), maxKeys)
						}
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != 100 {
				t.Fatalf("hot key: %d allowed across goroutines, want exactly the burst of 100", got)
			}
			if l2.Len() > maxKeys {
				t.Fatalf("Len = %d > %d", l2.Len(), maxKeys)
			}
		})
	}
}
