package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDenyFileLogsOnce proves that a deny file's skipped lines are logged once per change of the
// file: not once for each module using it (here one file is both the gateway-wide deny_file and an
// mtls_ident's), and not again when the config is reloaded. Loading a config does not log
// "deny_file reloaded" either: only an edit of the file does. The list stays in force throughout:
// its client is refused (the node never sees the request), and nutsgate_deny_file_invalid_lines
// shows the one skipped line, until a config that no longer uses the file is loaded: then the
// file's series goes.
func TestDenyFileLogsOnce(t *testing.T) {
	t.Parallel()
	shared := strings.Replace(mtlsCaddyfile, "{{.Dir}}/site-deny.txt", "{{.Dir}}/deny.txt", 1)
	g := startMTLSGatewayWith(t, shared, relaxedRate, relaxedRate)
	denied, other := g.pki.client(t, "logsonce-denied"), g.pki.client(t, "logsonce-other")
	file := filepath.Join(g.Dir, "deny.txt")
	count := func(s string) int { return strings.Count(g.Logs.String(), s) }
	skippedLine := `"line":"` + file + `:2"`

	if n := count(`"deny_file reloaded"`); n != 0 {
		t.Errorf("starting the gateway logged \"deny_file reloaded\" %d times, want 0: the file did not change", n)
	}
	writeFileAtomic(t, file, []byte(denied.subject()+"\nnot a DN\n"))
	// not polled as the denied client: a request of it under way when the edit takes effect
	// is cut off after the node saw it
	eventually(t, denyWithin, "the skipped line was not logged", func() bool { return count(skippedLine) > 0 })
	time.Sleep(denyWithin) // both watchers have read the file
	g.expectAccess(t, "deny file with a bad line", http.StatusForbidden, denied)
	if n := count(skippedLine); n != 1 {
		t.Errorf("the skipped line was logged %d times for one edit of a file used twice, want 1", n)
	}
	if n := count(`"deny_file reloaded"`); n != 1 {
		t.Errorf("one edit logged \"deny_file reloaded\" %d times, want 1", n)
	}

	g.reload(t)
	awaitReload(t, g.process, func() error {
		_, err := http.Get("http://" + g.addr(g.Admin) + "/config/")
		return err
	})
	time.Sleep(denyWithin) // the new config's watchers have read the file
	g.expectAccess(t, "after the reload", http.StatusForbidden, denied)
	g.expectAccess(t, "after the reload", http.StatusOK, other)
	if n := count(skippedLine); n != 1 {
		t.Errorf("after a config reload the skipped line was logged %d times, want 1 (the file did not change)", n)
	}
	if n := count(`"deny_file reloaded"`); n != 1 {
		t.Errorf("after a config reload \"deny_file reloaded\" was logged %d times, want 1 (the file did not change)", n)
	}
	if v := g.invalidLines(t, file); v != 1 {
		t.Errorf("nutsgate_deny_file_invalid_lines{file=%q} = %v, want 1", file, v)
	}

	// a config that no longer uses the file: its series goes
	cfg, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFileAtomic(t, g.cfgPath, regexp.MustCompile(`(?m)^\s*deny_file .*\n`).ReplaceAll(cfg, nil))
	g.reload(t)
	eventually(t, 5*time.Second, "nutsgate_deny_file_invalid_lines still has the series of a file no config uses", func() bool {
		return g.invalidLines(t, file) == -1
	})
	g.expectAccess(t, "without the deny file", http.StatusOK, denied)
}

// reload has the gateway load its Caddyfile again (nutsgate reload --force), as an operator would.
func (g *mtlsGateway) reload(t *testing.T) {
	t.Helper()
	args := []string{"reload", "--config", g.cfgPath, "--adapter", "caddyfile", "--address", g.addr(g.Admin), "--force"}
	if res := runBin(t, cliTimeout, args...); res.code != 0 {
		t.Fatalf("nutsgate reload: exit status %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
}
