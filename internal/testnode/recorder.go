package testnode

import "sync"

// recorder keeps the most recent entries of one kind, safe for concurrent use.
type recorder[T any] struct {
	mu      sync.Mutex
	max     int
	entries []T
}

// add appends e, dropping the oldest entry once max entries are held.
func (r *recorder[T]) add(e T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.entries) >= r.max {
		r.entries = r.entries[1:]
	}
	r.entries = append(r.entries, e)
}

// snapshot returns a copy of the entries, oldest first.
func (r *recorder[T]) snapshot() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.entries...)
}

// reset forgets every entry.
func (r *recorder[T]) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = nil
}
