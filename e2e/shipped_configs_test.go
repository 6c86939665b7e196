package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
)

// The files the shipped Caddyfiles read, relative to NUTSGATE_TLS (certificates) and
// NUTSGATE_CONFIG (authorized_keys); the multi-tenant layout has one such set per tenant
// subdirectory.
var (
	shippedTLSFiles = []string{
		"public.pem", "public.key",
		"network.pem", "network.key", "network-truststore.pem",
		"internal.pem", "internal.key",
	}
	shippedTenants = []string{"alpha", "beta"}
)

// shippedEnv is the environment the shipped Caddyfiles run with in these tests: every NUTS_* and
// NUTSGATE_* variable of the caller removed (so each Caddyfile's own defaults are in force, host
// names and node addresses included), HOME and XDG directories in a temp dir, and the paths set
// as deploy/nutsgate.service sets them, to directories of test files.
type shippedEnv struct {
	tls, config, state string
	pki                *testPKI // the CA of every certificate, and of the network trust store
	key                *testKey // the one key of every authorized_keys
}

// newShippedEnv writes a complete set of test files: certificates of a made-up CA (the network
// trust store is that CA), authorized_keys with a real key, an empty state directory; for the
// top level and for every tenant subdirectory.
func newShippedEnv(t *testing.T) shippedEnv {
	t.Helper()
	root := t.TempDir()
	e := shippedEnv{
		tls:    filepath.Join(root, "tls"),
		config: filepath.Join(root, "config"),
		state:  filepath.Join(root, "state"),
	}
	pki := newPKI(t, "e2e shipped-config CA")
	cert := pki.issue(t, new(shippedServerTemplate))
	e.pki, e.key = pki, newKey(t, ed25519Key, "operator")
	keys := authorizedKeysText(e.key)
	for _, sub := range append([]string{""}, shippedTenants...) {
		for _, dir := range []string{filepath.Join(e.tls, sub), filepath.Join(e.config, sub)} {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range shippedTLSFiles {
			var data []byte
			switch {
			case name == "network-truststore.pem":
				data = pki.caPEM()
			case strings.HasSuffix(name, ".pem"):
				data = cert.pem()
			default:
				data = cert.keyPEM(t)
			}
			writeFileAtomic(t, filepath.Join(e.tls, sub, name), data)
		}
		writeFileAtomic(t, filepath.Join(e.config, sub, "authorized_keys"), []byte(keys))
	}
	if err := os.MkdirAll(e.state, 0o700); err != nil {
		t.Fatal(err)
	}
	return e
}

// environ is the child's whole environment, with extra appended (later entries win).
func (e shippedEnv) environ(t *testing.T, extra ...string) []string {
	t.Helper()
	var env []string
	for _, kv := range e2ebin.Env(t.TempDir()) {
		if !strings.HasPrefix(kv, "NUTS_") && !strings.HasPrefix(kv, "NUTSGATE_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"NUTSGATE_TLS="+e.tls, "NUTSGATE_CONFIG="+e.config, "NUTSGATE_STATE="+e.state,
		// validate and adapt open no listener; an admin address of our own all the same.
		fmt.Sprintf("NUTSGATE_ADMIN=127.0.0.1:%d", e2ebin.FreePort(t)),
	)
	return append(env, extra...)
}

// shippedServerTemplate is a server certificate for every host name of the shipped Caddyfiles.
var shippedServerTemplate = func() x509.Certificate {
	tmpl := *clientTemplate(testName("nutsgate e2e shipped"))
	tmpl.DNSNames = []string{
		"nuts.example.org", "n2n.example.org", "nuts-internal.example.org",
		"alpha.example.org", "n2n.alpha.example.org", "alpha-internal.example.org",
		"beta.example.org", "n2n.beta.example.org", "beta-internal.example.org",
	}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	return tmpl
}()

// shippedConfig is one Caddyfile of the repository, checked as shipped.
type shippedConfig struct {
	name string // path relative to the module root
	// quickStart: run from the module root with no path variables, as README.md says.
	quickStart bool
}

var shippedConfigs = []shippedConfig{
	{name: "Caddyfile.example"},
	{name: "deploy/multi-tenant/Caddyfile"},
	{name: "deploy/fleet/Caddyfile"},
	{name: "Caddyfile", quickStart: true},
}

// errorLogLine matches a Caddy log entry at level error or worse.
var errorLogLine = regexp.MustCompile(`"level":"(error|dpanic|panic|fatal)"`)

// TestShippedConfigs proves that every Caddyfile the repository ships is accepted by the binary
// as the documentation says to check it: `nutsgate validate --config <f>` and `nutsgate adapt
// --config <f>` (no --adapter: the file name must select the Caddyfile adapter) exit 0, log no
// error, and adapt prints JSON. Paths come from the environment, pointing at test certificates
// and keys; the quick start runs from the module root with its own quickstart/authorized_keys.
// Each also fails validation when the files its environment names are missing, which proves the
// paths really are taken from the environment and are checked.
func TestShippedConfigs(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	e := newShippedEnv(t)
	for _, cfg := range shippedConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(root, cfg.name)
			dir := ""
			if cfg.quickStart {
				dir, file = root, cfg.name
			}
			for _, sub := range []string{"validate", "adapt"} {
				res := runBinIn(t, cliTimeout, dir, e.environ(t), sub, "--config", file)
				if res.code != 0 {
					t.Errorf("nutsgate %s --config %s: exit status %d\nstdout: %s\nstderr: %s", sub, cfg.name, res.code, res.stdout, res.stderr)
					continue
				}
				if lines := errorLogLine.FindAllString(res.stderr, -1); len(lines) > 0 {
					t.Errorf("nutsgate %s --config %s logged errors:\n%s", sub, cfg.name, res.stderr)
				}
				if strings.Contains(res.stderr, "not formatted") {
					t.Errorf("nutsgate %s --config %s: the file is not as `nutsgate fmt` writes it:\n%s", sub, cfg.name, res.stderr)
				}
				if sub == "adapt" && !json.Valid([]byte(res.stdout)) {
					t.Errorf("nutsgate adapt --config %s: stdout is not JSON:\n%.500s", cfg.name, res.stdout)
				}
			}

			// The same file with the environment pointing at files that are not there.
			missing := filepath.Join(t.TempDir(), "missing")
			broken := []string{"NUTSGATE_TLS=" + missing}
			if cfg.quickStart {
				broken = []string{"NUTSGATE_AUTHORIZED_KEYS=" + filepath.Join(missing, "authorized_keys")}
			}
			res := runBinIn(t, cliTimeout, dir, e.environ(t, broken...), "validate", "--config", file)
			if res.code == 0 {
				t.Errorf("nutsgate validate --config %s with %s: exit status 0, want a failure (are the paths taken from the environment?)", cfg.name, broken)
			} else if !strings.Contains(res.stdout+res.stderr, missing) {
				t.Errorf("nutsgate validate --config %s with %s: the error does not name the missing file:\n%s", cfg.name, broken, res.stderr)
			}
		})
	}
}

