package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// refusalLinesPerSecond is how many lines of one refusal reason the gateway writes a second
// (caddymodule's refusalLinesPerWindow).
const refusalLinesPerSecond = 10

// summaryMessage is the message of the line that counts a window's dropped refusal lines.
const summaryMessage = "log lines suppressed"

// refusalFlood is one kind of refused request sent many times at once, and how the gateway
// logs and counts it.
type refusalFlood struct {
	name   string
	n      int       // requests
	cert   *leafCert // client certificate, nil: none
	path   string
	auth   string // Authorization header, "" none
	status int    // the refusal's status
	// The log line of one refusal: its message, and the value of its "reason" field if that
	// tells this kind apart from others of the same message ("" if not).
	msg, lineReason string
	key             string       // the sampling reason, named by the summary line
	metric          metricSample // counts the refusals exactly
}

// TestRefusalLogSampled proves, through the running binary on a site shaped like
// Caddyfile.example, that a flood of refusals cannot flood the log (contract section 12): a
// few hundred refusals of one reason sent at once over keep-alive connections, for each
// refusal that an unauthenticated client can cause (token_v2 with a kid of no listed key,
// mtls_ident without a certificate, client_rate_limit, path_guard), leave at most
// refusalLinesPerSecond lines of that reason for each second the flood lasted (plus one
// summary line a second), while the metrics count every refusal exactly. A second reason
// sent in the middle of the flood still has every one of its few lines logged: the budget is
// per reason. The dropped lines are all accounted for in the log too: the lines written plus
// the `suppressed` counts (on a later line of the reason, or on the summary line that follows
// the end of the window) equal the metric. A refusal after the window is logged again. The
// node sees none of the refused requests.
func TestRefusalLogSampled(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, "1/1h") // one request per client, then 429 for the rest of the test
	id := uuid.NewString()
	stranger := newKey(t, ed25519Key, g.key.user) // not in authorized_keys
	unknownKid := stranger.newToken().bearer(t)
	limited := g.pki.client(t, "logsample-limited")
	if got := g.request(t, limited, http.MethodGet, "/n2n/allowed/"+id, nil).statusOr(); got != http.StatusOK {
		t.Fatalf("the rate-limited client's first request: status %d, want 200", got)
	}

	const many = 300
	floods := []refusalFlood{
		{name: "token_v2 unknown kid", n: many, path: "/internal/flood/" + id, auth: unknownKid, status: 401,
			msg: "access denied", lineReason: "unknown_key", key: "unknown_key",
			metric: sample(metricAuth, "result", "denied", "reason", "unknown_key")},
		{name: "mtls_ident no certificate", n: many, path: "/n2n/flood/" + id, status: 401,
			msg: "client refused", key: "no_certificate", metric: sample(metricMTLS, "reason", "no_certificate")},
		{name: "client_rate_limit", n: many, cert: limited, path: "/n2n/flood/" + id, status: 429,
			msg: "rate limit exceeded", key: "rate_limit", metric: sample(metricRateLimit)},
		{name: "path_guard encoded slash", n: many, path: "/iam/a%2fb/" + id, status: 400,
			msg: "path refused", key: "encoded_slash", metric: sample(metricPath, "reason", "encoded_slash")},
	}
	second := refusalFlood{name: "token_v2 no Authorization", n: 3, path: "/internal/other/" + id, status: 401,
		msg: "access denied", lineReason: "no_authorization", key: "no_authorization",
		metric: sample(metricAuth, "result", "denied", "reason", "no_authorization")}
	if second.n >= refusalLinesPerSecond {
		t.Fatal("the second reason must stay within its budget")
	}

	// The floods, all at once; the second reason once the first has spent its budget.
	var (
		wg        sync.WaitGroup
		answered  atomic.Int64 // refusals of floods[0] answered
		budgetHit = make(chan struct{})
		once      sync.Once
	)
	start := time.Now()
	for i, f := range floods {
		c := g.keepAliveClient(f.cert)
		var next atomic.Int64
		for range 4 {
			wg.Go(func() {
				for next.Add(1) <= int64(f.n) {
					if got := g.fetch(c, f.path, f.auth); got != f.status {
						t.Errorf("%s: status %d, want %d", f.name, got, f.status)
						return
					}
					if i == 0 && answered.Add(1) > refusalLinesPerSecond {
						once.Do(func() { close(budgetHit) })
					}
				}
			})
		}
	}
	wg.Go(func() {
		<-budgetHit
		c := g.keepAliveClient(nil)
		for range second.n {
			if got := g.fetch(c, second.path, ""); got != second.status {
				t.Errorf("%s: status %d, want %d", second.name, got, second.status)
			}
		}
	})
	wg.Wait()
	floodEnd := time.Now()
	elapsed := floodEnd.Sub(start)
	if t.Failed() {
		t.FailNow()
	}

	// Lines of one reason: at most the budget of every window the flood touched.
	windows := int(elapsed/time.Second) + 1
	maxLines := refusalLinesPerSecond * windows
	metrics := g.scrapeMetrics(t, "nutsgate_")
	for _, f := range append(floods, second) {
		if got := metrics[f.metric]; got != float64(f.n) {
			t.Errorf("%s: metric %s = %v, want exactly %d", f.name, f.metric, got, f.n)
		}
		lines, _ := refusalLines(g.Logs.String(), f)
		switch {
		case f.n > maxLines && lines > maxLines:
			t.Errorf("%s: %d refusals in %v logged %d lines, want at most %d (%d a second)", f.name, f.n, elapsed.Round(time.Millisecond), lines, maxLines, refusalLinesPerSecond)
		case f.n <= refusalLinesPerSecond && lines != f.n:
			t.Errorf("%s: %d refusals sent during another reason's flood logged %d lines, want every one", f.name, f.n, lines)
		}
		if seen := g.nodeRequestsWith(f.path); len(seen) != 0 {
			t.Errorf("%s: the node received %d of the refused requests", f.name, len(seen))
		}
	}

	// Every dropped line is counted in the log: lines + suppressed = refusals, once the
	// summaries of the last window are out.
	for _, f := range floods {
		accounted := func() int {
			lines, suppressed := refusalLines(g.Logs.String(), f)
			return lines + suppressed
		}
		eventually(t, 5*time.Second, f.name+": lines and suppressed counts of the log add up to the refusals", func() bool {
			return accounted() == f.n
		})
	}
	if t.Failed() {
		return
	}

	// The window over, a refusal of the flooded reason is logged again. (The flood's last
	// window may have been within its budget, so that its lines added up at once, and still be
	// open: the wait is for it to end.)
	time.Sleep(time.Until(floodEnd.Add(time.Second)))
	f := floods[0]
	before, _ := refusalLines(g.Logs.String(), f)
	if got := g.fetch(g.keepAliveClient(nil), f.path, f.auth); got != f.status {
		t.Fatalf("%s after the flood: status %d, want %d", f.name, got, f.status)
	}
	eventually(t, 5*time.Second, f.name+": a refusal after the window is logged", func() bool {
		lines, _ := refusalLines(g.Logs.String(), f)
		return lines == before+1
	})
	if got := g.scrapeMetrics(t, "nutsgate_")[f.metric]; got != float64(f.n+1) {
		t.Errorf("%s: metric after one more refusal %v, want %d", f.name, got, f.n+1)
	}
}

