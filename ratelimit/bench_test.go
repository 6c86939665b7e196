package ratelimit

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	benchKeysOnce sync.Once
	benchKeys     []string // 1M distinct keys shaped like certificate subjects
)

func keys(n int) []string {
	benchKeysOnce.Do(func() {
		benchKeys = make([]string, 1<<20)
		for i := range benchKeys {
			benchKeys[i] = "CN=node-" + strconv.Itoa(i) + ",O=Example Care,C=NL"
		}
	})
	return benchKeys[:n]
}

// BenchmarkAllow offers keys in a pseudo-random order, with the clock moving
// 1µs per request (a million requests a second), at a rate of 50/1s. The
// limiter tracks the default 100000 keys: with 10k keys every request finds
// its bucket; with 1M keys most requests are for an untracked key and evict
// a refilled bucket. With a frozen clock nothing refills, so untracked keys
// go to the shared overflow bucket.
func BenchmarkAllow(b *testing.B) {
	for _, n := range []struct {
		name string
		keys int
		step time.Duration
	}{
		{"keys=10k", 10000, time.Microsecond},
		{"keys=1M", 1 << 20, time.Microsecond},
		{"keys=1M,frozen_clock", 1 << 20, 0},
	} {
		ks := keys(n.keys)
		mask := uint64(len(ks))
		b.Run(n.name, func(b *testing.B) {
			l := mustNew(b, Config{Events: 50, Per: time.Second})
			b.ReportAllocs()
			x := uint64(1)
			now := t0
			for b.Loop() {
				x = x*6364136223846793005 + 1442695040888963407
				now = now.Add(n.step)
				l.Allow(ks[(x>>20)%mask], now)
			}
		})
		b.Run("parallel/"+n.name, func(b *testing.B) {
			l := mustNew(b, Config{Events: 50, Per: time.Second})
			var seed atomic.Uint64
			step := time.Duration(runtime.GOMAXPROCS(0)) * n.step
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				// Each goroutine keeps its own clock, so the clocks
				// together advance about 1µs per request.
				x := seed.Add(0x9e3779b97f4a7c15)
				now := t0
				for pb.Next() {
					x = x*6364136223846793005 + 1442695040888963407
					now = now.Add(step)
					l.Allow(ks[(x>>20)%mask], now)
				}
			})
		})
	}
}
