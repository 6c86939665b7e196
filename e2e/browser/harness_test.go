//go:build linux

package browser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
)

// binPath is the nutsgate binary built by TestMain.
var binPath string

// TestMain builds the binary once for every test in the package.
func TestMain(m *testing.M) {
	os.Exit(e2ebin.Main(m, &binPath))
}

// waitFor calls cond every 50 ms until it reports true or timeout passes,
// and reports whether it did. It polls a condition; it is never a delay for
// its own sake.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- the gateway process ----

// gateway is one running `nutsgate run` process serving base.
type gateway struct {
	base string // http://127.0.0.1:<site port>
	*e2ebin.Process
}

// startGateway writes caddyfile into a temp dir and starts `nutsgate run`
// with it. It returns once the site at base answers any HTTP response; the
// process is killed when the test ends, its output printed if the test
// failed.
func startGateway(t *testing.T, base, caddyfile string) *gateway {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	p := e2ebin.Start(t, binPath, cfgPath, func() bool {
		resp, err := client.Get(base + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return &gateway{base: base, Process: p}
}

// accessEntry is one line of Caddy's JSON access log.
type accessEntry struct {
	Logger  string `json:"logger"`
	Msg     string `json:"msg"`
	Status  int    `json:"status"`
	Request struct {
		Method string `json:"method"`
		URI    string `json:"uri"`
	} `json:"request"`
}

// accessLog returns the access log entries written so far.
func (g *gateway) accessLog() []accessEntry {
	var out []accessEntry
	sc := bufio.NewScanner(strings.NewReader(g.Logs.String()))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var e accessEntry
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if strings.HasPrefix(e.Logger, "http.log.access") && e.Msg == "handled request" {
			out = append(out, e)
		}
	}
	return out
}

// handled returns the statuses the gateway answered method uri with, as its
// access log tells.
func (g *gateway) handled(method, uri string) []int {
	var statuses []int
	for _, e := range g.accessLog() {
		if e.Request.Method == method && e.Request.URI == uri {
			statuses = append(statuses, e.Status)
		}
	}
	return statuses
}

// ---- the web pages ----

// page is a web page on its own origin whose script makes one cross-origin
// fetch to the gateway and writes the outcome into the document.
type page struct {
	name   string
	origin string // http://127.0.0.1:<port>, also the URL of the page
}

// pageTemplate is the HTML of a page. Its script sends a PUT with a JSON
// body and an X-Custom header: none of the three is CORS-safelisted, so
// the browser must ask the gateway with a preflight first. The outcome,
// as JSON, goes into #result, which gets data-done once it is there.
const pageTemplate = `<!doctype html>
<html>
<head><meta charset="utf-8"><title>%[1]s: pending</title></head>
<body>
<h1>%[1]s</h1>
<pre id="result"></pre>
<script>
(async () => {
	let outcome;
	try {
		const resp = await fetch(%[2]s, {
			method: "PUT",
			headers: {"Content-Type": "application/json", "X-Custom": "1"},
			body: JSON.stringify({from: %[3]s}),
		});
		outcome = {ok: true, status: resp.status, body: await resp.text()};
	} catch (e) {
		outcome = {ok: false, name: e.name, message: e.message};
	}
	const el = document.getElementById("result");
	el.textContent = JSON.stringify(outcome);
	el.dataset.done = "1";
	document.title = %[3]s + ": " + (outcome.ok ? "fetched" : "failed");
})();
</script>
</body>
</html>
`

// startPage serves the page called name on a fresh 127.0.0.1 port; its
// script fetches fetchURL. Every other path is 404. The server closes when
// the test ends.
func startPage(t *testing.T, name, fetchURL string) *page {
	t.Helper()
	jsURL, _ := json.Marshal(fetchURL)
	jsName, _ := json.Marshal(name)
	html := fmt.Sprintf(pageTemplate, name, jsURL, jsName)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, html)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("page %s: listen: %v", name, err)
	}
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return &page{name: name, origin: srv.URL}
}

// outcome is what a page's script wrote into #result.
type outcome struct {
	OK      bool   `json:"ok"`
	Status  int    `json:"status"`  // when OK
	Body    string `json:"body"`    // when OK
	Name    string `json:"name"`    // the error's name, when not OK
	Message string `json:"message"` // the error's message, when not OK
}

func (o outcome) String() string {
	if o.OK {
		return fmt.Sprintf("status %d, body %q", o.Status, o.Body)
	}
	return fmt.Sprintf("%s: %s", o.Name, o.Message)
}

// ---- Chromium ----

// chromiumNames are the names Chromium and Chrome go by on PATH: Debian's
// package, Ubuntu's and older Debian's, Google's builds.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// chromiumPath returns the browser the tests drive: CHROME_PATH if set,
// else the first of chromiumNames on PATH.
func chromiumPath() (string, error) {
	return findChromium(os.Getenv, exec.LookPath)
}

// findChromium is chromiumPath with the environment and the PATH lookup
// given.
func findChromium(getenv func(string) string, lookPath func(string) (string, error)) (string, error) {
	if p := getenv("CHROME_PATH"); p != "" {
		found, err := lookPath(p)
		if err != nil {
			return "", fmt.Errorf("CHROME_PATH=%s is not an executable: %v", p, err)
		}
		return found, nil
	}
	for _, name := range chromiumNames {
		if p, err := lookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found: none of %s on PATH and CHROME_PATH not set. "+
		"This test drives a real browser and is never skipped; install one (Debian: apt-get install -y chromium) "+
		"or set CHROME_PATH to its executable", strings.Join(chromiumNames, ", "))
}

