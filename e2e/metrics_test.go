package e2e

import (
	"crypto/x509/pkix"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The nutsgate metric families of contract section 7.
const (
	metricAuth       = "nutsgate_auth_decisions_total"
	metricMTLS       = "nutsgate_mtls_refusals_total"
	metricRateLimit  = "nutsgate_rate_limit_refusals_total"
	metricClientReqs = "nutsgate_client_requests_total"
	metricPath       = "nutsgate_path_refusals_total" // path_guard's refusals, by reason
)

// metricsRate is the /n2n limit of the metrics gateway: 3 requests, then nothing for the rest
// of the test (one token every 20 minutes).
const (
	metricsBurst = 3
	metricsRate  = "3/1h"
)

// metricsTraffic is one step of traffic for TestMetrics: a request and the status it must get.
type metricsTraffic struct {
	what string
	do   func(t *testing.T) int // sends the request, returns the status (-1 on error)
	want int
}

// TestMetrics proves the nutsgate_* Prometheus metrics on the admin endpoint of the running
// binary count exactly what happened: token_v2 decisions by result and reason, mTLS refusals by
// reason (no certificate, denied, ambiguous subject), rate-limit refusals, and requests per
// identified client (by certificate subject, refused-by-rate-limit requests included, as they
// were identified). No other series of these families exist. A forced config reload (`nutsgate
// reload --force`) keeps every count, and requests after it add to the same series.
func TestMetrics(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, metricsRate)
	stranger := newKey(t, ed25519Key, g.key.user) // not in authorized_keys
	clientA, clientB := g.pki.client(t, "metrics-a"), g.pki.client(t, "metrics-b")
	denied := g.pki.issue(t, clientTemplate(testName(siteDeniedCN)))
	twoCNs := clientTemplate(pkix.Name{})
	twoCNs.RawSubject = rawSubject(t,
		pkix.AttributeTypeAndValue{Type: oidO, Value: "Test"},
		pkix.AttributeTypeAndValue{Type: oidCN, Value: "metrics-two-a"},
		pkix.AttributeTypeAndValue{Type: oidCN, Value: "metrics-two-b"})
	ambiguous := g.pki.issue(t, twoCNs)

	internal := func(auth func(t *testing.T) string) func(t *testing.T) int {
		return func(t *testing.T) int {
			var h http.Header
			if a := auth(t); a != "" {
				h = http.Header{"Authorization": {a}}
			}
			return g.request(t, nil, http.MethodGet, "/internal/metrics/"+uuid.NewString(), h).statusOr()
		}
	}
	n2n := func(c *leafCert) func(t *testing.T) int {
		return func(t *testing.T) int {
			return g.request(t, c, http.MethodGet, n2nPath("metrics"), nil).statusOr()
		}
	}
	valid := func(t *testing.T) string { return g.bearer(t) }
	none := func(*testing.T) string { return "" }
	hour := int64(time.Hour / time.Second)

	before := []metricsTraffic{
		{"valid token 1", internal(valid), 200},
		{"valid token 2", internal(valid), 200},
		{"valid token 3", internal(valid), 200},
		{"no Authorization 1", internal(none), 401},
		{"no Authorization 2", internal(none), 401},
		{"Basic credentials", internal(func(*testing.T) string { return "Basic YWxpY2U6c2VjcmV0" }), 401},
		{"expired token", internal(func(t *testing.T) string {
			return g.key.newToken().with(func(_, c map[string]any) {
				now := time.Now().Unix()
				c["iat"], c["nbf"], c["exp"] = now-2*hour, now-2*hour, now-hour
			}).bearer(t)
		}), 401},
		{"wrong audience", internal(func(t *testing.T) string {
			return g.key.newToken().with(func(_, c map[string]any) { c["aud"] = "other-aud" }).bearer(t)
		}), 401},
		{"unknown key", internal(func(t *testing.T) string { return stranger.newToken().bearer(t) }), 401},
		{"no certificate 1", n2n(nil), 401},
		{"no certificate 2", n2n(nil), 401},
		{"denied client", n2n(denied), 403},
		{"two CNs", n2n(ambiguous), 403},
	}
	for i := range metricsBurst {
		before = append(before, metricsTraffic{"client A within the limit " + strconv.Itoa(i+1), n2n(clientA), 200})
	}
	before = append(before,
		metricsTraffic{"client A over the limit 1", n2n(clientA), 429},
		metricsTraffic{"client A over the limit 2", n2n(clientA), 429},
		metricsTraffic{"client B 1", n2n(clientB), 200},
		metricsTraffic{"client B 2", n2n(clientB), 200},
	)
	want := map[metricSample]float64{
		sample(metricAuth, "result", "granted"):                              3,
		sample(metricAuth, "result", "denied", "reason", "no_authorization"): 2,
		sample(metricAuth, "result", "denied", "reason", "not_bearer"):       1,
		sample(metricAuth, "result", "denied", "reason", "expired"):          1,
		sample(metricAuth, "result", "denied", "reason", "audience"):         1,
		sample(metricAuth, "result", "denied", "reason", "unknown_key"):      1,
		sample(metricMTLS, "reason", "no_certificate"):                       2,
		sample(metricMTLS, "reason", "denied"):                               1,
		sample(metricMTLS, "reason", "ambiguous_certificate"):                1,
		sample(metricRateLimit):                                              2,
		sample(metricClientReqs, "client", clientA.subject()):                metricsBurst + 2,
		sample(metricClientReqs, "client", clientB.subject()):                2,
	}
	send(t, before)
	expectMetrics(t, "after the first requests", g.scrapeMetrics(t, "nutsgate_"), want)

	args := []string{"reload", "--config", g.cfgPath, "--adapter", "caddyfile", "--address", g.addr(g.Admin), "--force"}
	if res := runBin(t, cliTimeout, args...); res.code != 0 {
		t.Fatalf("nutsgate reload: exit status %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	awaitReload(t, g.process, func() error { return g.request(t, nil, http.MethodGet, "/reload-probe", nil).err })
	expectMetrics(t, "right after the reload", g.scrapeMetrics(t, "nutsgate_"), want)

	send(t, []metricsTraffic{
		{"after reload: valid token", internal(valid), 200},
		{"after reload: no Authorization", internal(none), 401},
		{"after reload: no certificate", n2n(nil), 401},
		{"after reload: client A still over the limit", n2n(clientA), 429},
		{"after reload: client B", n2n(clientB), 200},
	})
	want = maps.Clone(want)
	for _, s := range []metricSample{
		sample(metricAuth, "result", "granted"),
		sample(metricAuth, "result", "denied", "reason", "no_authorization"),
		sample(metricMTLS, "reason", "no_certificate"),
		sample(metricRateLimit),
		sample(metricClientReqs, "client", clientA.subject()),
		sample(metricClientReqs, "client", clientB.subject()),
	} {
		want[s]++
	}
	expectMetrics(t, "after requests following the reload", g.scrapeMetrics(t, "nutsgate_"), want)
}

// send makes the requests in order and asserts each one's status.
func send(t *testing.T, steps []metricsTraffic) {
	t.Helper()
	for _, s := range steps {
		if got := s.do(t); got != s.want {
			t.Errorf("%s: status %d, want %d", s.what, got, s.want)
		}
	}
}

// expectMetrics asserts that the samples of the four nutsgate families in got are exactly want:
// the same series, the same values.
func expectMetrics(t *testing.T, when string, got, want map[metricSample]float64) {
	t.Helper()
	families := []string{metricAuth, metricMTLS, metricRateLimit, metricClientReqs}
	for s, v := range got {
		name, _, _ := strings.Cut(s, "{")
		if !slices.Contains(families, name) {
			continue
		}
		if w, ok := want[s]; !ok {
			t.Errorf("%s: unexpected series %s = %v", when, s, v)
		} else if v != w {
			t.Errorf("%s: %s = %v, want %v", when, s, v, w)
		}
	}
	for s, w := range want {
		if _, ok := got[s]; !ok {
			t.Errorf("%s: series %s missing, want %v", when, s, w)
		}
	}
}
