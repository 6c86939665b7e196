package e2e

import (
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// adaptShipped returns the JSON that `nutsgate adapt` makes of a shipped Caddyfile, run as the
// documentation says: the quick start from the module root, the others with their paths from
// the environment.
func adaptShipped(t *testing.T, e shippedEnv, cfg shippedConfig) jsonObj {
	t.Helper()
	root := moduleRoot(t)
	dir, file := "", filepath.Join(root, cfg.name)
	if cfg.quickStart {
		dir, file = root, cfg.name
	}
	res := runBinIn(t, cliTimeout, dir, e.environ(t), "adapt", "--config", file)
	if res.code != 0 {
		t.Fatalf("nutsgate adapt --config %s: exit status %d\nstderr: %s", cfg.name, res.code, res.stderr)
	}
	var out jsonObj
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("adapted %s: %v", cfg.name, err)
	}
	return out
}

// maxBodyTime is the longest a shipped public or internal site may wait for a request body.
const maxBodyTime = time.Minute

// TestShippedEdgeSettings proves, on the adapted JSON of every shipped Caddyfile, the server
// settings that contract section 12 needs from configuration: HTTP/1.1 and HTTP/2 only on every
// server (no HTTP/3, so no TLS 0-RTT early data can reach the node); on every server that
// proxies gRPC (h2c), no read timeout of any kind, so quiet streams stay open; on every other
// server a request body must arrive within maxBodyTime. The quick start must, in addition,
// listen on loopback addresses only, on no port below 1024, and start no HTTP->HTTPS redirect
// server (which would take :80). Every TLS connection policy that verifies client certificates
// (the n2n and gRPC sites) checks their revocation with the nuts_pki verifier (contract
// section 9).
func TestShippedEdgeSettings(t *testing.T) {
	t.Parallel()
	e := newShippedEnv(t)
	for _, shipped := range shippedConfigs {
		t.Run(shipped.name, func(t *testing.T) {
			t.Parallel()
			cfg := adaptShipped(t, e, shipped)
			servers := asObj(asObj(asObj(cfg["apps"])["http"])["servers"])
			if len(servers) == 0 {
				t.Fatal("no servers")
			}
			grpcServers, clientAuths := 0, 0
			for name, v := range servers {
				srv := asObj(v)
				listen := asStrings(srv["listen"])
				for _, p := range asList(srv["tls_connection_policies"]) {
					ca := asObj(asObj(p)["client_authentication"])
					if len(ca) == 0 {
						continue
					}
					clientAuths++
					var verifiers []string
					for _, v := range asList(ca["verifiers"]) {
						verifiers = append(verifiers, asString(asObj(v)["verifier"]))
					}
					if !slices.Contains(verifiers, "nuts_pki") {
						t.Errorf("server %s %v: client_auth without verifier nuts_pki (verifiers %v): revoked clients would pass", name, listen, verifiers)
					}
				}
				if p := asStrings(srv["protocols"]); !slices.Equal(p, []string{"h1", "h2"}) {
					t.Errorf("server %s %v: protocols %v, want [h1 h2] (no HTTP/3: 0-RTT early data is replayable)", name, listen, p)
				}
				readBody := time.Duration(num(srv["read_timeout"]))
				readIdle := time.Duration(num(srv["read_idle_timeout"]))
				if proxiesGRPC(srv) {
					grpcServers++
					if readBody != 0 || readIdle >= 0 {
						t.Errorf("gRPC server %s %v: read_timeout %v, read_idle_timeout %v; want none and negative (streams are never cut for being quiet)", name, listen, readBody, readIdle)
					}
				} else if readBody <= 0 || readBody > maxBodyTime {
					t.Errorf("server %s %v: read_timeout %v, want a body deadline of at most %v", name, listen, readBody, maxBodyTime)
				}
				if shipped.quickStart {
					if ah := asObj(srv["automatic_https"]); ah["disable_redirects"] != true && ah["disable"] != true {
						t.Errorf("quick start server %s: automatic_https %v: its HTTP->HTTPS redirect server would listen on :80", name, ah)
					}
					for _, l := range listen {
						if !loopbackUnprivileged(l) {
							t.Errorf("quick start server %s listens on %q: want a loopback address and a port of 1024 or more", name, l)
						}
					}
				}
			}
			if grpcServers == 0 {
				t.Error("no server proxies gRPC (h2c): the check of its timeouts checked nothing")
			}
			if clientAuths == 0 {
				t.Error("no TLS connection policy verifies client certificates: the check of their verifier checked nothing")
			}
		})
	}
}

// num is a JSON number, 0 if v is none.
func num(v any) float64 { f, _ := v.(float64); return f }

// proxiesGRPC reports whether any route of srv proxies over h2c.
func proxiesGRPC(srv jsonObj) bool {
	for _, r := range asList(srv["routes"]) {
		for _, h := range flatten(asObj(r), false) {
			if h.name() == "reverse_proxy" && slices.Contains(asStrings(asObj(h.obj["transport"])["versions"]), "h2c") {
				return true
			}
		}
	}
	return false
}

// loopbackUnprivileged reports whether a listen address is a loopback IP with a port of 1024 or
// more ("tcp/" or "udp/" network prefixes allowed).
func loopbackUnprivileged(listen string) bool {
	for _, network := range []string{"tcp/", "udp/", "tcp4/", "tcp6/", "udp4/", "udp6/"} {
		if len(listen) > len(network) && listen[:len(network)] == network {
			listen = listen[len(network):]
		}
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	addr, err := netip.ParseAddr(host)
	p, perr := strconv.Atoi(port)
	return err == nil && perr == nil && addr.IsLoopback() && p >= 1024
}
