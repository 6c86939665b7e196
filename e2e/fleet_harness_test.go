package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// The fleet tests (contract section 10) run several gateway replicas of fleetCaddyfile, each
// with its own admin port, site ports and deny_file, sharing one real redis-server started by
// the test, in front of one stand-in node.

// fleetCaddyfile is one replica's configuration: the gateway-wide deny list in deny.txt, shared
// through the redis block; /n2n behind a required client certificate and a distributed rate
// limit (zone n2n), /n2n/strict/ with a strict one of its own (zone strict); and the gRPC port.
const fleetCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
	log {
		level INFO
	}
	nutsgate {
		deny_file {{.Dir}}/deny.txt
		redis {
{{.Redis}}
		}
	}
}

https://localhost:{{.N2N}} {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode verify_if_given
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	handle /n2n/strict/* {
		mtls_ident {
			require
		}
		client_rate_limit {
			rate {{.StrictRate}}
			burst {{.StrictBurst}}
			zone strict
			distributed
		}
		reverse_proxy {{.NodePublic}}
	}
	handle /n2n/* {
		mtls_ident {
			require
		}
		client_rate_limit {
			rate {{.N2NRate}}
			burst {{.Burst}}
			zone n2n
			distributed
		}
		reverse_proxy {{.NodePublic}}
	}
	handle {
		respond 404
	}
}

https://localhost:{{.GRPC}} {
	path_guard
	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
		client_auth {
			mode require_and_verify
			trust_pool file {{.Dir}}/ca.pem
		}
	}
	mtls_ident {
		require
	}
	reverse_proxy h2c://{{.NodeGRPC}}
}
`

// fleetSettings fill fleetCaddyfile.
type fleetSettings struct {
	mtlsSettings
	Redis       string // the lines inside the redis block
	Burst       int
	StrictRate  string
	StrictBurst int
}

// Limits of the fleet replicas unless a test sets its own: the /n2n limit is never reached;
// /n2n/strict/ allows 3 requests, then one every 20 s.
const (
	fleetRelaxedRate  = "10000/1s"
	fleetRelaxedBurst = 10000
	fleetStrictRate   = "3/1m"
	fleetStrictBurst  = 3
)

// fleetWithin is how soon an edit made on one replica must be in force on every other: the
// contract's 1 s, with room for the polling itself on a loaded two-core machine.
const fleetWithin = 1500 * time.Millisecond

// resyncWithin is how soon the replicas must have found Redis again after it returns (the
// contract's 10 s).
const resyncWithin = 10 * time.Second

// fleet is a stand-in node, a CA and a Redis, shared by the replicas a test starts.
type fleet struct {
	pki   *testPKI
	node  *testnode.Node
	redis *redisServer
	// n2nRate and burst are the /n2n limit of replicas started from now on.
	n2nRate string
	burst   int
}

// newFleet starts a stand-in node (closed when the test ends) and makes a CA; redis is the
// server the replicas use (it may be started later).
func newFleet(t *testing.T, redis *redisServer) *fleet {
	t.Helper()
	node, err := testnode.Start(testnode.Options{CertHeaderOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	return &fleet{
		pki: newPKI(t, "e2e fleet CA"), node: node, redis: redis,
		n2nRate: fleetRelaxedRate, burst: fleetRelaxedBurst,
	}
}

// replica is one gateway of a fleet. Every mtlsGateway helper works on it (access, changeDeny,
// denyEntries, denyFileLines, grpcAs, ...).
type replica struct {
	*mtlsGateway
	name string
}

// replicaOptions change what start writes for one replica.
type replicaOptions struct {
	// redis is the redis block's lines; default: the address of the fleet's Redis. Unless
	// they set a timeout, fleetRedisTimeout is added.
	redis    string
	denyFile []string // deny.txt's entries at start; default an empty list
	// noRedis: the replica is not expected to reach Redis at start (start does not wait for
	// nutsgate_redis_up 1).
	noRedis bool
}

// fleetRedisTimeout is the replicas' Redis timeout unless a test sets its own. The default,
// 25 ms, is meant for a Redis next to the gateways; a loaded test machine running race-built
// gateways can miss it twice in a row, and the replica then marks Redis down for a second.
// The tests of what a hung or lost Redis does set the default themselves.
const fleetRedisTimeout = "250ms"

// start writes a replica's directory (PKI files, deny.txt, Caddyfile) and starts it, returning
// once its admin, n2n and gRPC ports answer and (unless o.noRedis) it reports Redis up.
func (f *fleet) start(t *testing.T, name string, o replicaOptions) *replica {
	t.Helper()
	g := &mtlsGateway{pki: f.pki, node: f.node}
	g.mtlsSettings = mtlsSettings{
		Admin: e2ebin.FreePort(t), N2N: e2ebin.FreePort(t), GRPC: e2ebin.FreePort(t),
		Dir:        t.TempDir(),
		NodePublic: strings.TrimPrefix(f.node.PublicURL(), "http://"),
		NodeGRPC:   f.node.GRPCAddr(),
		N2NRate:    f.n2nRate,
	}
	redis := o.redis
	if redis == "" {
		redis = "address " + f.redis.address()
	}
	if !strings.Contains(redis, "timeout") {
		redis += "\ntimeout " + fleetRedisTimeout
	}
	var block strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(redis), "\n") {
		block.WriteString("\t\t\t" + strings.TrimSpace(l) + "\n")
	}
	settings := fleetSettings{
		mtlsSettings: g.mtlsSettings,
		Redis:        strings.TrimSuffix(block.String(), "\n"),
		Burst:        f.burst, StrictRate: fleetStrictRate, StrictBurst: fleetStrictBurst,
	}
	deny := "# e2e fleet replica " + name + "\n"
	for _, e := range o.denyFile {
		deny += e + "\n"
	}
	g.cfgPath = writeGatewayDir(t, g.Dir, serverFiles(t, f.pki, map[string][]byte{"deny.txt": []byte(deny)}),
		fleetCaddyfile, settings)
	g.start(t)
	r := &replica{mtlsGateway: g, name: name}
	if !o.noRedis {
		// A replica starts marked down until its first health check has reached Redis, and
		// answers edits with 503 until then: wait for it, as an operator's readiness check would.
		r.awaitRedisUp(t, 1, 5*time.Second)
	}
	return r
}

// startN starts replicas named by names with default options.
func (f *fleet) startN(t *testing.T, names ...string) []*replica {
	t.Helper()
	var out []*replica
	for _, n := range names {
		out = append(out, f.start(t, n, replicaOptions{}))
	}
	return out
}

// ---- deny list across replicas ----

// denyBody is the admin API's JSON body for entry.
func denyBody(entry string) string {
	body, err := json.Marshal(map[string]string{"entry": entry})
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	return string(body)
}

// awaitAccess polls every replica of rs until a /n2n request of c gets want on each, for at most
// within from now, and returns how long each took (refused requests are asserted never to reach
// the node, by access).
func awaitAccess(t *testing.T, what string, within time.Duration, want int, c *leafCert, rs ...*replica) map[string]time.Duration {
	t.Helper()
	start := time.Now()
	took := map[string]time.Duration{}
	last := map[string]httpsResult{}
	for {
		for _, r := range rs {
			if _, done := took[r.name]; done {
				continue
			}
			res := r.access(t, c)
			if res.statusOr() == want {
				took[r.name] = time.Since(start)
			} else {
				last[r.name] = res
			}
		}
		if len(took) == len(rs) {
			return took
		}
		if time.Since(start) > within {
			var missing []string
			for _, r := range rs {
				if _, done := took[r.name]; !done {
					missing = append(missing, fmt.Sprintf("replica %s (last %s)", r.name, last[r.name]))
				}
			}
			t.Fatalf("%s: %s did not get %d within %s on %s", what, c.subject(), want, within, strings.Join(missing, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectAccessAll asserts a /n2n request of each client gets want on every replica, now.
func expectAccessAll(t *testing.T, what string, want int, rs []*replica, cs ...*leafCert) {
	t.Helper()
	for _, r := range rs {
		r.expectAccess(t, what+" (replica "+r.name+")", want, cs...)
	}
}

// expectGRPCDenied asserts a UnaryCall of c on each replica's gRPC port gets PERMISSION_DENIED
// and never reaches the node.
func expectGRPCDenied(t *testing.T, what string, c *leafCert, rs ...*replica) {
	t.Helper()
	for _, r := range rs {
		cl := r.grpcAs(t, c)
		expectCode(t, what+" (replica "+r.name+")", cl.refusedUnary(t), codes.PermissionDenied)
		if calls := r.nodeCalls(cl); len(calls) != 0 {
			t.Errorf("%s (replica %s): the node accepted %d calls of a denied client", what, r.name, len(calls))
		}
	}
}

// awaitDenyFiles polls every replica's deny_file until holding entry is has (true: present),
// for at most within from now.
func awaitDenyFiles(t *testing.T, what string, within time.Duration, entry string, has bool, rs ...*replica) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, r := range rs {
		eventually(t, time.Until(deadline), fmt.Sprintf("%s: replica %s's deny_file holding %q is not %v", what, r.name, entry, has), func() bool {
			return slices.Contains(r.denyFileLines(t), entry) == has
		})
	}
}

// expectListed asserts whether entry is (has) or is not in each replica's GET /nutsgate/deny and
// deny_file, now.
func expectListed(t *testing.T, what, entry string, has bool, rs ...*replica) {
	t.Helper()
	for _, r := range rs {
		if got := slices.Contains(r.denyEntries(t), entry); got != has {
			t.Errorf("%s: replica %s's GET /nutsgate/deny lists %q: %v, want %v (%q)", what, r.name, entry, got, has, r.denyEntries(t))
		}
		if got := slices.Contains(r.denyFileLines(t), entry); got != has {
			t.Errorf("%s: replica %s's deny_file holds %q: %v, want %v", what, r.name, entry, got, has)
		}
	}
}

// editResult is the outcome of one deny-list edit through the admin API.
type editResult struct {
	status int
	body   string
	took   time.Duration
	err    error // the request failed
}

// tryEdit POSTs (method POST) or DELETEs entry on r's admin API. It is safe in any goroutine.
func (r *replica) tryEdit(method, entry string) editResult {
	req, err := http.NewRequest(method, "http://"+r.addr(r.Admin)+"/nutsgate/deny", strings.NewReader(denyBody(entry)))
	if err != nil {
		return editResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		return editResult{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return editResult{status: resp.StatusCode, body: string(body), took: time.Since(start), err: err}
}

// checkUnavailable asserts res, an edit (method) on r, was refused with 503 and a body naming
// Redis, answered within 2 s (plus slack for the machine).
func checkUnavailable(t *testing.T, what string, r *replica, method string, res editResult) {
	t.Helper()
	if res.err != nil || res.status != http.StatusServiceUnavailable || !strings.Contains(strings.ToLower(res.body), "redis") {
		t.Errorf("%s: %s /nutsgate/deny on replica %s: status %d, body %q, error %v; want 503 with a message naming Redis",
			what, method, r.name, res.status, res.body, res.err)
	}
	// An edit waits at most 2 s for Redis (1 s to reach it, 1 s more for its answer).
	if res.took > 3*time.Second {
		t.Errorf("%s: %s /nutsgate/deny on replica %s took %s, want the 503 within the edit's 2 s and 1 s of slack", what, method, r.name, res.took)
	}
}

// expectUnavailable makes an edit (POST or DELETE of entry) on r, asserts checkUnavailable of
// it, and returns how long it took.
func expectUnavailable(t *testing.T, what string, r *replica, method, entry string) time.Duration {
	t.Helper()
	res := r.tryEdit(method, entry)
	checkUnavailable(t, what, r, method, res)
	return res.took
}

// ---- metrics and logs ----

// Metrics of contract section 10.
const (
	metricRedisUp   = "nutsgate_redis_up"
	metricRedisErrs = "nutsgate_redis_errors_total"
	metricFallback  = "nutsgate_rate_limit_fallback_total"
)

// metricSum is the sum of every series of metric on r's admin /metrics, and whether any exists.
func (r *replica) metricSum(t *testing.T, metric string) (float64, bool) {
	t.Helper()
	sum, found := 0.0, false
	for s, v := range scrapeMetricsAt(t, r.addr(r.Admin), metric) {
		if strings.HasPrefix(s, metric+"{") {
			sum += v
			found = true
		}
	}
	return sum, found
}

// metric is metricSum, failing the test if r exposes no series of metric.
func (r *replica) metric(t *testing.T, metric string) float64 {
	t.Helper()
	v, ok := r.metricSum(t, metric)
	if !ok {
		t.Fatalf("replica %s: /metrics has no series of %s", r.name, metric)
	}
	return v
}

// awaitRedisUp polls r's nutsgate_redis_up until it is want, for at most within.
func (r *replica) awaitRedisUp(t *testing.T, want float64, within time.Duration) {
	t.Helper()
	var last float64
	var ok bool
	deadline := time.Now().Add(within)
	for {
		if last, ok = r.metricSum(t, metricRedisUp); ok && last == want {
			return
		}
		if time.Now().After(deadline) {
			if !ok {
				t.Fatalf("replica %s: /metrics has no %s", r.name, metricRedisUp)
			}
			t.Fatalf("replica %s: %s is %v, not %v within %s", r.name, metricRedisUp, last, want, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// loggedError reports whether the process logged an entry at level error (or above) whose line
// holds each of words, ignoring case.
func loggedError(p *process, words ...string) bool {
	for _, l := range strings.Split(p.Logs.String(), "\n") {
		if !strings.Contains(l, `"level":"error"`) && !strings.Contains(l, `"level":"fatal"`) {
			continue
		}
		low := strings.ToLower(l)
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(low, strings.ToLower(w))
		}
		if ok {
			return true
		}
	}
	return false
}

// holdsWithin polls cond every 100 ms until it returns true (then true) or d has passed (then
// false): eventually for checks whose failure should not end the test.
func holdsWithin(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// ---- latency ----

// percentile is the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}

// ---- Redis ----

// redisServer is a redis-server started by a test, with no persistence: a restart loses all.
type redisServer struct {
	bin   string   // redis-server or redis-sentinel
	ready string   // what its log says once it serves, lower case
	args  []string // the command line after the binary
	port  int      // TCP or TLS port; 0 with a unix socket
	sock  string   // the unix socket, if any
	tls   *redisTLS
	dir   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *e2ebin.SyncBuffer
}

// redisTLS is what a TLS Redis serves and what its clients trust.
type redisTLS struct {
	caFile, certFile, keyFile string
}

// redisOptions shape a redisServer.
type redisOptions struct {
	unixSocket bool     // listen on <dir>/r.sock only
	tls        *testPKI // serve TLS only (rediss://), with a server certificate of this CA
	args       []string // more redis-server arguments (e.g. ACL users)
}

// redisBinary finds name (redis-server, redis-sentinel, redis-cli), failing the test with a
// clear message if it is not installed: the fleet tests run against a real Redis and are never
// skipped.
func redisBinary(t *testing.T, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (the fleet tests run a real Redis 7; apt-get install redis-server redis-sentinel redis-tools): %v", name, err)
	}
	return bin
}

// newRedis prepares a Redis on a free loopback port (or a unix socket) without starting it.
func newRedis(t *testing.T, o redisOptions) *redisServer {
	t.Helper()
	redisBinary(t, "redis-server")
	r := &redisServer{bin: "redis-server", ready: "ready to accept connections", dir: t.TempDir()}
	r.args = []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", r.dir}
	switch {
	case o.unixSocket:
		r.sock = filepath.Join(r.dir, "r.sock")
		r.args = append(r.args, "--port", "0", "--unixsocket", r.sock, "--unixsocketperm", "700")
	case o.tls != nil:
		r.port = e2ebin.FreePort(t)
		server := o.tls.server(t)
		r.tls = &redisTLS{
			caFile:   filepath.Join(r.dir, "ca.pem"),
			certFile: filepath.Join(r.dir, "redis.pem"),
			keyFile:  filepath.Join(r.dir, "redis.key"),
		}
		writeFileAtomic(t, r.tls.caFile, o.tls.caPEM())
		writeFileAtomic(t, r.tls.certFile, server.pem())
		writeFileAtomic(t, r.tls.keyFile, server.keyPEM(t))
		r.args = append(r.args, "--port", "0", "--tls-port", strconv.Itoa(r.port),
			"--tls-cert-file", r.tls.certFile, "--tls-key-file", r.tls.keyFile,
			"--tls-ca-cert-file", r.tls.caFile, "--tls-auth-clients", "no")
	default:
		r.port = e2ebin.FreePort(t)
		r.args = append(r.args, "--port", strconv.Itoa(r.port))
	}
	r.args = append(r.args, o.args...)
	r.cleanup(t)
	return r
}

// cleanup kills the server when the test ends, and prints its log if the test failed.
func (r *redisServer) cleanup(t *testing.T) {
	t.Cleanup(func() {
		r.kill(t)
		if t.Failed() {
			t.Logf("%s (%s) log:\n%s", r.bin, r.address(), r.logText())
		}
	})
}

// sentinelDownAfter is how long the test's Sentinel waits before it fails a silent master over.
const sentinelDownAfter = time.Second

// startSentinel starts a redis-sentinel on a free port that monitors master as master name
// "mymaster" with a quorum of 1, and returns once it is ready and has found the master's
// replica.
func startSentinel(t *testing.T, master *redisServer) *redisServer {
	t.Helper()
	r := &redisServer{bin: "redis-sentinel", ready: "+slave slave", dir: t.TempDir(), port: e2ebin.FreePort(t)}
	conf := filepath.Join(r.dir, "sentinel.conf")
	writeFileAtomic(t, conf, []byte(strings.Join([]string{
		"port " + strconv.Itoa(r.port),
		"bind 127.0.0.1",
		"dir " + r.dir,
		"sentinel monitor mymaster 127.0.0.1 " + strconv.Itoa(master.port) + " 1",
		"sentinel down-after-milliseconds mymaster " + strconv.Itoa(int(sentinelDownAfter.Milliseconds())),
		"sentinel failover-timeout mymaster 5000",
		"",
	}, "\n")))
	r.args = []string{conf}
	r.cleanup(t)
	r.start(t)
	return r
}

// startRedis is newRedis and start.
func startRedis(t *testing.T, o redisOptions) *redisServer {
	t.Helper()
	r := newRedis(t, o)
	r.start(t)
	return r
}

// address is the redis block's address of the server.
func (r *redisServer) address() string {
	switch {
	case r.sock != "":
		return "unix://" + r.sock
	case r.tls != nil:
		return "rediss://127.0.0.1:" + strconv.Itoa(r.port) + "/0"
	default:
		return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0"
	}
}

func (r *redisServer) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logs == nil {
		return ""
	}
	return r.logs.String()
}

// start runs redis-server and returns once it accepts connections.
func (r *redisServer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(redisBinary(t, r.bin), r.args...)
	cmd.SysProcAttr = e2ebin.ProcAttr()
	logs := &e2ebin.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", r.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	r.mu.Lock()
	r.cmd, r.exited, r.logs = cmd, exited, logs
	r.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("%s exited during start-up: %v\n%s", r.bin, cmd.ProcessState, logs)
		default:
		}
		if r.accepts() && strings.Contains(strings.ToLower(logs.String()), r.ready) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s) not ready within 10 s\n%s", r.bin, r.address(), logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// accepts reports whether the server's socket accepts a connection.
func (r *redisServer) accepts() bool {
	network, addr := "tcp", "127.0.0.1:"+strconv.Itoa(r.port)
	if r.sock != "" {
		network, addr = "unix", r.sock
	}
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// signal sends sig to the running server.
func (r *redisServer) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if cmd == nil {
		t.Fatalf("test bug: %v to a %s that was never started", sig, r.bin)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v: %v", r.bin, sig, err)
	}
}

// hang stops the server (SIGSTOP): connections stay open and new ones are even accepted by the
// kernel, but nothing is answered.
func (r *redisServer) hang(t *testing.T) { t.Helper(); r.signal(t, syscall.SIGSTOP) }

// resume continues a hung server (SIGCONT).
func (r *redisServer) resume(t *testing.T) { t.Helper(); r.signal(t, syscall.SIGCONT) }

// kill kills the server (SIGKILL, so it saves nothing) and waits for it to exit. Killing a
// server that is not running does nothing.
func (r *redisServer) kill(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s pid %d did not exit after SIGKILL", r.bin, cmd.Process.Pid)
	}
	if r.sock != "" {
		os.Remove(r.sock)
	}
}

// cli runs redis-cli against the server with args (as the default user, or with auth given in
// args) and returns its output.
func (r *redisServer) cli(t *testing.T, args ...string) string {
	t.Helper()
	var base []string
	switch {
	case r.sock != "":
		base = []string{"-s", r.sock}
	default:
		base = []string{"-h", "127.0.0.1", "-p", strconv.Itoa(r.port)}
	}
	if r.tls != nil {
		base = append(base, "--tls", "--cacert", r.tls.caFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, redisBinary(t, "redis-cli"), append(base, args...)...).CombinedOutput()
	if err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("redis-cli %s: %v", strings.Join(args, " "), err)
		}
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ---- a replica's own link to Redis ----

// redisProxy is a TCP proxy between one replica and Redis, so that one replica's link can be
// cut while the others keep theirs.
type redisProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]bool
	mode    proxyMode
	release chan struct{} // closed when a hold ends
}

type proxyMode int

const (
	proxyPass   proxyMode = iota
	proxyHold             // new connections wait, unanswered, until restore
	proxyRefuse           // new connections are closed at once
)

// startRedisProxy listens on a free loopback port and forwards every connection to target
// (host:port), until the test ends.
func startRedisProxy(t *testing.T, target string) *redisProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

// address is the redis:// address of the proxy.
func (p *redisProxy) address() string { return "redis://" + p.ln.Addr().String() + "/0" }

func (p *redisProxy) serve(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = true
	mode, release := p.mode, p.release
	p.mu.Unlock()
	switch mode {
	case proxyRefuse:
		p.drop(c)
		return
	case proxyHold:
		<-release
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if !p.conns[c] { // cut while it waited
		p.mu.Unlock()
		up.Close()
		return
	}
	p.conns[up] = true
	p.mu.Unlock()
	go func() {
		_, _ = io.Copy(up, c)
		p.drop(up)
		p.drop(c)
	}()
	_, _ = io.Copy(c, up)
	p.drop(up)
	p.drop(c)
}

func (p *redisProxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *redisProxy) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]bool{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// cut closes every connection of the link; new ones wait unanswered (proxyHold) or are closed
// at once (proxyRefuse) until restore.
func (p *redisProxy) cut(mode proxyMode) {
	p.mu.Lock()
	p.mode = mode
	if mode == proxyHold {
		p.release = make(chan struct{})
	}
	p.mu.Unlock()
	p.closeAll()
}

// restore lets connections through again, the held ones included.
func (p *redisProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == proxyHold {
		close(p.release)
	}
	p.mode = proxyPass
}
