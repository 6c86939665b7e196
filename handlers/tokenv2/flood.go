package tokenv2

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nutsgate/nutsgate/ratelimit"
)

// What a flood of forged tokens may cost. A signature check is the one
// costly step of verifying a token (a P-521 check costs about a millisecond
// and a half of CPU), so the Verifier makes it last and rare:
//
//   - every cheap rule (form, header, kid, claims) is checked before it;
//   - a token whose signature failed is remembered as refused, so sending it
//     again costs a hash and a look-up (refusedCache);
//   - each client IP may have at most so many signatures fail in a period
//     (the failure budget); over it, its tokens are refused with
//     ReasonFailureBudget and no signature is checked;
//   - at most MaxSignatureChecks signatures are checked at once, so that
//     requests with a token verified before, which need no check, always
//     find a CPU.

// ReasonFailureBudget refuses a token without checking its signature: its
// client had too many signatures fail lately. Refusal.RetryAfter tells when
// it may try again.
const ReasonFailureBudget Reason = "failure_budget"

// DefaultFailures and DefaultFailuresPer are the failure budget unless told
// otherwise: 100 failed signature checks per client IP a minute.
const (
	DefaultFailures    = 100
	DefaultFailuresPer = time.Minute
)

// DefaultRefusedCacheSize is how many forged tokens a Verifier remembers, and
// RefusedTTL how long it remembers each.
const (
	DefaultRefusedCacheSize = 10000
	RefusedTTL              = 10 * time.Minute
)

// MaxSignatureChecks is the most signature checks run at once: one fewer than
// the CPUs Go uses (at least one), so one CPU is always free for the requests
// that need none. A failed check holds its slot for a while after it ends
// (see failedCheckRest), so forgeries take even less.
func MaxSignatureChecks() int {
	return max(1, runtime.GOMAXPROCS(0)-1)
}

// floodGuard is the failure budget and the cap on concurrent signature
// checks of a Verifier.
type floodGuard struct {
	budget *ratelimit.Limiter // nil: no budget
	slots  chan struct{}
	checks atomic.Uint64
	now    func() time.Time
	rest   func(d time.Duration, release func()) // calls release after d
}

func (f *floodGuard) init(now func() time.Time) {
	f.slots = make(chan struct{}, MaxSignatureChecks())
	f.now = now
	f.rest = func(d time.Duration, release func()) { time.AfterFunc(d, release) }
}

// SetFailureBudget allows each client IP n failed signature checks per
// period (a token bucket of n, refilled at n per period), tracking at most
// maxClients clients (0: ratelimit.DefaultMaxKeys). Call it before the
// Verifier is used.
func (v *Verifier) SetFailureBudget(n int, per time.Duration, maxClients int) error {
	l, err := ratelimit.New(ratelimit.Config{Events: n, Per: per, MaxKeys: maxClients})
	if err != nil {
		return fmt.Errorf("failure budget: %v", err)
	}
	v.flood.budget = l
	return nil
}

// SignatureChecks returns how many signatures the Verifier has checked.
func (v *Verifier) SignatureChecks() uint64 { return v.flood.checks.Load() }

// checkSignature checks c's signature for client, unless client is over its
// failure budget; a failed check counts against the budget. The budget is
// looked at before waiting for a slot and again once the slot is taken, so
// that a client's checks can overshoot its budget by at most the number of
// slots less one.
func (f *floodGuard) checkSignature(ctx context.Context, c *checked, client string, now time.Time) error {
	budget := f.budget != nil && client != ""
	if budget {
		if r := f.overBudget(client, now); r != nil {
			return r
		}
	}
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting to check a signature: %w", ctx.Err())
	}
	if budget {
		// Again: checks of the same client that waited for a slot
		// meanwhile may have spent the budget.
		now = f.now()
		if r := f.overBudget(client, now); r != nil {
			<-f.slots
			return r
		}
	}
	f.checks.Add(1)
	start := time.Now()
	err := c.checkSignature()
	if err == nil {
		<-f.slots
		return nil
	}
	if budget {
		f.budget.Allow(client, now)
	}
	// A failed check keeps its slot for failedCheckRest times as long again
	// (the caller does not wait for that), so that forgeries take at most a
	// 1/(1+failedCheckRest) share of a CPU a slot, however many clients send
	// them: requests that need no signature check keep their latency, and
	// new valid tokens wait longer during a flood.
	f.rest(failedCheckRest*time.Since(start), func() { <-f.slots })
	return err
}

// failedCheckRest is how much longer than a failed signature check took its
// slot stays taken. With 7, a flood of forgeries from 100 addresses raised a
// cached client's p99 by 1.6x on 2 CPUs (bench/token_flood.sh (b)); with 3,
// by 1.7-2.2x; with none, by 3x.
const failedCheckRest = 7

// overBudget refuses client when its budget holds no failure at now.
func (f *floodGuard) overBudget(client string, now time.Time) *Refusal {
	if wait := f.budget.Wait(client, now); wait > 0 {
		return &Refusal{Reason: ReasonFailureBudget, Detail: fmt.Sprintf("%s had too many signature checks fail", client), RetryAfter: wait}
	}
	return nil
}

// refusedCache remembers tokens whose signature failed, by SHA-256, for
// RefusedTTL each and DefaultRefusedCacheSize at most. Its zero value is
// empty and ready.
type refusedCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]refusedEntry
}

type refusedEntry struct {
	refusal *Refusal
	until   time.Time
}

// lookup returns the refusal remembered for sum, or nil.
func (rc *refusedCache) lookup(sum [sha256.Size]byte, now time.Time) *Refusal {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	e, ok := rc.entries[sum]
	if !ok {
		return nil
	}
	if !now.Before(e.until) {
		delete(rc.entries, sum)
		return nil
	}
	return e.refusal
}

// add remembers a refusal, making room when the cache is full: first by
// dropping expired entries, then, if all are live, arbitrary ones.
func (rc *refusedCache) add(sum [sha256.Size]byte, r *Refusal, now time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.entries == nil {
		rc.entries = make(map[[sha256.Size]byte]refusedEntry)
	}
	if len(rc.entries) >= DefaultRefusedCacheSize {
		for k, e := range rc.entries {
			if !now.Before(e.until) {
				delete(rc.entries, k)
			}
		}
		// All live: drop an eighth, so that the sweep above runs once
		// per many additions, not on each.
		for k := range rc.entries {
			if len(rc.entries) < DefaultRefusedCacheSize-DefaultRefusedCacheSize/8 {
				break
			}
			delete(rc.entries, k)
		}
	}
	rc.entries[sum] = refusedEntry{refusal: r, until: now.Add(RefusedTTL)}
}
