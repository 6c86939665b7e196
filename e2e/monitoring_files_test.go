package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The files of deploy/monitoring.
const (
	monitoringDir  = "deploy/monitoring"
	dashboardFile  = "nutsgate-dashboard.json"
	alertRulesFile = "nutsgate-alerts.yml"
)

// promtool returns the path of Prometheus's promtool, failing the test, with how to get it, if
// it is not installed.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not on PATH (%v): the alert rules of %s cannot be checked; install Debian's prometheus package (apt-get install prometheus), as .ci/run does", err, monitoringDir)
	}
	return p
}

// runPromtool runs promtool with args in dir and fails the test with its output unless it
// exits 0.
func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

// dashboardQueries returns every PromQL expression of the dashboard (panel targets, and the
// queries of template variables), by where it is.
func dashboardQueries(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			out["variable "+v.Name] = v.Definition
		}
	}
	return out
}

// grafanaVariables stand in for the dashboard's variables when its queries are checked.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*", "$host", ".*")

// labelValues matches a Grafana label_values(<selector>, <label>) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)

// TestMonitoringRules proves the Prometheus side of deploy/monitoring with Prometheus's own
// promtool: the alert rules pass `promtool check rules` and their unit tests (`promtool test
// rules` on every *_test.yml), and every query of the Grafana dashboard is valid PromQL (each,
// with the dashboard's variables filled in, as a recording rule that `promtool check rules`
// accepts).
func TestMonitoringRules(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	dir := filepath.Join(root, monitoringDir)
	runPromtool(t, dir, "check", "rules", alertRulesFile)
	tests, err := filepath.Glob(filepath.Join(dir, "*_test.yml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no rule tests (*_test.yml) in %s: %v", monitoringDir, err)
	}
	for _, f := range tests {
		runPromtool(t, dir, "test", "rules", filepath.Base(f))
	}

	queries := dashboardQueries(t, filepath.Join(dir, dashboardFile))
	if len(queries) < 10 {
		t.Fatalf("%s: %d queries found, want the dashboard's panels", dashboardFile, len(queries))
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, where := range slices.Sorted(func(yield func(string) bool) {
		for k := range queries {
			if !yield(k) {
				return
			}
		}
	}) {
		expr := grafanaVariables.Replace(queries[where])
		if m := labelValues.FindStringSubmatch(expr); m != nil {
			expr = m[1]
		}
		quoted, _ := json.Marshal(expr) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      # %s\n      - record: dashboard:query_%d\n        expr: %s\n", where, i, quoted)
	}
	tmp := t.TempDir()
	writeFileAtomic(t, filepath.Join(tmp, "dashboard-queries.yml"), []byte(rules.String()))
	runPromtool(t, tmp, "check", "rules", "dashboard-queries.yml")
}

// metricName matches the names of nutsgate's and Caddy's metrics in PromQL and YAML.
var metricName = regexp.MustCompile(`\b(?:nutsgate|caddy)_[a-z_]+`)

// declaredMetrics returns the nutsgate_* names caddymodule/metrics.go declares: the full names
// of NewDesc, and "nutsgate_" + Name of the collectors of Namespace "nutsgate".
func declaredMetrics(t *testing.T, root string) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "caddymodule", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`Namespace:\s*"nutsgate",\s*Name:\s*"([a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		out["nutsgate_"+m[1]] = true
	}
	for _, m := range regexp.MustCompile(`NewDesc\("(nutsgate_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		out[m[1]] = true
	}
	return out
}

// TestMonitoringMetricsExist proves that every nutsgate_* and caddy_* metric the dashboard and
// the alert rules (and their tests) name exists: served on the metrics listener of
// Caddyfile.example run by the binary, after requests that make Caddy's series appear (an
// answered request, a refused one, a malformed path), or, for nutsgate_* metrics that have no
// series until something happens (a Redis failure, a revoked certificate), declared in
// caddymodule/metrics.go. A panel or alert on a misspelt or missing metric would stay silent.
func TestMonitoringMetricsExist(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	dir := filepath.Join(root, monitoringDir)
	used := map[string][]string{} // metric name -> where
	for where, expr := range dashboardQueries(t, filepath.Join(dir, dashboardFile)) {
		for _, name := range metricName.FindAllString(expr, -1) {
			used[name] = append(used[name], dashboardFile+": "+where)
		}
	}
	ruleFiles, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
	for _, f := range ruleFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricName.FindAllString(string(data), -1) {
			used[name] = append(used[name], filepath.Base(f))
		}
	}
	if len(used) < 15 {
		t.Fatalf("found only %d metric names in %s: %v", len(used), monitoringDir, slices.Sorted(func(yield func(string) bool) {
			for k := range used {
				if !yield(k) {
					return
				}
			}
		}))
	}

	g := startExampleGateway(t)
	for _, r := range []struct {
		path string
		want int
	}{
		{"/internal/vdr/v2/subject", http.StatusUnauthorized}, // a handler error: caddy_http_request_errors_total
		{"/health", http.StatusOK},
		{"/%69nternal/x", http.StatusBadRequest}, // path_guard
	} {
		if got := g.internalRequest(t, exampleRequest{path: r.path}); got.statusOr() != r.want {
			t.Fatalf("GET %s on the internal site: %s, want %d", r.path, got, r.want)
		}
	}
	if got := g.publicRequest(t, exampleRequest{path: "/.well-known/did.json"}); got.statusOr() != http.StatusOK {
		t.Fatalf("GET /.well-known/did.json on the public site: %s, want 200", got)
	}
	resp, err := httpClient.Get(g.metricsURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on the metrics listener: %d, %v", resp.StatusCode, err)
	}
	served := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, _, ok := strings.Cut(line, "{"); ok && !strings.HasPrefix(line, "#") {
			served[name] = true
		} else if name, _, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			served[name] = true
		}
	}
	declared := declaredMetrics(t, root)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range used {
			if !yield(k) {
				return
			}
		}
	}) {
		if served[name] || (strings.HasPrefix(name, "nutsgate_") && declared[name]) {
			continue
		}
		slices.Sort(used[name])
		t.Errorf("%s (used in %s) is neither served on the metrics listener nor declared in caddymodule/metrics.go", name, strings.Join(slices.Compact(used[name]), ", "))
	}
}