// ---- the adapted JSON of Caddyfile.example ----

// jsonObj is a JSON object of the adapted config.
type jsonObj = map[string]any

func asObj(v any) jsonObj   { o, _ := v.(jsonObj); return o }
func asList(v any) []any    { l, _ := v.([]any); return l }
func asString(v any) string { s, _ := v.(string); return s }
func asStrings(v any) []string {
	var out []string
	for _, x := range asList(v) {
		out = append(out, asString(x))
	}
	return out
}

// flatHandler is a handler of a route, in the order a request meets them, with whether a
// matcher stands between the route and it (a handler a request may skip).
type flatHandler struct {
	obj         jsonObj
	conditional bool
}

func (h flatHandler) name() string { return asString(h.obj["handler"]) }

// flatten lists the handlers of route in order, descending into subroutes; conditional is
// whether route itself is reached only through a matcher.
func flatten(route jsonObj, conditional bool) []flatHandler {
	conditional = conditional || len(asList(route["match"])) > 0
	var out []flatHandler
	for _, h := range asList(route["handle"]) {
		obj := asObj(h)
		if asString(obj["handler"]) == "subroute" {
			for _, r := range asList(obj["routes"]) {
				out = append(out, flatten(asObj(r), conditional)...)
			}
			continue
		}
		out = append(out, flatHandler{obj: obj, conditional: conditional})
	}
	return out
}