// processesUsing returns the processes whose command line holds
// --user-data-dir=dir: the browser started with that profile and every one
// of its children, which Chromium passes the flag to.
func processesUsing(dir string) []int {
	want := []byte("--user-data-dir=" + dir)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for arg := range bytes.SplitSeq(cmdline, []byte{0}) {
			if bytes.Equal(arg, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// userDataDirOf returns the --user-data-dir of the running process pid.
func userDataDirOf(pid int) string {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	for arg := range bytes.SplitSeq(cmdline, []byte{0}) {
		if dir, ok := bytes.CutPrefix(arg, []byte("--user-data-dir=")); ok {
			return string(dir)
		}
	}
	return ""
}

// browserTimeout bounds the whole browser session of a test: start-up,
// every page and the shutdown.
const browserTimeout = 60 * time.Second

// startBrowser starts headless Chromium with a fresh, temporary profile and
// returns the context of its first tab and a log of the tab's network
// events. Chromium lives at most browserTimeout, and when the test ends it
// is closed, then killed with all its children by chromedp's allocator;
// the test fails if any of its processes survive or its profile is left
// behind.
func startBrowser(t *testing.T) (context.Context, *netLog) {
	t.Helper()
	exe, err := chromiumPath()
	if err != nil {
		t.Fatal(err)
	}
	output := &e2ebin.SyncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.CombinedOutput(output),
		// No UserDataDir: chromedp makes a fresh temporary profile, kills
		// the browser's leftover children when it stops, and removes it.
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), browserTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)

	var profile string
	t.Cleanup(func() {
		// Close the browser gracefully, bounded; then cancel the allocator,
		// which kills what is left and waits for it.
		closeCtx, cancelClose := context.WithTimeout(tabCtx, 10*time.Second)
		if err := chromedp.Cancel(closeCtx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("closing Chromium: %v", err)
		}
		cancelClose()
		cancelTab()
		cancelAlloc()
		cancelTimeout()
		if profile != "" {
			if pids := processesUsing(profile); len(pids) > 0 {
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				t.Errorf("Chromium processes %v still ran after the allocator was cancelled (killed now)", pids)
			}
			if _, err := os.Stat(profile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Chromium profile %s left behind (stat: %v)", profile, err)
			}
		}
		if t.Failed() {
			t.Logf("Chromium output:\n%s", output)
		}
	})

	// Starts the browser and the tab, then turns on network events.
	nl := &netLog{requests: map[network.RequestID]*network.EventRequestWillBeSent{}}
	if err := chromedp.Listen(tabCtx, nl.record); err != nil {
		t.Fatalf("start Chromium (%s): %v\noutput:\n%s", exe, err, output)
	}
	if c := chromedp.FromContext(tabCtx); c != nil && c.Browser != nil && c.Browser.Process() != nil {
		profile = userDataDirOf(c.Browser.Process().Pid)
	}
	if profile == "" {
		t.Error("cannot tell the profile directory of the running Chromium, so cannot check its processes end")
	}
	if _, err := chromedp.Call(tabCtx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("Network.enable: %v", err)
	}
	return tabCtx, nl
}

// netLog records a tab's network requests and their failures, as Chromium
// reports them over the DevTools protocol.
type netLog struct {
	mu       sync.Mutex
	requests map[network.RequestID]*network.EventRequestWillBeSent
	failures []*network.EventLoadingFailed
}

// record is the chromedp.Listen callback: it only stores, so it is fast.
func (nl *netLog) record(ev any) {
	nl.mu.Lock()
	defer nl.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		nl.requests[ev.RequestID] = ev
	case *network.EventLoadingFailed:
		nl.failures = append(nl.failures, ev)
	}
}

// failure is a failed request as Chromium reported it.
type failure struct {
	method, url, errorText string
	cors                   *network.CorsErrorStatus // nil unless CORS blocked it
}

// failuresFor returns the failed requests whose URL is url.
func (nl *netLog) failuresFor(url string) []failure {
	nl.mu.Lock()
	defer nl.mu.Unlock()
	var out []failure
	for _, f := range nl.failures {
		req, ok := nl.requests[f.RequestID]
		if !ok || req.Request == nil || req.Request.URL != url {
			continue
		}
		out = append(out, failure{method: req.Request.Method, url: req.Request.URL, errorText: f.ErrorText, cors: f.CorsErrorStatus})
	}
	return out
}

// load navigates the tab to p and returns the outcome its script writes,
// waiting at most timeout for it.
func load(ctx context.Context, p *page, timeout time.Duration) (outcome, error) {
	var o outcome
	if err := chromedp.Do(ctx, chromedp.Navigate(p.origin+"/")); err != nil {
		return o, fmt.Errorf("navigate to %s: %w", p.origin, err)
	}
	text, err := chromedp.Run(ctx, chromedp.Poll[string](
		`document.querySelector("#result[data-done]")?.textContent`,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(timeout),
	))
	if err != nil {
		return o, fmt.Errorf("page %s wrote no outcome within %s: %w", p.name, timeout, err)
	}
	if err := json.Unmarshal([]byte(text), &o); err != nil {
		return o, fmt.Errorf("page %s wrote %q: %w", p.name, text, err)
	}
	return o, nil
}
