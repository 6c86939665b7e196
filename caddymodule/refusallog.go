package caddymodule

import (
	"errors"
	"time"

	"github.com/nutsgate/nutsgate/handlers/pathguard"
	"github.com/nutsgate/nutsgate/internal/logsample"
)

// refusalLinesPerWindow is how many lines of one refusal reason are logged
// in each refusalWindow; the rest are counted (the `suppressed` field of the
// next line, or a `log lines suppressed` summary once the window is over).
// The metrics count every refusal.
const (
	refusalLinesPerWindow = 10
	refusalWindow         = time.Second
)

// The refusal log samplers, one per module, each keyed by the reason label
// of the module's refusal metric (a fixed set). They are package-level, so
// that the budgets hold across config reloads and whatever number of
// handlers a config has: a reason costs at most refusalLinesPerWindow lines
// a second for the whole gateway.
var (
	tokenRefusalLog     = logsample.New(refusalLinesPerWindow, refusalWindow)
	mtlsRefusalLog      = logsample.New(refusalLinesPerWindow, refusalWindow)
	rateLimitRefusalLog = logsample.New(refusalLinesPerWindow, refusalWindow)
	pathRefusalLog      = logsample.New(refusalLinesPerWindow, refusalWindow)
	corsRefusalLog      = logsample.New(refusalLinesPerWindow, refusalWindow)
	pkiRefusalLog       = logsample.New(refusalLinesPerWindow, refusalWindow)
)

// Sampling reasons of the refusals that have no reason label.
const (
	rateLimitReason = "rate_limit"
	corsReason      = "preflight"
)

// pathReasons names path_guard's refusals for the metric and the log
// sampler. A reason not listed counts as "other".
var pathReasons = []struct {
	err    error
	reason string
}{
	{pathguard.ErrNotPath, "not_path"},
	{pathguard.ErrAsterisk, "asterisk"},
	{pathguard.ErrMalformedEscape, "malformed_escape"},
	{pathguard.ErrEncodedSlash, "encoded_slash"},
	{pathguard.ErrEncodedBackslash, "encoded_backslash"},
	{pathguard.ErrEncodedDot, "encoded_dot"},
	{pathguard.ErrBackslash, "backslash"},
	{pathguard.ErrNUL, "nul"},
	{pathguard.ErrOverlong, "overlong"},
	{pathguard.ErrDotSegment, "dot_segment"},
	{pathguard.ErrEmptySegment, "empty_segment"},
	{pathguard.ErrNestedEncoding, "nested_encoding"},
	{pathguard.ErrEncodedUnreserved, "encoded_unreserved"},
	{errEarlyData, "early_data"},
}

// pathReason is the reason label of a path_guard refusal.
func pathReason(err error) string {
	for _, r := range pathReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}
