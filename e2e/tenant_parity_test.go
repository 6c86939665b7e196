package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// siteSettingsOf is what must agree between a site of Caddyfile.example and the same site of
// every tenant: the handlers in the order a request meets them, with the settings that matter of
// each (request body limit; mtls_ident's require and forwarded header; what reverse_proxy sets on
// the request, its transport and flushing); the TLS policy of its host name (protocols, cipher
// suites, client_auth mode and verifiers); the timeouts and protocols of its server.
func siteSettingsOf(cfg jsonObj, s site) map[string]any {
	var handlers []string
	for _, h := range flatten(s.route, false) {
		desc := h.name()
		switch h.name() {
		case "request_body":
			desc += fmt.Sprintf(" max_size=%v", h.obj["max_size"])
		case "mtls_ident":
			desc += fmt.Sprintf(" require=%v forward_header=%v", h.obj["require"], h.obj["forward_header"])
		case "reverse_proxy":
			tr := jsonObj{}
			for k, v := range asObj(h.obj["transport"]) {
				tr[k] = v
			}
			b, _ := json.Marshal(jsonObj{"headers": h.obj["headers"], "transport": tr, "flush_interval": h.obj["flush_interval"]})
			desc += " " + string(b)
		}
		handlers = append(handlers, desc)
	}
	srv := asObj(asObj(asObj(asObj(cfg["apps"])["http"])["servers"])[s.server])
	var tlsPolicy any
	for _, p := range asList(srv["tls_connection_policies"]) {
		pol := asObj(p)
		if slices.ContainsFunc(asStrings(asObj(pol["match"])["sni"]), func(h string) bool { return slices.Contains(s.hosts, h) }) {
			ca := asObj(pol["client_authentication"])
			var verifiers []string
			for _, v := range asList(ca["verifiers"]) {
				verifiers = append(verifiers, asString(asObj(v)["verifier"]))
			}
			tlsPolicy = jsonObj{
				"protocol_min": pol["protocol_min"], "protocol_max": pol["protocol_max"],
				"cipher_suites": pol["cipher_suites"], "client_auth_mode": ca["mode"], "verifiers": verifiers,
			}
		}
	}
	return map[string]any{
		"handlers": handlers, "tls": tlsPolicy, "protocols": srv["protocols"],
		"read_header_timeout": srv["read_header_timeout"], "read_timeout": srv["read_timeout"],
		"idle_timeout": srv["idle_timeout"], "read_body_idle": srv["read_body_idle_timeout"],
		"metrics": srv["metrics"],
	}
}

// TestTenantParity proves that every tenant of deploy/multi-tenant/Caddyfile and
// deploy/fleet/Caddyfile has each site of Caddyfile.example with the same settings that matter
// (siteSettingsOf), on the JSON `nutsgate adapt` makes of each file: the multi-tenant layouts are
// derived from the single-node one and must not drift from it. Only the fleet's distributed rate
// limits differ, and they are not compared.
func TestTenantParity(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	e := newShippedEnv(t)
	adapt := func(name string) jsonObj {
		res := runBinIn(t, cliTimeout, "", e.environ(t), "adapt", "--config", filepath.Join(root, name))
		var cfg jsonObj
		if err := json.Unmarshal([]byte(res.stdout), &cfg); res.code != 0 || err != nil {
			t.Fatalf("nutsgate adapt --config %s: exit status %d, %v\nstderr: %s", name, res.code, err, res.stderr)
		}
		return cfg
	}
	find := func(cfg jsonObj, host, port string) (site, bool) {
		for _, s := range sites(cfg) {
			if slices.Contains(s.hosts, host) && s.listensOn(port) {
				return s, true
			}
		}
		return site{}, false
	}
	example := adapt("Caddyfile.example")
	roles := []struct{ name, host, port, tenantHost string }{
		{"public", "nuts.example.org", ":443", "%s.example.org"},
		{"n2n", "n2n.example.org", ":443", "n2n.%s.example.org"},
		{"gRPC", "n2n.example.org", ":5555", "n2n.%s.example.org"},
		{"internal", "nuts-internal.example.org", ":8443", "%s-internal.example.org"},
	}
	for _, file := range []string{"deploy/multi-tenant/Caddyfile", "deploy/fleet/Caddyfile"} {
		cfg := adapt(file)
		for i, tenant := range shippedTenants {
			for _, r := range roles {
				want, ok := find(example, r.host, r.port)
				if !ok {
					t.Fatalf("Caddyfile.example has no site %s%s", r.host, r.port)
				}
				port := r.port
				if r.name == "internal" {
					port = fmt.Sprintf(":%d", 8443+i)
				}
				host := fmt.Sprintf(r.tenantHost, tenant)
				got, ok := find(cfg, host, port)
				if !ok {
					t.Errorf("%s: tenant %s has no %s site %s%s", file, tenant, r.name, host, port)
					continue
				}
				ws, gs := siteSettingsOf(example, want), siteSettingsOf(cfg, got)
				for _, k := range []string{"handlers", "tls", "protocols", "read_header_timeout", "read_timeout", "idle_timeout", "read_body_idle", "metrics"} {
					if !reflect.DeepEqual(ws[k], gs[k]) {
						t.Errorf("%s: tenant %s, %s site %s%s: %s\n got  %s\n want %s (Caddyfile.example)", file, tenant, r.name, host, port, k, show(gs[k]), show(ws[k]))
					}
				}
			}
		}
	}
}

func show(v any) string {
	if l, ok := v.([]string); ok {
		return strings.Join(l, "\n      ")
	}
	b, _ := json.Marshal(v)
	return string(b)
}
