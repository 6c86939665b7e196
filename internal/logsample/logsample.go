// Package logsample bounds the log lines of refusals, so that a flood of
// refused requests cannot fill the disk through the log.
//
// A Sampler keeps a budget for each reason: in every window (one second in
// nutsgate) the first lines of a reason are written and the rest are
// dropped and counted. The next line written for that reason carries a
// field `suppressed`, the number of lines dropped since the previous count
// was written; when no such line comes, because the flood stopped, a
// summary line `log lines suppressed` gives the count once the window has
// ended. Every dropped line is so counted exactly once, in the log as well
// as in the metrics that callers keep beside it, and a flood of one reason
// costs at most First+1 lines a window, whatever its rate. Reasons have
// budgets of their own: a flood of one does not hide the first lines of
// another.
//
// A reason must come from a fixed set (a metric's reason label, a constant
// of the call site), never from request data. The number of reasons a
// Sampler tracks is bounded by MaxReasons regardless; later ones share the
// budget of the reason "other".
package logsample

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// MaxReasons is the most reasons one Sampler tracks; further reasons share
// the budget of OtherReason.
const MaxReasons = 64

// OtherReason is the reason of the budget shared by reasons past MaxReasons.
const OtherReason = "other"

// SummaryMessage is the message of the line that reports dropped lines when
// no later line of their reason did within a window.
const SummaryMessage = "log lines suppressed"

// Sampler decides which refusal lines are written. It is safe for
// concurrent use; deciding takes no allocation once a reason is known.
type Sampler struct {
	first  int
	window time.Duration

	// now and schedule are replaced by tests.
	now      func() time.Time
	schedule func(r *reason, after time.Duration)

	mu      sync.Mutex                         // serialises adding reasons
	reasons atomic.Pointer[map[string]*reason] // copied on write
}

// New returns a Sampler that writes the first `first` lines of each reason
// in every window of the given length.
func New(first int, window time.Duration) *Sampler {
	s := &Sampler{first: max(first, 1), window: window, now: time.Now, schedule: scheduleTimer}
	s.reasons.Store(&map[string]*reason{})
	return s
}

// reason is the budget of one reason.
type reason struct {
	name string
	s    *Sampler

	mu      sync.Mutex
	start   time.Time // of the current window; zero before the first line
	written int       // lines written in the current window
	dropped uint64    // lines dropped and not yet reported
	pending bool      // a summary is scheduled
	timer   *time.Timer

	// Of the last dropped line, for the summary.
	logger *zap.Logger
	level  zapcore.Level
	msg    string
}

// Check is zap's Logger.Check for one refusal line of the given reason: it
// returns nil when the line is to be dropped (or the level is disabled),
// else the entry to write, with a field to add to the line's own: `suppressed`
// when lines of this reason were dropped since the last count was written,
// else zap.Skip(). Use it as
//
//	if ce, sup := s.Check(logger, zapcore.InfoLevel, reason, "access denied"); ce != nil {
//	    ce.Write(zap.String("reason", reason), ..., sup)
//	}
//
// so that a dropped line costs no field building. A line of a disabled
// level is neither written nor counted.
func (s *Sampler) Check(l *zap.Logger, lvl zapcore.Level, reasonName, msg string) (*zapcore.CheckedEntry, zap.Field) {
	if l == nil || !l.Core().Enabled(lvl) {
		return nil, zap.Skip()
	}
	r := s.reason(reasonName)
	r.mu.Lock()
	now := s.now()
	if r.start.IsZero() || now.Sub(r.start) >= s.window {
		r.start, r.written = now, 0
	}
	if r.written >= s.first {
		r.dropped++
		r.logger, r.level, r.msg = l, lvl, msg
		if !r.pending {
			r.pending = true
			s.schedule(r, s.window-now.Sub(r.start))
		}
		r.mu.Unlock()
		return nil, zap.Skip()
	}
	r.written++
	suppressed := r.dropped
	r.dropped = 0
	r.mu.Unlock()

	ce := l.Check(lvl, msg)
	if ce == nil { // a sampling core of the logger's own dropped it
		if suppressed > 0 {
			r.mu.Lock()
			r.dropped += suppressed
			r.mu.Unlock()
		}
		return nil, zap.Skip()
	}
	if suppressed == 0 {
		return ce, zap.Skip()
	}
	return ce, zap.Uint64("suppressed", suppressed)
}

// reason returns the budget of name, adding it if new.
func (s *Sampler) reason(name string) *reason {
	if r, ok := (*s.reasons.Load())[name]; ok {
		return r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.reasons.Load()
	if r, ok := old[name]; ok {
		return r
	}
	if len(old) >= MaxReasons {
		if r, ok := old[OtherReason]; ok {
			return r
		}
		name = OtherReason // the one reason allowed past the bound
	}
	r := &reason{name: name, s: s}
	m := make(map[string]*reason, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = r
	s.reasons.Store(&m)
	return r
}

// scheduleTimer calls r.flush after the given time, on one timer per
// reason that is reused.
func scheduleTimer(r *reason, after time.Duration) {
	if r.timer == nil {
		r.timer = time.AfterFunc(after, r.flush)
		return
	}
	r.timer.Reset(after)
}

// flush writes the summary of the lines dropped in a window that has ended
// and not been reported by a later line. While a newer window still runs
// with drops of its own, it waits for that one's end.
func (r *reason) flush() {
	r.mu.Lock()
	r.pending = false
	if r.dropped == 0 {
		r.mu.Unlock()
		return
	}
	if left := r.s.window - r.s.now().Sub(r.start); left > 0 {
		r.pending = true
		r.s.schedule(r, left)
		r.mu.Unlock()
		return
	}
	n, l, lvl, msg := r.dropped, r.logger, r.level, r.msg
	r.dropped = 0
	r.mu.Unlock()
	if ce := l.Check(lvl, SummaryMessage); ce != nil {
		ce.Write(zap.String("reason", r.name), zap.String("message", msg), zap.Uint64("suppressed", n))
	}
}
