package e2ebin

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// StartTimeout bounds how long a started gateway may take to become ready.
const StartTimeout = 20 * time.Second

// Process is one running `nutsgate run`.
type Process struct {
	Cmd    *exec.Cmd
	Exited chan struct{} // closed once the process has exited
	Logs   *SyncBuffer   // stderr, where Caddy writes its log
	Stdout *SyncBuffer
}

// Start runs `bin run` with the Caddyfile at cfgPath, in an environment whose home is a temp
// dir, and returns once ready reports true (polled every 50 ms, for at most StartTimeout). The
// process is killed when the test ends; the test fails if the race detector reported a race
// in it (see NUTSGATE_E2E_RACE), and its output is printed if the test failed.
func Start(t testing.TB, bin, cfgPath string, ready func() bool) *Process {
	t.Helper()
	return StartEnv(t, bin, cfgPath, Env(t.TempDir()), ready)
}

// StartEnv is Start with the child's whole environment given, as an operator's service manager
// would set it (the shipped Caddyfiles read their paths and addresses from it).
func StartEnv(t testing.TB, bin, cfgPath string, env []string, ready func() bool) *Process {
	t.Helper()
	p := &Process{Exited: make(chan struct{}), Logs: &SyncBuffer{}, Stdout: &SyncBuffer{}}
	p.Cmd = exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	p.Cmd.Env = env
	p.Cmd.SysProcAttr = ProcAttr()
	p.Cmd.Stdout, p.Cmd.Stderr = p.Stdout, p.Logs
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start nutsgate: %v", err)
	}
	go func() {
		_ = p.Cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(func() {
		p.Stop(t)
		ours, others := races(p.Logs.String())
		if ours > 0 {
			t.Errorf("the race detector reported %d data races in nutsgate's code (NUTSGATE_E2E_RACE)", ours)
		}
		if others > 0 {
			t.Logf("the race detector reported %d data races within third-party code only (see the gateway log)", others)
		}
		if t.Failed() {
			t.Logf("gateway (pid %d) stdout:\n%s\ngateway stderr:\n%s", p.Cmd.Process.Pid, p.Stdout, p.Logs)
		}
	})

	deadline := time.Now().Add(StartTimeout)
	for {
		select {
		case <-p.Exited:
			t.Fatalf("nutsgate exited during start-up: %v\nstderr:\n%s", p.Cmd.ProcessState, p.Logs)
		default:
		}
		if ready() {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("nutsgate (%s) not ready within %s", cfgPath, StartTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// races counts the race detector's reports in a gateway's log: those whose racing accesses
// run through nutsgate's own code, and those whose accesses are all in other modules (such as
// one inside Caddy's reverse proxy and the HTTP/2 transport, seen under gRPC). Where the racing
// goroutines were created does not count: every request goroutine starts in nutsgate's handlers.
func races(log string) (ours, others int) {
	reports := strings.Split(log, "WARNING: DATA RACE")
	for _, r := range reports[1:] {
		accesses, _, _ := strings.Cut(r, "Goroutine ")
		if strings.Contains(accesses, "github.com/nutsgate/nutsgate/") {
			ours++
		} else {
			others++
		}
	}
	return ours, others
}

// Stop kills the process and waits for it to exit. Stopping a stopped process does nothing.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	_ = p.Cmd.Process.Kill()
	select {
	case <-p.Exited:
	case <-time.After(10 * time.Second):
		t.Errorf("nutsgate pid %d did not exit after kill", p.Cmd.Process.Pid)
	}
}

// Env is the environment for a run of the binary: the caller's, with HOME and the XDG
// directories moved into dir so Caddy's autosave and storage never touch the real home.
func Env(dir string) []string {
	env := os.Environ()
	for _, name := range []string{"HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"} {
		env = append(env, name+"="+dir)
	}
	return env
}

var (
	portsMu sync.Mutex
	// portsUsed holds every port handed out in this process, so two parallel gateways never
	// get the same one even if it is free twice.
	portsUsed = map[int]bool{}
)

// Ports are handed out from below the kernel's range of ephemeral ports (the source ports of
// outgoing connections: a port probed free there can be taken by a test's own connection
// before the gateway binds it), at random, so that test binaries running at once rarely try
// the same one.
const (
	minPort         = 10000
	defaultEphemLow = 32768 // Linux's default, if /proc does not say
)

// FreePort returns a loopback port on which nothing listens right now, over TCP or UDP (a
// gateway with HTTP/3 binds both), below the ephemeral range.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	high := ephemeralLow()
	for range 1000 {
		port := minPort + rand.IntN(high-minPort)
		if portsUsed[port] || !bindable(port) {
			continue
		}
		portsUsed[port] = true
		return port
	}
	t.Fatalf("free port: none found in [%d, %d) after 1000 attempts", minPort, high)
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemLow
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return defaultEphemLow
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= minPort+1000 {
		return defaultEphemLow
	}
	return low
}

// bindable reports whether port can be bound on 127.0.0.1 over TCP and UDP now.
func bindable(port int) bool {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// SyncBuffer is a bytes.Buffer safe for a process writing and a test reading at once.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
