package pki

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// SourceStatus is what a source holds and how its fetches went.
type SourceStatus struct {
	Kind        string     `json:"kind"` // "crl" or "denylist"
	Source      string     `json:"source"`
	Issuer      string     `json:"issuer,omitempty"`
	LastSuccess *time.Time `json:"last_success"`
	LastAttempt *time.Time `json:"last_attempt"`
	ThisUpdate  *time.Time `json:"this_update,omitempty"`
	NextUpdate  *time.Time `json:"next_update,omitempty"`
	Number      string     `json:"number,omitempty"`
	Entries     int        `json:"entries"`
	LastError   string     `json:"last_error"`
}

// Status lists every source: the configured ones first, then the
// distribution points in the order of their names.
func (c *Checker) Status() []SourceStatus {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []SourceStatus
	if d := c.deny; d != nil {
		st := d.status("denylist")
		st.Entries = d.held.Len()
		out = append(out, st)
	}
	for _, s := range append(slices.Clone(c.extra), c.sortedCRLs()...) {
		st := s.status("crl")
		if h := s.held; h != nil {
			st.Issuer = h.list.Issuer.String()
			st.ThisUpdate = timeOrNil(h.list.ThisUpdate)
			st.NextUpdate = timeOrNil(h.list.NextUpdate)
			st.Entries = len(h.revoked)
			if h.list.Number != nil {
				st.Number = h.list.Number.String()
			}
		}
		out = append(out, st)
	}
	return out
}

// sortedCRLs lists the distribution points' sources by name, but those
// configured; the lock is held.
func (c *Checker) sortedCRLs() []*crlSource {
	out := slices.DeleteFunc(slices.Collect(maps.Values(c.crls)), func(s *crlSource) bool { return c.configured(s.name) == s })
	slices.SortFunc(out, func(a, b *crlSource) int { return strings.Compare(a.name, b.name) })
	return out
}

func (s *sourceState) status(kind string) SourceStatus {
	return SourceStatus{Kind: kind, Source: s.name, LastSuccess: timeOrNil(s.lastSuccess), LastAttempt: timeOrNil(s.lastAttempt), LastError: s.lastErr}
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
