package fleet

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/mtlsident"
	"github.com/nutsgate/nutsgate/ratelimit"
)

// testRedis is a redis-server of one test, without persistence, on a free
// loopback port.
type testRedis struct {
	port int
	cmd  *exec.Cmd
}

func startRedis(t testing.TB) *testRedis {
	t.Helper()
	r := &testRedis{port: e2ebin.FreePort(t)}
	r.start(t)
	t.Cleanup(func() { r.kill() })
	return r
}

// start runs redis-server on r's port and waits until it answers.
func (r *testRedis) start(t testing.TB) {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is needed (Debian package redis-server; .ci/run installs it)")
	}
	r.cmd = exec.Command(path, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if c, err := net.Dial("tcp", r.addr()); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("redis-server does not listen")
}

func (r *testRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *testRedis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *testRedis) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// client returns an up client of r, closed at the end of the test. Its timeout is longer than
// the default 25 ms, which a loaded test machine can miss twice in a row (Redis is then
// marked down for a second).
func (r *testRedis) client(t testing.TB, prefix string) *Client {
	t.Helper()
	c, err := New(Config{Address: "redis://" + r.addr() + "/0", Prefix: prefix, Timeout: 250 * time.Millisecond}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Start()
	waitFor(t, "the client to find redis up", c.Up)
	return c
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLimiterIsExactAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	a := NewLimiter(r.client(t, "fleet"), "n2n", 10, time.Hour, 20, 100)
	b := NewLimiter(r.client(t, "fleet"), "n2n", 10, time.Hour, 20, 100)
	allowed := 0
	for i := range 60 {
		l := a
		if i%2 == 1 {
			l = b
		}
		ok, wait, err := l.Allow(context.Background(), "client-1")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		} else if wait <= 0 || wait > 6*time.Minute {
			t.Fatalf("refused with wait %v, want about 6 minutes (one event of 10/h)", wait)
		}
	}
	if allowed != 20 {
		t.Fatalf("%d allowed over two replicas, want the burst of 20", allowed)
	}
	if ok, _, err := b.Allow(context.Background(), "client-2"); !ok || err != nil {
		t.Fatalf("another client: %v, %v", ok, err)
	}
	other := NewLimiter(r.client(t, "other-fleet"), "n2n", 10, time.Hour, 20, 100)
	if ok, _, _ := other.Allow(context.Background(), "client-1"); !ok {
		t.Fatal("a fleet with another prefix shares the bucket")
	}
}

func TestLimiterRemembersRefusals(t *testing.T) {
	r := startRedis(t)
	l := NewLimiter(r.client(t, "fleet"), "z", 1, time.Hour, 1, 100)
	if ok, _, err := l.Allow(context.Background(), "k"); !ok || err != nil {
		t.Fatalf("first: %v %v", ok, err)
	}
	if ok, _, err := l.Allow(context.Background(), "k"); ok || err != nil {
		t.Fatalf("second: %v %v, want refused by redis", ok, err)
	}
	// Redis hung: the refusal is remembered, so no call is made.
	r.signal(t, syscall.SIGSTOP)
	defer r.signal(t, syscall.SIGCONT)
	ok, wait, err := l.Allow(context.Background(), "k")
	if ok || err != nil || wait < 59*time.Minute {
		t.Fatalf("over the limit with redis hung: %v %v %v, want refused from memory", ok, wait, err)
	}
	// Another key needs redis, which does not answer in time.
	start := time.Now()
	if _, _, err := l.Allow(context.Background(), "other"); err == nil {
		t.Fatal("no error with redis hung")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a call with redis hung took %v", d)
	}
}

// testStore is a deny list store in a temporary file.
func testStore(t *testing.T, entries ...string) *mtlsident.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "deny")
	data := ""
	for _, e := range entries {
		data += e + "\n"
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mtlsident.NewStore(path, nil)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	return s
}

func texts(s *mtlsident.Store) []string {
	var out []string
	for _, e := range s.List().Entries() {
		out = append(out, e.Text)
	}
	slices.Sort(out)
	return out
}