// site is one site block of the adapted config: a top-level route of a server, by host.
type site struct {
	server string   // srvN
	listen []string // the server's listen addresses
	hosts  []string
	route  jsonObj
}

func (s site) String() string {
	return fmt.Sprintf("%s (%s %v)", strings.Join(s.hosts, ","), s.server, s.listen)
}

// listensOn reports whether the site's server listens on port (":443" form).
func (s site) listensOn(port string) bool {
	return slices.ContainsFunc(s.listen, func(l string) bool { return strings.HasSuffix(l, port) })
}

// sites lists the sites of an adapted config: every top-level route of every HTTP server (a
// Caddyfile site block becomes one route matching its host names).
func sites(cfg jsonObj) []site {
	var out []site
	servers := asObj(asObj(asObj(cfg["apps"])["http"])["servers"])
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		srv := asObj(servers[name])
		// A site without a host name (http://:9180) is not wrapped in a route of its own: its
		// routes are the server's top-level routes that match no host, in order.
		var catchAll []any
		for _, r := range asList(srv["routes"]) {
			route := asObj(r)
			var hosts []string
			for _, m := range asList(route["match"]) {
				hosts = append(hosts, asStrings(asObj(m)["host"])...)
			}
			if len(hosts) == 0 {
				catchAll = append(catchAll, route)
				continue
			}
			// The route itself matches the host; that is the site, not a condition inside it.
			inner := jsonObj{"handle": route["handle"]}
			out = append(out, site{server: name, listen: asStrings(srv["listen"]), hosts: hosts, route: inner})
		}
		if len(catchAll) > 0 {
			inner := jsonObj{"handle": []any{jsonObj{"handler": "subroute", "routes": catchAll}}}
			out = append(out, site{server: name, listen: asStrings(srv["listen"]), route: inner})
		}
	}
	return out
}

// routesMatchingPath returns every route under route (itself included) whose path matcher lists
// path, each with the handlers a request on it meets (from the route on).
func routesMatchingPath(route jsonObj, path string) [][]flatHandler {
	var out [][]flatHandler
	for _, m := range asList(route["match"]) {
		if slices.Contains(asStrings(asObj(m)["path"]), path) {
			out = append(out, flatten(route, false))
			break
		}
	}
	for _, h := range asList(route["handle"]) {
		for _, r := range asList(asObj(h)["routes"]) {
			out = append(out, routesMatchingPath(asObj(r), path)...)
		}
	}
	return out
}

// handlerIndex is the index of the first handler named name for which ok holds, or -1.
func handlerIndex(hs []flatHandler, name string, ok func(jsonObj) bool) int {
	return slices.IndexFunc(hs, func(h flatHandler) bool { return h.name() == name && (ok == nil || ok(h.obj)) })
}

func handlerNames(hs []flatHandler) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.name())
	}
	return out
}

// isTokenV2 reports whether h is Caddy's authentication handler with the token_v2 provider
// reading keysFile.
func isTokenV2(keysFile string) func(jsonObj) bool {
	return func(h jsonObj) bool {
		p := asObj(asObj(h["providers"])["token_v2"])
		return p != nil && asString(p["authorized_keys"]) == keysFile
	}
}

