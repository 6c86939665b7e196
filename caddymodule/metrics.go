package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/mtlsident"
)

// The nutsgate_* metrics, on Caddy's metrics endpoint (the admin API's
// /metrics, or a `metrics` handler). They are built once and registered
// with the registry of every config, since Caddy makes a new registry on
// each reload; the counts go on across reloads.
var (
	authDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "auth_decisions_total",
		Help:      "token_v2 decisions, by result (granted or denied) and reason of a denial.",
	}, []string{"result", "reason"})

	mtlsRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "mtls_refusals_total",
		Help:      "Requests mtls_ident refused, by reason: no_certificate, ambiguous_certificate, unreadable_certificate, denied or too_many_open.",
	}, []string{"reason"})

	rateLimitRefusals = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "rate_limit_refusals_total",
		Help:      "Requests client_rate_limit refused.",
	})

	pathRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "path_refusals_total",
		Help:      "Requests path_guard refused, by reason: not_path, asterisk, malformed_escape, encoded_slash, encoded_backslash, encoded_dot, backslash, nul, overlong, dot_segment, empty_segment, nested_encoding, encoded_unreserved, early_data or other.",
	}, []string{"reason"})

	clientRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "client_requests_total",
		Help:      "Requests of identified clients by certificate subject; subjects past the first 1000 count as \"other\".",
	}, []string{"client"})

	pkiRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "pki_refusals_total",
		Help:      "Client certificates refused by revocation checking, at the TLS handshake or a request, by reason: revoked, banned, stale, expired or unverified.",
	}, []string{"reason"})

	pkiFetchErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "pki_fetch_errors_total",
		Help:      "Failed fetches of a CRL or the denylist, by source; the last good one stays in force.",
	}, []string{"source"})

	redisUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "nutsgate",
		Name:      "redis_up",
		Help:      "1 while the fleet's Redis answers its health check and calls, 0 while it is marked down.",
	})

	redisErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "redis_errors_total",
		Help:      "Failed Redis calls, by operation: health, rate_limit, deny_edit or deny_sync.",
	}, []string{"op"})

	rateLimitFallback = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "rate_limit_fallback_total",
		Help:      "Requests of distributed rate limits decided by this replica's own buckets because Redis could not decide in time.",
	})

	denyFileInvalidLines = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "nutsgate",
		Name:      "deny_file_invalid_lines",
		Help:      "Lines of a deny file that do not parse and are skipped, by file; 0 when every line parses.",
	}, []string{"file"})
)

// pkiSourceAgeDesc describes nutsgate_pki_source_age_seconds.
var pkiSourceAgeDesc = prometheus.NewDesc("nutsgate_pki_source_age_seconds",
	"Seconds since a CRL or the denylist was last fetched successfully (or read from the state directory), by source; absent until it has been.",
	[]string{"source"}, nil)

// pkiSourceAge collects nutsgate_pki_source_age_seconds from the
// revocation checker in force when scraped.
type pkiSourceAge struct{}

func (pkiSourceAge) Describe(ch chan<- *prometheus.Desc) { ch <- pkiSourceAgeDesc }

func (pkiSourceAge) Collect(ch chan<- prometheus.Metric) {
	c := pkiInForce()
	if c == nil {
		return
	}
	now := time.Now()
	seen := make(map[string]bool)
	for _, s := range c.Status() {
		// A label twice would fail the whole scrape.
		if s.LastSuccess != nil && !seen[s.Source] {
			seen[s.Source] = true
			ch <- prometheus.MustNewConstMetric(pkiSourceAgeDesc, prometheus.GaugeValue, now.Sub(*s.LastSuccess).Seconds(), s.Source)
		}
	}
}

// maxClientLabels bounds the client label of nutsgate_client_requests_total.
const maxClientLabels = 1000

// clientCounters are the series of nutsgate_client_requests_total, by
// subject: the first maxClientLabels subjects have one of their own.
var clientCounters = struct {
	sync.RWMutex
	bySubject map[string]prometheus.Counter
}{bySubject: make(map[string]prometheus.Counter)}

