package e2ebin

import "testing"

func TestRaces(t *testing.T) {
	log := `{"level":"info"}
WARNING: DATA RACE
Write at 0x1 by goroutine 2:
  github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy.(*bodyNopCloserIfNotRead).Read()
Previous read at 0x1 by goroutine 3:
  golang.org/x/net/http2.(*clientStream).closeReqBodyLocked.func1()
Goroutine 2 (running) created at:
  github.com/nutsgate/nutsgate/caddymodule.(*MTLSIdent).ServeHTTP()
==================
WARNING: DATA RACE
Read at 0x2 by goroutine 4:
  github.com/nutsgate/nutsgate/mtlsident.(*Streams).Sweep()
Previous write at 0x2 by goroutine 5:
  github.com/nutsgate/nutsgate/mtlsident.(*Streams).Open()
Goroutine 4 (running) created at:
  main.main()
`
	if ours, others := races(log); ours != 1 || others != 1 {
		t.Fatalf("ours %d, others %d; want 1 and 1", ours, others)
	}
	if ours, others := races(`{"level":"info"}`); ours != 0 || others != 0 {
		t.Fatalf("a clean log: %d %d", ours, others)
	}
}

// FreePort hands out distinct ports below the ephemeral range, free over TCP and UDP.
func TestFreePort(t *testing.T) {
	high := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p < minPort || p >= high || seen[p] {
			t.Fatalf("FreePort gave %d (seen before: %v), want a new port in [%d, %d)", p, seen[p], minPort, high)
		}
		seen[p] = true
		if !bindable(p) {
			t.Fatalf("port %d is not free", p)
		}
	}
}