// TestExampleAdaptedConfig proves, on the JSON that `nutsgate adapt` makes of Caddyfile.example,
// the production layout of contract section 1: every site's first handler is path_guard, reached
// unconditionally (contract section 3: "Caddyfile.example and every Caddyfile in deploy/ start
// each site with it"); /n2n runs mtls_ident with require, then client_rate_limit, then
// reverse_proxy; on the internal site, /internal/* and every other route that proxies pass
// token_v2 (with the authorized_keys of NUTSGATE_CONFIG) first; the :5555 site proxies over h2c;
// the TLS policies of the network host ask for a client certificate on 443 (verify_if_given)
// and require one on 5555 (require_and_verify), trusting the network trust store. The
// multi-tenant Caddyfile is held to the same path_guard rule.
func TestExampleAdaptedConfig(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	e := newShippedEnv(t)
	adapt := func(t *testing.T, name string) jsonObj {
		t.Helper()
		res := runBinIn(t, cliTimeout, "", e.environ(t), "adapt", "--config", filepath.Join(root, name))
		if res.code != 0 {
			t.Fatalf("nutsgate adapt --config %s: exit status %d\nstderr: %s", name, res.code, res.stderr)
		}
		var cfg jsonObj
		if err := json.Unmarshal([]byte(res.stdout), &cfg); err != nil {
			t.Fatalf("adapted %s: %v", name, err)
		}
		return cfg
	}

	for _, name := range []string{"Caddyfile.example", "deploy/multi-tenant/Caddyfile"} {
		t.Run("path_guard first/"+name, func(t *testing.T) {
			t.Parallel()
			all := sites(adapt(t, name))
			if len(all) == 0 {
				t.Fatal("the adapted config has no sites")
			}
			for _, s := range all {
				hs := flatten(s.route, false)
				switch {
				case len(hs) == 0:
					t.Errorf("site %s: no handlers", s)
				case hs[0].name() != "path_guard":
					t.Errorf("site %s: first handler %q, want path_guard (handlers: %v)", s, hs[0].name(), handlerNames(hs))
				case hs[0].conditional:
					t.Errorf("site %s: path_guard is behind a matcher; it must guard every request", s)
				}
			}
		})
	}

	// Every shipped config proxies gRPC (h2c) to the node over the nuts_node transport with its
	// default stream buffer, so that a peer that never reads pins at most max_open (default
	// 100) x 512 KiB; and sets no max_open, so mtls_ident's default is in force.
	for _, cfg := range shippedConfigs {
		t.Run("gRPC transport/"+cfg.name, func(t *testing.T) {
			t.Parallel()
			dir, file := "", filepath.Join(root, cfg.name)
			if cfg.quickStart {
				dir, file = root, cfg.name
			}
			res := runBinIn(t, cliTimeout, dir, e.environ(t), "adapt", "--config", file)
			var adapted jsonObj
			if err := json.Unmarshal([]byte(res.stdout), &adapted); res.code != 0 || err != nil {
				t.Fatalf("nutsgate adapt --config %s: exit status %d, %v\nstderr: %s", cfg.name, res.code, err, res.stderr)
			}
			grpcProxies := 0
			for _, s := range sites(adapted) {
				for _, h := range flatten(s.route, false) {
					if h.name() == "mtls_ident" && h.obj["max_open"] != nil {
						t.Errorf("site %s: mtls_ident sets max_open %v; the shipped configs keep the default", s, h.obj["max_open"])
					}
					tr := asObj(h.obj["transport"])
					if h.name() != "reverse_proxy" || !slices.Contains(asStrings(tr["versions"]), "h2c") {
						continue
					}
					grpcProxies++
					if asString(tr["protocol"]) != "nuts_node" || tr["stream_buffer"] != nil {
						t.Errorf("site %s: h2c reverse_proxy transport %v, want nuts_node with its default stream_buffer", s, tr)
					}
				}
			}
			if grpcProxies == 0 {
				t.Errorf("%s: no h2c reverse_proxy found", cfg.name)
			}
		})
	}

	// Every production layout serves the gateway's metrics on a listener of their own, on
	// loopback by default, with Caddy's HTTP metrics on (per site): /metrics and nothing else
	// (path_guard first is checked above).
	for _, name := range []string{"Caddyfile.example", "deploy/multi-tenant/Caddyfile", "deploy/fleet/Caddyfile"} {
		t.Run("metrics listener/"+name, func(t *testing.T) {
			t.Parallel()
			cfg := adapt(t, name)
			if m := asObj(asObj(asObj(cfg["apps"])["http"])["metrics"]); m == nil || m["per_host"] != true {
				t.Errorf("%s: the http app's metrics are %v, want on with per_host", name, m)
			}
			var found []site
			for _, s := range sites(cfg) {
				if s.listensOn(":9180") {
					found = append(found, s)
				}
			}
			if len(found) != 1 || !slices.Equal(found[0].listen, []string{"127.0.0.1:9180"}) {
				t.Fatalf("%s: want one metrics site listening on 127.0.0.1:9180 only, found %v", name, found)
			}
			hs := flatten(found[0].route, false)
			if names := handlerNames(hs); !slices.Equal(names, []string{"path_guard", "metrics", "static_response"}) {
				t.Errorf("%s: metrics site handlers %v, want [path_guard metrics static_response]", name, names)
			}
			if routes := routesMatchingPath(found[0].route, "/metrics"); len(routes) != 1 || handlerIndex(routes[0], "metrics", nil) < 0 {
				t.Errorf("%s: want one /metrics route serving Caddy's metrics handler, found %v", name, routes)
			}
		})
	}

	t.Run("Caddyfile.example layout", func(t *testing.T) {
		t.Parallel()
		cfg := adapt(t, "Caddyfile.example")
		all := sites(cfg)
		find := func(host, port string) []site {
			var out []site
			for _, s := range all {
				if slices.Contains(s.hosts, host) && s.listensOn(port) {
					out = append(out, s)
				}
			}
			if len(out) != 1 {
				t.Fatalf("want exactly one site %s%s, found %d among %v", host, port, len(out), all)
			}
			return out
		}

		// /n2n: mtls_ident require < client_rate_limit < reverse_proxy.
		n2n := find("n2n.example.org", ":443")[0]
		n2nRoutes := routesMatchingPath(n2n.route, "/n2n/*")
		if len(n2nRoutes) == 0 {
			t.Errorf("site %s has no /n2n/* route", n2n)
		}
		for _, hs := range n2nRoutes {
			ident := handlerIndex(hs, "mtls_ident", func(h jsonObj) bool { return h["require"] == true })
			limit := handlerIndex(hs, "client_rate_limit", nil)
			proxy := handlerIndex(hs, "reverse_proxy", nil)
			if ident < 0 || limit < 0 || proxy < 0 || ident >= limit || limit >= proxy {
				t.Errorf("/n2n/* handlers %v: want mtls_ident (require) before client_rate_limit before reverse_proxy", handlerNames(hs))
			}
		}

		// The internal site: nothing is proxied without token_v2 first.
		internal := find("nuts-internal.example.org", ":8443")[0]
		keys := filepath.Join(e.config, "authorized_keys")
		internalRoutes := routesMatchingPath(internal.route, "/internal/*")
		if len(internalRoutes) == 0 {
			t.Errorf("site %s has no /internal/* route", internal)
		}
		for _, hs := range internalRoutes {
			auth := handlerIndex(hs, "authentication", isTokenV2(keys))
			proxy := handlerIndex(hs, "reverse_proxy", nil)
			if auth < 0 || proxy < 0 || auth > proxy {
				t.Errorf("/internal/* handlers %v: want token_v2 authentication (authorized_keys %s) before reverse_proxy", handlerNames(hs), keys)
			}
		}
		checkProxiedOnlyAfterAuth(t, internal, keys)

		// :5555: h2c to the node, over the nuts_node transport.
		grpcSite := find("n2n.example.org", ":5555")[0]
		hs := flatten(grpcSite.route, false)
		proxy := handlerIndex(hs, "reverse_proxy", nil)
		if proxy < 0 {
			t.Errorf("site %s: no reverse_proxy (handlers %v)", grpcSite, handlerNames(hs))
		} else {
			tr := asObj(hs[proxy].obj["transport"])
			if asString(tr["protocol"]) != "nuts_node" || !slices.Equal(asStrings(tr["versions"]), []string{"h2c", "2"}) {
				t.Errorf("site %s: reverse_proxy transport %v, want nuts_node with versions [h2c 2]", grpcSite, tr)
			}
		}
		if ident := handlerIndex(hs, "mtls_ident", func(h jsonObj) bool { return h["require"] == true }); ident < 0 || ident > proxy {
			t.Errorf("site %s: handlers %v, want mtls_ident (require) before reverse_proxy", grpcSite, handlerNames(hs))
		}

		// TLS client authentication of the network host.
		truststore := filepath.Join(e.tls, "network-truststore.pem")
		for _, want := range []struct{ port, mode string }{{":443", "verify_if_given"}, {":5555", "require_and_verify"}} {
			s := find("n2n.example.org", want.port)[0]
			srv := asObj(asObj(asObj(asObj(cfg["apps"])["http"])["servers"])[s.server])
			var found int
			for _, p := range asList(srv["tls_connection_policies"]) {
				pol := asObj(p)
				if !slices.Contains(asStrings(asObj(pol["match"])["sni"]), "n2n.example.org") {
					continue
				}
				found++
				ca := asObj(asObj(pol["client_authentication"])["ca"])
				if mode := asString(asObj(pol["client_authentication"])["mode"]); mode != want.mode {
					t.Errorf("%s: TLS policy for n2n.example.org has client_auth mode %q, want %q", s, mode, want.mode)
				}
				if files := asStrings(ca["pem_files"]); !slices.Equal(files, []string{truststore}) {
					t.Errorf("%s: TLS policy for n2n.example.org trusts %v, want [%s]", s, files, truststore)
				}
			}
			if found != 1 {
				t.Errorf("%s: %d TLS policies for SNI n2n.example.org, want 1", s, found)
			}
		}
	})
}

