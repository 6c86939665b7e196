package logsample

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a Sampler on a fake clock whose summaries are scheduled by
// hand, and a logger that records what it writes.
type fixture struct {
	s         *Sampler
	clk       *clock
	log       *zap.Logger
	logs      *observer.ObservedLogs
	mu        sync.Mutex
	scheduled []*reason // in order of scheduling
	delays    []time.Duration
}

const testFirst = 3

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clk: &clock{t: time.Unix(1_700_000_000, 0)}}
	f.s = New(testFirst, time.Second)
	f.s.now = f.clk.now
	f.s.schedule = func(r *reason, after time.Duration) {
		f.mu.Lock()
		f.scheduled = append(f.scheduled, r)
		f.delays = append(f.delays, after)
		f.mu.Unlock()
	}
	core, logs := observer.New(zapcore.InfoLevel)
	f.log, f.logs = zap.New(core), logs
	return f
}

// refuse logs one refusal line of reason the way callers do, and reports
// whether it was written.
func (f *fixture) refuse(reason string) bool {
	if ce, sup := f.s.Check(f.log, zapcore.InfoLevel, reason, "access denied"); ce != nil {
		ce.Write(zap.String("reason", reason), sup)
		return true
	}
	return false
}

// flushAll runs the scheduled summaries, as their timers would.
func (f *fixture) flushAll() {
	f.mu.Lock()
	rs := f.scheduled
	f.scheduled, f.delays = nil, nil
	f.mu.Unlock()
	for _, r := range rs {
		r.flush()
	}
}

// entry is one recorded line, reduced to what the tests check.
type entry struct {
	msg, reason string
	suppressed  int64 // -1: no such field
}

func (f *fixture) take() []entry {
	var out []entry
	for _, e := range f.logs.TakeAll() {
		m := e.ContextMap()
		x := entry{msg: e.Message, suppressed: -1}
		x.reason, _ = m["reason"].(string)
		if v, ok := m["suppressed"].(uint64); ok {
			x.suppressed = int64(v)
		}
		out = append(out, x)
	}
	return out
}

func TestFirstLinesOfAWindowThenSuppressedCount(t *testing.T) {
	f := newFixture(t)
	for i := range 10 {
		if got, want := f.refuse("unknown_key"), i < testFirst; got != want {
			t.Fatalf("line %d: written %v, want %v", i+1, got, want)
		}
		f.clk.advance(10 * time.Millisecond)
	}
	got := f.take()
	if len(got) != testFirst {
		t.Fatalf("%d lines written in the window, want %d: %v", len(got), testFirst, got)
	}
	for _, e := range got {
		if e.suppressed != -1 {
			t.Errorf("line %v carries suppressed before any drop", e)
		}
	}
	// The next window: its first line reports the 7 dropped, the next ones nothing.
	f.clk.advance(time.Second)
	f.refuse("unknown_key")
	f.refuse("unknown_key")
	got = f.take()
	if len(got) != 2 || got[0].suppressed != 7 || got[1].suppressed != -1 {
		t.Fatalf("next window wrote %v, want the first line with suppressed 7 and one without", got)
	}
	// The report made, the summary has nothing left to say.
	f.clk.advance(time.Second)
	f.flushAll()
	if got := f.take(); len(got) != 0 {
		t.Errorf("summary after the count was reported: %v", got)
	}
}

func TestWindowRunsFromItsFirstLine(t *testing.T) {
	f := newFixture(t)
	for range testFirst {
		f.refuse("r")
	}
	f.clk.advance(999 * time.Millisecond)
	if f.refuse("r") {
		t.Fatal("a line 999ms into a full window was written")
	}
	f.clk.advance(time.Millisecond)
	if !f.refuse("r") {
		t.Fatal("the first line of the next window was dropped")
	}
}

func TestReasonsHaveBudgetsOfTheirOwn(t *testing.T) {
	f := newFixture(t)
	for range 1000 {
		f.refuse("unknown_key")
	}
	for i := range testFirst {
		if !f.refuse("no_authorization") {
			t.Fatalf("line %d of a second reason dropped during the first reason's flood", i+1)
		}
	}
	if f.refuse("no_authorization") {
		t.Fatal("the second reason wrote more than its budget")
	}
	count := map[string]int{}
	for _, e := range f.take() {
		count[e.reason]++
	}
	if count["unknown_key"] != testFirst || count["no_authorization"] != testFirst {
		t.Errorf("lines by reason %v, want %d each", count, testFirst)
	}
}

func TestSummaryWhenTheFloodStops(t *testing.T) {
	f := newFixture(t)
	f.clk.advance(0)
	for range 50 {
		f.refuse("denied")
		f.clk.advance(time.Millisecond)
	}
	f.take()
	f.mu.Lock()
	n, delay := len(f.scheduled), f.delays
	f.mu.Unlock()
	if n != 1 {
		t.Fatalf("summary scheduled %d times in one window, want once", n)
	}
	// Scheduled at the first drop (after 3 lines, 3ms in) for the window's end.
	if delay[0] != time.Second-3*time.Millisecond {
		t.Errorf("summary scheduled after %v, want at the end of the window (%v)", delay[0], time.Second-3*time.Millisecond)
	}
	f.clk.advance(time.Second)
	f.flushAll()
	got := f.take()
	if len(got) != 1 || got[0].msg != SummaryMessage || got[0].reason != "denied" || got[0].suppressed != 47 {
		t.Fatalf("summary %v, want one %q line with reason denied and suppressed 47", got, SummaryMessage)
	}
	// Reported once: the next line carries no count.
	f.refuse("denied")
	if got := f.take(); len(got) != 1 || got[0].suppressed != -1 {
		t.Errorf("line after the summary: %v, want one without suppressed", got)
	}
}

