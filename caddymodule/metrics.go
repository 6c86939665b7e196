package caddymodule

import (
	"errors"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
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

	clientRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nutsgate",
		Name:      "client_requests_total",
		Help:      "Requests of identified clients by certificate subject; subjects past the first 1000 count as \"other\".",
	}, []string{"client"})
)

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
	for _, c := range []prometheus.Collector{authDecisions, mtlsRefusals, rateLimitRefusals, clientRequests} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}