// monitoringPaths are the node's monitoring endpoints, which the internal site may proxy
// without a token to the monitoring network (a remote_ip matcher) and to nothing else.
var monitoringPaths = []string{"/status", "/status/*", "/health", "/metrics"}

// monitoringNetOnly reports whether match (a route's matcher sets) admits only monitoring paths
// and only from a remote_ip allow-list: a single matcher set with both.
func monitoringNetOnly(match []any) bool {
	if len(match) != 1 {
		return false
	}
	m := asObj(match[0])
	paths := asStrings(m["path"])
	return len(asStrings(asObj(m["remote_ip"])["ranges"])) > 0 && len(paths) > 0 &&
		!slices.ContainsFunc(paths, func(p string) bool { return !slices.Contains(monitoringPaths, p) })
}

// checkProxiedOnlyAfterAuth asserts that on site every handler path that reaches a
// reverse_proxy has passed token_v2 with keysFile in the same route before it, but for one
// route of the node's monitoring paths restricted to a remote_ip allow-list (which must exist,
// with the shipped default of loopback only).
func checkProxiedOnlyAfterAuth(t *testing.T, s site, keysFile string) {
	t.Helper()
	monitoringRoutes := 0
	var walk func(route jsonObj, authed bool, where any)
	walk = func(route jsonObj, authed bool, where any) {
		if m := asList(route["match"]); len(m) > 0 {
			where = m
			if monitoringNetOnly(m) {
				monitoringRoutes++
				if got := asStrings(asObj(asObj(m[0])["remote_ip"])["ranges"]); !slices.Equal(got, []string{"127.0.0.1/32", "::1/128"}) {
					t.Errorf("site %s: the monitoring network is %v by default, want loopback only [127.0.0.1/32 ::1/128]", s, got)
				}
				authed = true // a token is not needed from there
			}
		}
		for _, h := range asList(route["handle"]) {
			obj := asObj(h)
			switch asString(obj["handler"]) {
			case "subroute":
				for _, r := range asList(obj["routes"]) {
					walk(asObj(r), authed, where)
				}
				// A subroute's authentication applies to what follows it in this route.
				if slices.ContainsFunc(flatten(jsonObj{"handle": []any{obj}}, false), func(f flatHandler) bool {
					return f.name() == "authentication" && isTokenV2(keysFile)(f.obj)
				}) {
					authed = true
				}
			case "authentication":
				if isTokenV2(keysFile)(obj) {
					authed = true
				}
			case "reverse_proxy":
				if !authed {
					t.Errorf("site %s: a reverse_proxy is reached without token_v2 (authorized_keys %s) before it, on the route matching %v", s, keysFile, where)
				}
			}
		}
	}
	walk(s.route, false, "(everything)")
	if monitoringRoutes != 1 {
		t.Errorf("site %s: %d routes for the monitoring network, want 1", s, monitoringRoutes)
	}
}