// refusalLines counts the log lines of f's refusals in log, and adds up the `suppressed`
// counts of those lines and of the summary lines of f's sampling reason.
func refusalLines(log string, f refusalFlood) (lines, suppressed int) {
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e struct {
			Msg        string `json:"msg"`
			Reason     string `json:"reason"`
			Message    string `json:"message"`
			Suppressed int    `json:"suppressed"`
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		switch {
		case e.Msg == f.msg && (f.lineReason == "" || e.Reason == f.lineReason):
			lines++
			suppressed += e.Suppressed
		case e.Msg == summaryMessage && e.Message == f.msg && e.Reason == f.key:
			suppressed += e.Suppressed
		}
	}
	return lines, suppressed
}

// keepAliveClient is an HTTP client of the site that keeps its connections (HTTP/2), as
// client c (nil: none), so that a test can send hundreds of requests a second.
func (g *siteGateway) keepAliveClient(c *leafCert) *http.Client {
	dial := g.addr(g.Port)
	tr := &http.Transport{
		Proxy:             nil,
		ForceAttemptHTTP2: true,
		TLSClientConfig:   g.tlsConfig(c),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, dial)
		},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// fetch GETs path on the site with client c and the Authorization header auth (none if
// empty), and returns the status, -1 on a transport error.
func (g *siteGateway) fetch(c *http.Client, path, auth string) int {
	req, err := http.NewRequest(http.MethodGet, "https://localhost:"+strconv.Itoa(g.Port)+path, nil)
	if err != nil {
		return -1
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
