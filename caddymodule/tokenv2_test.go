package caddymodule

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/nutsgate/nutsgate/handlers/tokenv2"
)

func TestTokenV2Caddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input, err string
		want             TokenV2
	}{
		{"full", "token_v2 {\n authorized_keys /etc/keys\n audience node\n leeway 5s\n}", "", TokenV2{AuthorizedKeys: "/etc/keys", Audience: "node", Leeway: caddy.Duration(5 * time.Second)}},
		{"file only", "token_v2 {\n authorized_keys /etc/keys\n}", "", TokenV2{AuthorizedKeys: "/etc/keys"}},
		{"no file", "token_v2 {\n audience node\n}", "authorized_keys is required, at Testfile:3", TokenV2{}},
		{"argument", "token_v2 /etc/keys", "wrong argument count or unexpected line ending after '/etc/keys', at Testfile:1", TokenV2{}},
		{"twice", "token_v2 {\n authorized_keys a\n authorized_keys b\n}", "authorized_keys already specified, at Testfile:3", TokenV2{}},
		{"two values", "token_v2 {\n authorized_keys a b\n}", "wrong argument count or unexpected line ending after 'a', at Testfile:2", TokenV2{}},
		{"key_options", "token_v2 {\n authorized_keys /etc/keys\n key_options ignore\n}", "", TokenV2{AuthorizedKeys: "/etc/keys", KeyOptions: "ignore"}},
		{"bad key_options", "token_v2 {\n authorized_keys a\n key_options off\n}", `key_options "off": must be enforce or ignore, at Testfile:3`, TokenV2{}},
		{"bad leeway", "token_v2 {\n authorized_keys a\n leeway soon\n}", `leeway "soon": time: invalid duration "soon", at Testfile:3`, TokenV2{}},
		{"negative leeway", "token_v2 {\n authorized_keys a\n leeway -1s\n}", `leeway "-1s" must not be negative, at Testfile:3`, TokenV2{}},
		{"failures", "token_v2 {\n authorized_keys a\n failures 5/10s\n}", "", TokenV2{AuthorizedKeys: "a", Failures: "5/10s"}},
		{"bad failures", "token_v2 {\n authorized_keys a\n failures 5\n}", `failures: invalid rate "5": want <events>/<duration>, such as 50/1s, at Testfile:3`, TokenV2{}},
		{"failures twice", "token_v2 {\n authorized_keys a\n failures 5/1s\n failures 6/1s\n}", "failures already specified, at Testfile:4", TokenV2{}},
		{"unknown", "token_v2 {\n authorized_keys a\n realm x\n}", `unrecognized subdirective "realm", at Testfile:3`, TokenV2{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got TokenV2
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got.AuthorizedKeys != tc.want.AuthorizedKeys || got.Audience != tc.want.Audience || got.Leeway != tc.want.Leeway || got.KeyOptions != tc.want.KeyOptions || got.Failures != tc.want.Failures {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestTokenV2ThroughCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	dir := t.TempDir()
	_, alice, _ := ed25519.GenerateKey(rand.Reader)
	_, bob, _ := ed25519.GenerateKey(rand.Reader)
	line, err := tokenv2.AuthorizedKeyLine(alice.Public(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keys, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	node := &recorder{}
	upstream := httptest.NewServer(node)
	defer upstream.Close()

	tester := startCaddy(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /internal/* {
			token_v2 {
				authorized_keys %s
			}
			reverse_proxy %s {
				header_up X-Nuts-User {http.auth.user.id}
				header_up X-Nuts-Sub {http.auth.user.sub}
			}
		}
		handle /down/* {
			token_v2 {
				authorized_keys %[1]s
			}
			reverse_proxy 127.0.0.1:1
		}
		handle {
			respond 404
		}
	}`, keys, upstream.Listener.Addr()))

	mint := func(key ed25519.PrivateKey, iss, aud string) string {
		tok, err := tokenv2.Mint(tokenv2.MintRequest{Key: key, Issuer: iss, Subject: "sub-1", Audience: aud, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	good := mint(alice, "alice", host) // the default audience is the host name
	request := func(path string, auth ...string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, "http://localhost:9080"+path, nil)
		for _, a := range auth {
			req.Header.Add("Authorization", a)
		}
		return req
	}
	refused := func(name string, req *http.Request) {
		t.Helper()
		resp, body := tester.AssertResponse(req, http.StatusUnauthorized, "Unauthorized")
		if got := resp.Header.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("%s: WWW-Authenticate %q", name, got)
		}
		if seen := node.take(); len(seen) != 0 {
			t.Errorf("%s: the node saw %d requests (%s)", name, len(seen), body)
		}
	}
	refused("no token", request("/internal/vdr"))
	refused("other audience", request("/internal/vdr", mint(alice, "alice", "elsewhere")))
	refused("other key", request("/internal/vdr", mint(bob, "alice", host)))
	refused("wrong issuer", request("/internal/vdr", mint(alice, "bob", host)))
	refused("first header counts", request("/internal/vdr", "Bearer nonsense", good))

	for _, req := range []*http.Request{request("/internal/vdr", good), request("/internal/vdr", good, "Bearer nonsense")} {
		tester.AssertResponse(req, http.StatusOK, "node ok")
		seen := node.take()
		if len(seen) != 1 {
			t.Fatalf("the node saw %d requests, want 1", len(seen))
		}
		got := seen[0].Header
		if got.Get("Authorization") != good || got.Get("X-Nuts-User") != "alice" || got.Get("X-Nuts-Sub") != "sub-1" {
			t.Fatalf("the node saw Authorization %q, user %q, sub %q", got.Get("Authorization"), got.Get("X-Nuts-User"), got.Get("X-Nuts-Sub"))
		}
	}

	// errors after a grant keep their own status
	tester.AssertResponseCode(request("/down/x", good), http.StatusBadGateway)
	// and a refusal there is still a refusal
	resp := tester.AssertResponseCode(request("/down/x"), http.StatusUnauthorized)
	if b, _ := io.ReadAll(resp.Body); strings.TrimSpace(string(b)) != "Unauthorized" {
		t.Fatalf("body %q", b)
	}

	// the decisions are counted on Caddy's metrics endpoint
	resp, err = http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	for _, want := range []string{
		`nutsgate_auth_decisions_total{reason="",result="granted"} 3`,
		`nutsgate_auth_decisions_total{reason="no_authorization",result="denied"} 2`,
		`nutsgate_auth_decisions_total{reason="audience",result="denied"} 1`,
		`nutsgate_auth_decisions_total{reason="unknown_key",result="denied"} 1`,
		`nutsgate_auth_decisions_total{reason="issuer",result="denied"} 1`,
		`nutsgate_auth_decisions_total{reason="malformed",result="denied"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}