func entry(t *testing.T, text string) mtlsident.Entry {
	t.Helper()
	e, err := mtlsident.ParseEntry(text)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func startSync(t *testing.T, c *Client, s *mtlsident.Store) *DenySync {
	t.Helper()
	d := NewDenySync(c, s.Path(), nil)
	if err := d.Start(s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

func expectList(t *testing.T, what string, s *mtlsident.Store, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(3 * time.Second)
	for !slices.Equal(texts(s), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: list %v, want %v", what, texts(s), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDenySync(t *testing.T) {
	r := startRedis(t)
	a := testStore(t, "CN=from-a")
	b := testStore(t)
	da := startSync(t, r.client(t, "fleet"), a)
	db := startSync(t, r.client(t, "fleet"), b)
	expectList(t, "b after start", b, "CN=from-a")

	if changed, err := da.Edit(context.Background(), entry(t, "CN=x"), true); err != nil || !changed {
		t.Fatalf("add on a: %v %v", changed, err)
	}
	expectList(t, "b after an add on a", b, "CN=from-a", "CN=x")
	if _, err := db.Edit(context.Background(), entry(t, "cn=X"), false); err != nil {
		t.Fatal(err)
	}
	expectList(t, "a after a removal on b", a, "CN=from-a")

	// Redis loses everything: the replicas give the list back, and the
	// removed entry stays removed, also from a replica whose file still
	// has it (it missed the removal while stopped).
	da.Stop()
	if err := os.WriteFile(a.Path(), []byte("CN=from-a\nCN=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Load(); err != nil {
		t.Fatal(err)
	}
	r.kill()
	r.start(t)
	c := r.client(t, "fleet")
	waitFor(t, "b to give the list back", func() bool {
		n, _ := c.rdb.HLen(context.Background(), c.Key(denyHash)).Result()
		return n == 2
	})
	da = startSync(t, r.client(t, "fleet"), a)
	expectList(t, "a restarted with a stale file", a, "CN=from-a")
	expectList(t, "b", b, "CN=from-a")
	if _, err := da.Edit(context.Background(), entry(t, "CN=y"), true); err != nil {
		t.Fatal(err)
	}
	expectList(t, "b after an edit once redis is back", b, "CN=from-a", "CN=y")
}

func TestDenyEditWhileRedisHangs(t *testing.T) {
	r := startRedis(t)
	a := testStore(t)
	da := startSync(t, r.client(t, "fleet"), a)
	b := testStore(t)
	startSync(t, r.client(t, "fleet"), b)
	r.signal(t, syscall.SIGSTOP)
	_, err := da.Edit(context.Background(), entry(t, "CN=late"), true)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("edit with redis hung: %v, want ErrUnavailable", err)
	}
	r.signal(t, syscall.SIGCONT)
	waitFor(t, "redis up again", da.c.Up)
	time.Sleep(1500 * time.Millisecond) // a sync or two, and the late script's chance to run
	for name, s := range map[string]*mtlsident.Store{"a": a, "b": b} {
		if got := texts(s); len(got) != 0 {
			t.Fatalf("%s holds %v after an edit answered with an error", name, got)
		}
	}
	if _, err := da.Edit(context.Background(), entry(t, "CN=now"), true); err != nil {
		t.Fatalf("edit after redis came back: %v", err)
	}
	expectList(t, "b", b, "CN=now")
}

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"12 + CN=a b", true}, {"12 - CN=a", true}, {"x + CN=a", false}, {"12 * CN=a", false},
		{"12 +", false}, {"-1 + CN=a", false}, {"", false}, {"12 + ", false},
		{"+12 + CN=a", false}, {"1125899906842625 + CN=a", false}, {"9000000000000000000 + CN=a", false},
	} {
		if _, ok := parseRecord(tc.in, 1<<50); ok != tc.ok {
			t.Errorf("parseRecord(%q) ok %v, want %v", tc.in, ok, tc.ok)
		}
	}
	ka, kb := entry(t, "CN=a").Key(), entry(t, "CN=b").Key()
	recs, bad := parseRecords([]any{ka, "5 + CN=a", kb, "5 + CN=c", kb, "junk", 7, "5 + CN=e"}, 1<<50)
	if len(recs) != 1 || bad != 3 {
		t.Fatalf("records %v, bad %d: want only cn=a, 3 bad", recs, bad)
	}
}

// commandCalls is how many times Redis has run cmd (INFO commandstats).
func commandCalls(t testing.TB, c *Client, cmd string) int {
	t.Helper()
	info, err := c.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// TestLimiterRoundTrips counts Redis's work per decision: one script call
// for an allowed request, none for a key over its limit until its retry
// time.
func TestLimiterRoundTrips(t *testing.T) {
	r := startRedis(t)
	c := r.client(t, "fleet")
	l := NewLimiter(c, "z", 1, time.Hour, 10, 100)
	if ok, _, err := l.Allow(context.Background(), "warm"); !ok || err != nil { // loads the script
		t.Fatal(ok, err)
	}
	before := commandCalls(t, c, "evalsha")
	for range 10 {
		if ok, _, err := l.Allow(context.Background(), "k"); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if n := commandCalls(t, c, "evalsha") - before; n != 10 {
		t.Fatalf("%d script calls for 10 allowed requests, want 10", n)
	}
	for range 100 {
		if ok, _, err := l.Allow(context.Background(), "k"); ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if n := commandCalls(t, c, "evalsha") - before; n != 11 {
		t.Fatalf("%d script calls after 100 refusals, want 11 (one refusal from Redis, then none)", n)
	}
}

// BenchmarkLimiter is the cost of a distributed decision against the local
// one, in the same run: an allowed request (one round trip to Redis on
// loopback) and a key over its limit (remembered, no round trip).
func BenchmarkLimiter(b *testing.B) {
	r := startRedis(b)
	c := r.client(b, "bench")
	local, err := ratelimit.New(ratelimit.Config{Events: 1 << 30, Per: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("local", func(b *testing.B) {
		for b.Loop() {
			if ok, _ := local.Allow("k", time.Now()); !ok {
				b.Fatal("refused")
			}
		}
	})
	allowed := NewLimiter(c, "allowed", 1<<30, time.Second, 1<<20, 100)
	b.Run("distributed allowed", func(b *testing.B) {
		for b.Loop() {
			if ok, _, err := allowed.Allow(context.Background(), "k"); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	over := NewLimiter(c, "over", 1, time.Hour, 1, 100)
	over.Allow(context.Background(), "k")
	b.Run("distributed over limit", func(b *testing.B) {
		for b.Loop() {
			if ok, _, err := over.Allow(context.Background(), "k"); ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

// TestUnreachableAtStart: a client whose Redis is not there from the start
// says so in the log, and joins once it appears.
func TestUnreachableAtStart(t *testing.T) {
	r := &testRedis{port: e2ebin.FreePort(t)}
	core, logs := observer.New(zap.InfoLevel)
	c, err := New(Config{Address: "redis://" + r.addr()}, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Start()
	waitFor(t, "an error line", func() bool {
		return logs.FilterLevelExact(zap.ErrorLevel).FilterMessageSnippet("redis unusable").Len() > 0
	})
	if c.Up() {
		t.Fatal("up without redis")
	}
	r.start(t)
	t.Cleanup(r.kill)
	waitFor(t, "redis up", c.Up)
}

// TestDenyRedisGarbage: a version Redis holds that no replica wrote (too
// big to count on, not a number, infinite) neither freezes nor splits the
// list: the replicas put a good one back and edits keep converging.
func TestDenyRedisGarbage(t *testing.T) {
	for _, bad := range []string{"9000000000000000000", "inf", "abc", "-5"} {
		t.Run(bad, func(t *testing.T) {
			r := startRedis(t)
			a, b := testStore(t), testStore(t)
			ca := r.client(t, "fleet")
			da := startSync(t, ca, a)
			startSync(t, r.client(t, "fleet"), b)
			if err := ca.rdb.Set(context.Background(), ca.Key(denyVersion), bad, 0).Err(); err != nil {
				t.Fatal(err)
			}
			for _, step := range []struct {
				add  bool
				want []string
			}{{true, []string{"CN=x"}}, {false, nil}, {true, []string{"CN=x"}}} {
				if _, err := da.Edit(context.Background(), entry(t, "CN=x"), step.add); err != nil {
					t.Fatalf("edit with deny:version %q: %v", bad, err)
				}
				expectList(t, "b", b, step.want...)
			}
			if !ca.Up() {
				t.Fatal("redis marked down by garbage it holds")
			}
		})
	}
}

// TestCallerGoneIsNotRedisDown: requests whose client went away are not
// Redis failures.
func TestCallerGoneIsNotRedisDown(t *testing.T) {
	r := startRedis(t)
	c := r.client(t, "fleet")
	l := NewLimiter(c, "z", 10, time.Second, 10, 100)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 2 * failuresToDown {
		l.Allow(ctx, "k")
	}
	if !c.Up() {
		t.Fatal("cancelled requests marked redis down")
	}
}

// TestLimiterDistrustsBucket: a bucket value no script wrote cannot lock a
// client out for longer than one interval, and zones of one name with
// other rates never share a bucket.
func TestLimiterDistrustsBucket(t *testing.T) {
	r := startRedis(t)
	c := r.client(t, "fleet")
	l := NewLimiter(c, "z", 10, time.Second, 10, 100)
	if err := c.rdb.Set(context.Background(), l.bucket("k"), "100000000000000000", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ok, wait, err := l.Allow(context.Background(), "k")
	if err == nil || ok || wait != 0 {
		t.Fatalf("bucket from the far future: %v %v %v, want an error (the caller decides locally)", ok, wait, err)
	}
	if _, over := l.over.get("k"); over {
		t.Fatal("a wait Redis should never give was remembered")
	}
	slow := NewLimiter(c, "z", 1, time.Hour, 1, 100)
	fast := NewLimiter(c, "z", 100, time.Second, 100, 100)
	slow.Allow(context.Background(), "k2")
	if ok, _, err := slow.Allow(context.Background(), "k2"); ok || err != nil {
		t.Fatalf("slow zone: %v %v", ok, err)
	}
	if ok, _, err := fast.Allow(context.Background(), "k2"); !ok || err != nil {
		t.Fatalf("a zone of the same name with another rate shares the bucket: %v %v", ok, err)
	}
}