// countClient counts a request of an identified client.
func countClient(subject string) {
	clientCounters.RLock()
	c, ok := clientCounters.bySubject[subject]
	clientCounters.RUnlock()
	if !ok {
		clientCounters.Lock()
		if c, ok = clientCounters.bySubject[subject]; !ok {
			if len(clientCounters.bySubject) < maxClientLabels {
				c = clientRequests.WithLabelValues(subject)
				clientCounters.bySubject[subject] = c
			} else {
				c = clientRequests.WithLabelValues("other")
			}
		}
		clientCounters.Unlock()
	}
	c.Inc()
}

// registerMetrics adds the nutsgate collectors to the config's registry.
func registerMetrics(ctx caddy.Context) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil // a context without metrics, as in unit tests
	}
	for _, c := range []prometheus.Collector{authDecisions, mtlsRefusals, rateLimitRefusals, pathRefusals, clientRequests, denyFileInvalidLines, pkiRefusals, pkiFetchErrors, pkiSourceAge{}, redisUp, redisErrors, rateLimitFallback} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// denyFiles keeps, by path, what is reported about the deny files of the
// loaded configs: how many modules use the file, so that its series of
// nutsgate_deny_file_invalid_lines goes when the last of them is unloaded,
// and the skipped lines last logged, so that each is logged once per change
// of the file, not again by a second module using the file (the app and an
// mtls_ident) or by the modules of a reloaded config.
var denyFiles = struct {
	sync.Mutex
	byPath map[string]*denyFileState
}{byPath: make(map[string]*denyFileState)}

// denyFileState is what denyFiles keeps of one file.
type denyFileState struct {
	users  int
	logged []mtlsident.SkippedLine
}

// denyFileReporter logs the lines of a deny file that do not parse and
// keeps the file's nutsgate_deny_file_invalid_lines, for one module.
type denyFileReporter struct {
	path   string
	logger *zap.Logger
}

// newDenyFileReporter returns the reporter of a deny file for the module
// of ctx, which uses the file until ctx is cancelled.
func newDenyFileReporter(ctx caddy.Context, path string, logger *zap.Logger) *denyFileReporter {
	denyFiles.Lock()
	if denyFiles.byPath[path] == nil {
		denyFiles.byPath[path] = new(denyFileState)
	}
	denyFiles.byPath[path].users++
	denyFiles.Unlock()
	// Not ctx.OnCancel: Provision gets a copy of the config's context, and
	// Caddy never runs what is added to the copy.
	context.AfterFunc(ctx, func() {
		denyFiles.Lock()
		defer denyFiles.Unlock()
		if f := denyFiles.byPath[path]; f != nil {
			if f.users--; f.users <= 0 {
				delete(denyFiles.byPath, path)
				denyFileInvalidLines.DeleteLabelValues(path)
			}
		}
	})
	return &denyFileReporter{path: path, logger: logger}
}

// report sets the gauge to the number of skipped lines and logs each, with
// file:line, unless the same lines were the last logged for the file.
func (r *denyFileReporter) report(skipped []mtlsident.SkippedLine) {
	denyFiles.Lock()
	defer denyFiles.Unlock()
	f := denyFiles.byPath[r.path]
	if f == nil { // the module's config is unloaded; its series is gone
		return
	}
	denyFileInvalidLines.WithLabelValues(r.path).Set(float64(len(skipped)))
	if slices.EqualFunc(skipped, f.logged, func(a, b mtlsident.SkippedLine) bool { return a.Line == b.Line && a.Text == b.Text }) {
		return
	}
	f.logged = skipped
	for _, l := range skipped {
		r.logger.Warn("deny file line does not parse; skipped, the other lines are in force",
			zap.String("line", fmt.Sprintf("%s:%d", r.path, l.Line)), zap.String("error", l.Err.Error()))
	}
}
