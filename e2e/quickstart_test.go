package e2e

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
)

// quickStartPorts are the ports README.md's quick start serves on: the admin API, the public
// and n2n site, the gRPC port and the internal API.
var quickStartPorts = []int{2019, 9443, 9555, 9081}

// nobody is the unprivileged user the quick start runs as when the tests run as root.
const nobody = 65534

// TestQuickStartLoopbackOnly runs the quick start as README.md says (`nutsgate run` where the
// repository's Caddyfile and quickstart/ are) as an unprivileged user (nobody, when the tests
// run as root) in a network namespace of its own, so that its fixed ports clash with nothing
// and every socket of the namespace is the gateway's. The gateway must start (it once failed
// on :80, Caddy's HTTP->HTTPS redirect server, which needs root) and listen on the loopback
// interface only (it once listened on every interface while trusting a client CA whose key is
// public), on no port below 1024.
func TestQuickStartLoopbackOnly(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	// A directory every user can read: the repository's own may sit below a private home.
	dir, err := os.MkdirTemp("", "nutsgate-quickstart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	copyTree(t, filepath.Join(root, "quickstart"), filepath.Join(dir, "quickstart"))
	copyFile(t, filepath.Join(root, "Caddyfile"), filepath.Join(dir, "Caddyfile"), 0o644)
	copyFile(t, binPath, filepath.Join(dir, "nutsgate"), 0o755)
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// A new network namespace with its loopback interface up; as root, the gateway drops to
	// nobody; otherwise a user namespace makes the new network namespace possible.
	run := "exec ./nutsgate run"
	unshare := []string{"--net"}
	if os.Geteuid() == 0 {
		// The quick start's user owns its checkout: the deny list is written in quickstart/.
		for _, d := range []string{home, filepath.Join(dir, "quickstart")} {
			if err := os.Chown(d, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
		run = fmt.Sprintf("exec setpriv --reuid=%d --regid=%d --clear-groups ./nutsgate run", nobody, nobody)
	} else {
		unshare = []string{"--user", "--map-current-user", "--net"}
	}
	args := append(unshare, "--", "sh", "-c", "ip link set lo up && "+run)
	cmd := exec.Command("unshare", args...)
	cmd.Dir = dir
	cmd.Env = e2ebin.Env(home)
	cmd.SysProcAttr = e2ebin.ProcAttr()
	logs := &e2ebin.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v (the test needs util-linux's unshare and setpriv, and iproute2's ip)", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("quick-start gateway output:\n%s", logs)
		}
	})

	// unshare and sh exec the gateway, so cmd's pid is the gateway's.
	var sockets []netip.AddrPort
	deadline := time.Now().Add(e2ebin.StartTimeout)
	for {
		select {
		case <-exited:
			t.Fatalf("the quick start exited: %v", cmd.ProcessState)
		default:
		}
		sockets = listeningSockets(t, cmd.Process.Pid)
		if !slices.ContainsFunc(quickStartPorts, func(p int) bool { return !listensOn(sockets, p) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quick start does not listen on all of %v within %s; it listens on %v", quickStartPorts, e2ebin.StartTimeout, sockets)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// logged once every app has started, which can be a moment after the listeners are up
	eventually(t, 10*time.Second, "the gateway listens but did not log that it serves its configuration", func() bool {
		return strings.Contains(logs.String(), "serving initial configuration")
	})
	for _, s := range sockets {
		if !s.Addr().IsLoopback() || s.Port() < 1024 {
			t.Errorf("the quick start listens on %s: want loopback addresses and ports of 1024 or more only", s)
		}
	}
}

// listensOn reports whether a socket of sockets has port.
func listensOn(sockets []netip.AddrPort, port int) bool {
	return slices.ContainsFunc(sockets, func(s netip.AddrPort) bool { return int(s.Port()) == port })
}

// listeningSockets lists the local addresses of the listening TCP sockets and the bound UDP
// sockets of the network namespace of process pid, from /proc/<pid>/net.
func listeningSockets(t *testing.T, pid int) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue // the process is gone, or has no IPv6
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 {
				continue
			}
			// TCP: only LISTEN (0A); UDP: every bound socket (07, unconnected).
			if strings.HasPrefix(table, "tcp") && fields[3] != "0A" {
				continue
			}
			addr, err := parseProcAddr(fields[1])
			if err != nil {
				t.Fatalf("/proc/%d/net/%s: %v", pid, table, err)
			}
			out = append(out, addr)
		}
		f.Close()
	}
	return out
}

// parseProcAddr reads an address of /proc/net/{tcp,udp}[6]: hex IP in host byte order by
// 32-bit words, a colon, the hex port.
func parseProcAddr(s string) (netip.AddrPort, error) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(ipHex)
	port, perr := strconv.ParseUint(portHex, 16, 16)
	if !ok || err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 { // each 32-bit word is little-endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// copyTree copies the regular files below src to dst, readable by everyone.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if d.Type().IsRegular() {
			copyFile(t, path, filepath.Join(dst, rel), 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyFile copies src to dst with mode perm.
func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
}
