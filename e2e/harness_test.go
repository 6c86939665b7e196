package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// binPath is the nutsgate binary built by TestMain.
var binPath string

// TestMain builds the binary once for every test in the package.
func TestMain(m *testing.M) {
	os.Exit(e2ebin.Main(m, &binPath))
}

// result is what one finished run of the binary produced.
type result struct {
	stdout, stderr string
	code           int
}

// runBin runs the binary with args to completion (bounded by timeout) and returns its output and
// exit status. It fails the test if the process cannot be started or does not finish in time.
func runBin(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return runBinIn(t, timeout, "", nil, args...)
}

// runBinIn is runBin in the working directory dir (the test's own if empty) with env as the
// child's whole environment (e2ebin.Env of a fresh temp dir if nil).
func runBinIn(t *testing.T, timeout time.Duration, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Dir = dir
	cmd.Env = env
	if env == nil {
		cmd.Env = e2ebin.Env(t.TempDir())
	}
	cmd.SysProcAttr = e2ebin.ProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("nutsgate %s: did not finish within %s\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), timeout, &stdout, &stderr)
	}
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("nutsgate %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// ---- the stand-in node ----

// upstream is the stand-in Nuts node (internal/testnode) behind a token_v2 gateway, with the
// assertions the token_v2 tests make on what it received.
type upstream struct{ *testnode.Node }

// newUpstream starts a stand-in node, closed when the test ends.
func newUpstream(t *testing.T) *upstream {
	t.Helper()
	node, err := testnode.Start(testnode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	return &upstream{node}
}

// hostPort is the address of the node's public listener as reverse_proxy wants it.
func (u *upstream) hostPort() string {
	return strings.TrimPrefix(u.PublicURL(), "http://")
}

// requestsFor returns the recorded requests whose path is path.
func (u *upstream) requestsFor(path string) []testnode.Request {
	var out []testnode.Request
	for _, r := range u.Requests() {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// answeredByNode reports whether r is the node's answer to a request for path: 200 with the
// node's echo of it.
func answeredByNode(r response, path string) bool {
	var echo struct{ Listener, Path string }
	return r.status == http.StatusOK && json.Unmarshal([]byte(r.body), &echo) == nil &&
		echo.Listener == testnode.ListenerPublic && echo.Path == path
}

// assertSawNothing fails the test if the upstream received any request for path. Every test
// request carries a unique path, so this isolates one request even on a shared gateway; a request
// the gateway forwards reaches the upstream before the client gets its answer, so no waiting is
// needed.
func (u *upstream) assertSawNothing(t *testing.T, path string) {
	t.Helper()
	if got := u.requestsFor(path); len(got) != 0 {
		t.Errorf("upstream received %d request(s) for %s, want none: %+v", len(got), path, got)
	}
}

// assertSawExactly fails the test unless the upstream received exactly one request for path,
// with this method and query, and carrying exactly one Authorization header equal, byte for byte,
// to auth.
func (u *upstream) assertSawExactly(t *testing.T, method, path, rawQuery, auth string) {
	t.Helper()
	got := u.requestsFor(path)
	if len(got) != 1 {
		t.Errorf("upstream received %d request(s) for %s, want exactly 1", len(got), path)
		return
	}
	r := got[0]
	if r.Method != method || r.RawQuery != rawQuery {
		t.Errorf("upstream saw %s %s?%s, want %s %s?%s", r.Method, r.Path, r.RawQuery, method, path, rawQuery)
	}
	if vals := r.Header.Values("Authorization"); len(vals) != 1 || vals[0] != auth {
		t.Errorf("upstream saw Authorization %q, want exactly [%q]", vals, auth)
	}
}

// ---- the gateway process ----

// process is one running gateway.
type process = e2ebin.Process

// gateway is a running token_v2 gateway in front of a recording upstream.
type gateway struct {
	base string // http://127.0.0.1:<site port>
	*process
	up *upstream
}

// caddyfileTemplate is the configuration every gateway runs: /internal/* behind token_v2 and
// proxied to the upstream, everything else 404. The fields are filled by writeCaddyfile.
const caddyfileTemplate = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https off
	log {
		level INFO
	}
}

http://127.0.0.1:{{.Site}} {
	handle /internal/* {
		token_v2 {
			authorized_keys {{.Keys}}
			audience {{.Audience}}
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		respond 404
	}
}
`

// testAudience is the audience every test gateway is configured with.
const testAudience = "test-aud"

// writeCaddyfile writes a gateway configuration for keysFile and up into a fresh temp dir and
// returns its path and the site port it uses.
func writeCaddyfile(t *testing.T, keysFile string, up *upstream) (path string, sitePort int) {
	t.Helper()
	settings := struct {
		Admin, Site              int
		Keys, Audience, Upstream string
	}{e2ebin.FreePort(t), e2ebin.FreePort(t), keysFile, testAudience, up.hostPort()}
	return writeGatewayDir(t, t.TempDir(), nil, caddyfileTemplate, settings), settings.Site
}

// writeGatewayDir writes files (name: content) into dir, then the Caddyfile rendered from the
// text/template tmpl with settings, and returns the Caddyfile's path. Every test gateway's
// directory is written by it.
func writeGatewayDir(t *testing.T, dir string, files map[string][]byte, tmpl string, settings any) string {
	t.Helper()
	for name, data := range files {
		writeFileAtomic(t, filepath.Join(dir, name), data)
	}
	var cfg bytes.Buffer
	if err := template.Must(template.New("Caddyfile").Parse(tmpl)).Execute(&cfg, settings); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "Caddyfile")
	writeFileAtomic(t, path, cfg.Bytes())
	return path
}

// serverFiles are the PKI files of a TLS gateway: the CA that signs client certificates
// (ca.pem) and the server's certificate and key (server.pem, server.key), with extra files.
func serverFiles(t *testing.T, pki *testPKI, extra map[string][]byte) map[string][]byte {
	t.Helper()
	server := pki.server(t)
	files := map[string][]byte{
		"ca.pem":     pki.caPEM(),
		"server.pem": server.pem(),
		"server.key": server.keyPEM(t),
	}
	for name, data := range extra {
		files[name] = data
	}
	return files
}

// startGateway starts `nutsgate run` with a Caddyfile protecting /internal/* with token_v2 over
// keysFile and proxying to up. It returns once the site port answers, and kills the process when
// the test ends; on failure the process's output is printed.
func startGateway(t *testing.T, keysFile string, up *upstream) *gateway {
	t.Helper()
	return startGatewayEdited(t, keysFile, up, "", "")
}

// startGatewayEdited is startGateway with the first old in the test Caddyfile replaced by new
// (nothing changed if old is "").
func startGatewayEdited(t *testing.T, keysFile string, up *upstream, old, new string) *gateway {
	t.Helper()
	cfgPath, sitePort := writeCaddyfile(t, keysFile, up)
	if old != "" {
		cfg, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(cfg), old, new, 1)
		if edited == string(cfg) {
			t.Fatalf("no %q in the test Caddyfile", old)
		}
		writeFileAtomic(t, cfgPath, []byte(edited))
	}
	g := &gateway{base: "http://127.0.0.1:" + strconv.Itoa(sitePort), up: up}
	g.process = e2ebin.Start(t, binPath, cfgPath, func() bool {
		resp, err := httpClient.Get(g.base + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return g
}

// httpClient talks to gateways directly, never through a proxy from the environment.
var httpClient = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	Timeout:   10 * time.Second,
}

// response is a gateway's answer with its body read.
type response struct {
	status int
	header http.Header
	body   string
}

// send makes one request to the gateway; auth is the Authorization header value, none if empty.
func (g *gateway) send(t *testing.T, method, pathAndQuery, auth string) response {
	t.Helper()
	req, err := http.NewRequest(method, g.base+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, pathAndQuery, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, pathAndQuery, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// probePath returns a fresh, unique path under /internal/ for one request, so the upstream's
// record of it can be told apart from every other request.
func probePath(t *testing.T) string {
	t.Helper()
	return "/internal/probe/" + newJTI()
}

// refusal describes why a response is not the gateway's uniform refusal, or "" if it is.
func refusal(r response) string {
	var problems []string
	if r.status != http.StatusUnauthorized {
		problems = append(problems, fmt.Sprintf("status %d, want 401", r.status))
	}
	if r.body != "Unauthorized" {
		problems = append(problems, fmt.Sprintf("body %q, want %q", r.body, "Unauthorized"))
	}
	if got := r.header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != "Bearer" {
		problems = append(problems, fmt.Sprintf("WWW-Authenticate %q, want [\"Bearer\"]", got))
	}
	return strings.Join(problems, "; ")
}

// expectRefused sends one request with auth and asserts the uniform refusal (401, body
// "Unauthorized", WWW-Authenticate: Bearer) and that the upstream never saw it.
func (g *gateway) expectRefused(t *testing.T, auth string) {
	t.Helper()
	path := probePath(t)
	if why := refusal(g.send(t, http.MethodGet, path, auth)); why != "" {
		t.Errorf("Authorization %.60q: not refused properly: %s", auth, why)
	}
	g.up.assertSawNothing(t, path)
}

// tryGrant sends one request with auth and reports whether it was granted: 200 with the
// node's answer, and the upstream saw exactly that request with the Authorization header
// intact. Otherwise it returns a description of what happened instead.
func (g *gateway) tryGrant(t *testing.T, auth string) (ok bool, what string) {
	t.Helper()
	path, query := probePath(t), "probe=1&x=%3A"
	r := g.send(t, http.MethodGet, path+"?"+query, auth)
	if !answeredByNode(r, path) {
		return false, fmt.Sprintf("status %d body %q", r.status, r.body)
	}
	g.up.assertSawExactly(t, http.MethodGet, path, query, auth)
	return true, ""
}

// expectGranted asserts that a request with auth is granted and reaches the upstream intact.
func (g *gateway) expectGranted(t *testing.T, auth string) {
	t.Helper()
	if ok, what := g.tryGrant(t, auth); !ok {
		t.Errorf("Authorization %.60q: want grant (200 from the node), got %s", auth, what)
	}
}

// eventually polls cond every 100 ms until it returns true or within has passed, then fails the
// test with msg.
func eventually(t *testing.T, within time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// awaitReload waits until the gateway p has logged a completed config load and then answers
// probe three times in a row without a transport error. A reload stops the old servers while the
// new ones already run, and a connection that lands on a stopping server is closed: the checks
// after a reload are about the new config, not about that moment.
func awaitReload(t *testing.T, p *process, probe func() error) {
	t.Helper()
	eventually(t, 5*time.Second, "the gateway logged no completed config load: was the config reloaded?", func() bool {
		return strings.Contains(p.Logs.String(), `"load complete"`)
	})
	ok := 0
	eventually(t, 5*time.Second, "the gateway does not answer after the reload", func() bool {
		if probe() != nil {
			ok = 0
			return false
		}
		ok++
		return ok == 3
	})
}

// ---- files ----

// writeFileAtomic writes data to path through a temp file in the same directory and a rename,
// so a watcher never sees a half-written file.
func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		t.Fatal(err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o600), os.Rename(tmp.Name(), path)); err != nil {
		os.Remove(tmp.Name())
		t.Fatalf("write %s: %v", path, err)
	}
}

// moduleRoot is the directory of the module under test, where its shipped files are.
func moduleRoot(t testing.TB) string {
	t.Helper()
	root, err := e2ebin.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