func TestSummaryWaitsForARunningWindow(t *testing.T) {
	f := newFixture(t)
	for range 5 {
		f.refuse("r") // 3 written, 2 dropped
	}
	f.clk.advance(time.Second)
	for range 5 {
		f.refuse("r") // the first reports 2; 3 written, 2 dropped
	}
	f.clk.advance(500 * time.Millisecond)
	f.flushAll() // the timer of the first window, late: the second still runs
	f.take()
	f.mu.Lock()
	n, delays := len(f.scheduled), f.delays
	f.mu.Unlock()
	if n != 1 || delays[0] != 500*time.Millisecond {
		t.Fatalf("flush inside a running window scheduled %d (%v), want once, 500ms", n, delays)
	}
	f.clk.advance(500 * time.Millisecond)
	f.flushAll()
	if got := f.take(); len(got) != 1 || got[0].suppressed != 2 {
		t.Fatalf("summary %v, want suppressed 2", got)
	}
}

func TestDisabledLevelIsNotCounted(t *testing.T) {
	f := newFixture(t)
	for range 100 {
		if ce, _ := f.s.Check(f.log, zapcore.DebugLevel, "r", "debug line"); ce != nil {
			t.Fatal("a line of a disabled level was returned")
		}
	}
	for i := range testFirst {
		if !f.refuse("r") {
			t.Fatalf("line %d dropped after disabled-level lines", i+1)
		}
	}
	for _, e := range f.take() {
		if e.suppressed != -1 {
			t.Errorf("disabled-level lines counted as suppressed: %v", e)
		}
	}
	if ce, _ := f.s.Check(nil, zapcore.InfoLevel, "r", "x"); ce != nil {
		t.Error("nil logger returned an entry")
	}
}

func TestReasonsAreBounded(t *testing.T) {
	f := newFixture(t)
	for i := range 3 * MaxReasons {
		f.refuse(fmt.Sprintf("reason-%d", i))
	}
	if n := len(*f.s.reasons.Load()); n > MaxReasons+1 {
		t.Fatalf("%d reasons tracked, want at most %d", n, MaxReasons+1)
	}
	// Past the bound, the reasons share one budget.
	written := 0
	for i := range 100 {
		if f.refuse(fmt.Sprintf("late-%d", i)) {
			written++
		}
	}
	if written != 0 {
		t.Errorf("%d lines of reasons past the bound written after the shared budget was spent, want 0", written)
	}
}

// TestConcurrentCountsAreExact floods one reason from many goroutines in
// one window: exactly First lines are written, and they and the summary
// account for every line.
func TestConcurrentCountsAreExact(t *testing.T) {
	f := newFixture(t)
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				f.refuse("unknown_key")
			}
		})
	}
	wg.Wait()
	f.clk.advance(time.Second)
	f.flushAll()
	lines, counted := 0, int64(0)
	for _, e := range f.take() {
		if e.msg == "access denied" {
			lines++
		}
		if e.suppressed > 0 {
			counted += e.suppressed
		}
	}
	if lines != testFirst || int64(lines)+counted != workers*each {
		t.Errorf("%d lines written and %d counted as suppressed, want %d and %d", lines, counted, testFirst, workers*each-testFirst)
	}
}

// TestRealTimerSummary runs the summary on the real timer with a short
// window: it comes by itself.
func TestRealTimerSummary(t *testing.T) {
	s := New(1, 20*time.Millisecond)
	core, logs := observer.New(zapcore.InfoLevel)
	l := zap.New(core)
	for range 5 {
		if ce, sup := s.Check(l, zapcore.InfoLevel, "r", "refused"); ce != nil {
			ce.Write(sup)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage(SummaryMessage).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no summary within 5s of a 20ms window")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sum := logs.FilterMessage(SummaryMessage).All()[0].ContextMap()
	if sum["suppressed"] != uint64(4) || sum["message"] != "refused" {
		t.Errorf("summary %v, want suppressed 4 of message refused", sum)
	}
}

// TestDroppedLineAllocatesNothing: the drop path is what a flood runs.
func TestDroppedLineAllocatesNothing(t *testing.T) {
	s := New(1, time.Hour)
	l := discardLogger()
	s.Check(l, zapcore.InfoLevel, "r", "x")
	allocs := testing.AllocsPerRun(1000, func() {
		if ce, _ := s.Check(l, zapcore.InfoLevel, "r", "x"); ce != nil {
			t.Fatal("line written past the budget")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per dropped line, want 0", allocs)
	}
}

func discardLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

// BenchmarkDropped is the cost of a refusal line under flood, all
// goroutines on one reason.
func BenchmarkDropped(b *testing.B) {
	s := New(10, time.Hour)
	l := discardLogger()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ce, sup := s.Check(l, zapcore.InfoLevel, "unknown_key", "access denied"); ce != nil {
				ce.Write(sup)
			}
		}
	})
}

// BenchmarkUnsampled is the cost of writing every line, as before
// sampling, for comparison.
func BenchmarkUnsampled(b *testing.B) {
	l := discardLogger()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ce := l.Check(zapcore.InfoLevel, "access denied"); ce != nil {
				ce.Write(zap.String("reason", "unknown_key"), zap.String("detail", "no key with kid SHA256:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), zap.String("remote_ip", "127.0.0.1"))
			}
		}
	})
}