// ---- the systemd unit ----

// TestSystemdUnit proves that deploy/nutsgate.service passes `systemd-analyze verify` (with its
// ExecStart binary replaced by the one under test, so the check of the executable is real):
// no diagnostic at all about the unit. Lines systemd prints about other unit files of the host
// (the units ours names, such as network-online.target, whose files are the host's, not ours)
// are left out; they have the form "<other file>:<line>: ...". Nothing else is filtered.
//
// The check needs systemd-analyze (Debian package systemd). Where it is not installed the test
// is skipped, saying why, unless NUTSGATE_REQUIRE_SYSTEMD=1, which makes a missing
// systemd-analyze a failure: .ci/run installs the package and sets it, so CI never skips.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("NUTSGATE_REQUIRE_SYSTEMD") == "1" {
			t.Fatalf("NUTSGATE_REQUIRE_SYSTEMD=1 but systemd-analyze is not on PATH: %v", err)
		}
		t.Skipf("deploy/nutsgate.service not verified: systemd-analyze is not on PATH (%v); set NUTSGATE_REQUIRE_SYSTEMD=1 to make this a failure", err)
	}
	root := moduleRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "deploy", "nutsgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	const shippedBin = "/usr/local/bin/nutsgate"
	if n := strings.Count(string(unit), shippedBin); n < 3 {
		t.Fatalf("deploy/nutsgate.service names %s %d times, want ExecStartPre, ExecStart and ExecReload", shippedBin, n)
	}
	copyPath := filepath.Join(t.TempDir(), "nutsgate.service")
	writeFileAtomic(t, copyPath, []byte(strings.ReplaceAll(string(unit), shippedBin, binPath)))

	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, "verify", copyPath)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("systemd-analyze verify did not finish within %s", cliTimeout)
	}
	var diagnostics []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || aboutOtherUnitFile(line, copyPath) {
			continue
		}
		diagnostics = append(diagnostics, line)
	}
	if err != nil || len(diagnostics) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", copyPath, err, strings.Join(diagnostics, "\n"))
	}
}

// otherUnitFile matches systemd's diagnostics about a unit file: "/path/to/file:12: message".
var otherUnitFile = regexp.MustCompile(`^(/[^:]+):\d+: `)

// aboutOtherUnitFile reports whether line is systemd's diagnostic about a unit file other than
// ours.
func aboutOtherUnitFile(line, ours string) bool {
	m := otherUnitFile.FindStringSubmatch(line)
	return m != nil && m[1] != ours
}
