package caddymodule

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nutsgate/nutsgate/handlers/pathguard"
)

// TestPathReasons: path_guard's refusals have distinct reason labels, found
// through wrapping too, and anything else is "other", so the label set of
// nutsgate_path_refusals_total (and the sampler's reasons) stays fixed.
func TestPathReasons(t *testing.T) {
	seen := map[string]bool{"other": true}
	for _, r := range pathReasons {
		if seen[r.reason] {
			t.Errorf("reason %q used twice", r.reason)
		}
		seen[r.reason] = true
		if got := pathReason(fmt.Errorf("wrapped: %w", r.err)); got != r.reason {
			t.Errorf("pathReason(%v) = %q, want %q", r.err, got, r.reason)
		}
	}
	if got := pathReason(errors.New(pathguard.ErrDotSegment.Error())); got != "other" {
		t.Errorf("an error of the same text but not path_guard's: %q, want other", got)
	}
	for target, want := range map[string]string{
		"/a/../b":   "dot_segment",
		"/a%2fb":    "encoded_slash",
		"/a//b":     "empty_segment",
		"*":         "asterisk",
		"/a/%252e/": "nested_encoding",
	} {
		if got := pathReason(pathguard.Check(target)); got != want {
			t.Errorf("%q: reason %q, want %q", target, got, want)
		}
	}
}
