package ratelimit

import (
	"testing"
	"time"
)

// Wait tells whether Allow would succeed, and takes nothing.
func TestWaitTakesNothing(t *testing.T) {
	l, err := New(Config{Events: 2, Per: time.Minute, MaxKeys: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		if w := l.Wait("a", now); w != 0 {
			t.Fatalf("untouched key: Wait %v, want 0", w)
		}
	}
	for i := 0; i < 2; i++ {
		if ok, _ := l.Allow("a", now); !ok {
			t.Fatalf("Allow %d refused after Wait calls: Wait took tokens", i+1)
		}
	}
	ok, retry := l.Allow("a", now)
	if w := l.Wait("a", now); ok || w != retry || w != 30*time.Second {
		t.Fatalf("empty bucket: Allow %v, retry %v, Wait %v; want refused, 30s, 30s", ok, retry, w)
	}
	if w := l.Wait("a", now.Add(30*time.Second)); w != 0 {
		t.Fatalf("after a refill: Wait %v, want 0", w)
	}
	// The table is full with a's bucket, which is not full: a new key
	// would use the overflow bucket, so Wait answers for that one.
	l.Allow("b", now)
	l.Allow("b", now)
	if w := l.Wait("c", now); w == 0 {
		t.Fatal("new key with the overflow bucket empty: Wait 0, want a wait")
	}
}
