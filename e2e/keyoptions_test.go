package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startGatewayKeyOptions is startGateway with `key_options <mode>` in the token_v2 block ("" for
// the default).
func startGatewayKeyOptions(t *testing.T, keysFile string, up *upstream, mode string) *gateway {
	t.Helper()
	if mode == "" {
		return startGatewayEdited(t, keysFile, up, "", "")
	}
	return startGatewayEdited(t, keysFile, up, "audience "+testAudience+"\n", "audience "+testAudience+"\n\t\t\tkey_options "+mode+"\n")
}

// sendFrom makes one GET request to the gateway from the loopback source address src
// (127.0.0.2, 127.0.0.3, ...), with auth as the Authorization header and, unless xff is "",
// xff as X-Forwarded-For.
func (g *gateway) sendFrom(t *testing.T, src, xff, path, auth string) response {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
		},
		Timeout: 10 * time.Second,
	}
	req, err := http.NewRequest(http.MethodGet, g.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, src, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// grantedFrom reports whether a request from src with auth is granted and reaches the upstream
// intact; refusedFrom whether it gets the uniform refusal and the upstream never sees it. Each
// fails the test on any other outcome.
func (g *gateway) grantedFrom(t *testing.T, src, auth string) bool {
	t.Helper()
	return g.grantedVia(t, src, "", auth)
}

// grantedVia is grantedFrom with X-Forwarded-For: xff.
func (g *gateway) grantedVia(t *testing.T, src, xff, auth string) bool {
	t.Helper()
	path := probePath(t)
	r := g.sendFrom(t, src, xff, path, auth)
	if answeredByNode(r, path) {
		g.up.assertSawExactly(t, http.MethodGet, path, "", auth)
		return true
	}
	if why := refusal(r); why != "" {
		t.Fatalf("from %s: neither granted nor refused: %s", src, why)
	}
	g.up.assertSawNothing(t, path)
	return false
}

func (g *gateway) expectGrantedFrom(t *testing.T, src, auth string) {
	t.Helper()
	if !g.grantedFrom(t, src, auth) {
		t.Errorf("from %s: refused, want granted", src)
	}
}

func (g *gateway) expectRefusedFrom(t *testing.T, src, auth string) {
	t.Helper()
	if g.grantedFrom(t, src, auth) {
		t.Errorf("from %s: granted, want refused", src)
	}
}

// TestKeyOptionsFrom proves through the binary that a key's from= option is enforced with the
// client's address: a key with from="127.0.0.2" grants from 127.0.0.2 and is refused from
// 127.0.0.3, which the upstream never sees; a key without options grants from both; and the
// refusal is counted under its own reason.
func TestKeyOptionsFrom(t *testing.T) {
	t.Parallel()
	alice := newKey(t, ed25519Key, "alice")
	bob := newKey(t, p256Key, "bob")
	keysFile := writeFile(t, "authorized_keys", []byte(`from="127.0.0.2" `+alice.authorizedLine()+"\n"+
		`from="127.0.0.0/8,!127.0.0.3" `+bob.authorizedLine()+"\n"))
	g := startGatewayKeyOptions(t, keysFile, newUpstream(t), "")

	aliceTok, bobTok := alice.newToken().bearer(t), bob.newToken().bearer(t)
	g.expectGrantedFrom(t, "127.0.0.2", aliceTok)
	g.expectGrantedFrom(t, "127.0.0.2", aliceTok) // remembered
	g.expectRefusedFrom(t, "127.0.0.3", aliceTok) // remembered token, other address
	g.expectRefusedFrom(t, "127.0.0.3", alice.newToken().bearer(t))
	g.expectGrantedFrom(t, "127.0.0.4", bobTok)
	g.expectRefusedFrom(t, "127.0.0.3", bobTok) // negated pattern wins
	if !strings.Contains(g.Logs.String(), `"reason":"key_from"`) {
		t.Errorf("no access denied log line with reason key_from:\n%s", g.Logs.String())
	}
}

// TestKeyOptionsFromReload proves that a client's remembered token stops working within the
// reload time once the key's line gains a from= that excludes the client, while the client it
// names keeps being granted.
func TestKeyOptionsFromReload(t *testing.T) {
	t.Parallel()
	alice := newKey(t, ed25519Key, "alice")
	keysFile := writeAuthorizedKeys(t, alice)
	g := startGatewayKeyOptions(t, keysFile, newUpstream(t), "")
	tok := alice.newToken().bearer(t)
	g.expectGrantedFrom(t, "127.0.0.3", tok)
	g.expectGrantedFrom(t, "127.0.0.3", tok)

	writeFileAtomic(t, keysFile, []byte(`from="127.0.0.2" `+alice.authorizedLine()+"\n"))
	eventually(t, reloadWithin, "127.0.0.3's remembered token refused after from= was added", func() bool {
		return !g.grantedFrom(t, "127.0.0.3", tok)
	})
	g.expectGrantedFrom(t, "127.0.0.2", tok)
	g.expectRefusedFrom(t, "127.0.0.3", tok)
}

// TestKeyOptionsExpiry proves that a key past its expiry-time is refused, a key before it
// granted, and that key_options ignore grants both keys from any address, as the node does.
func TestKeyOptionsExpiry(t *testing.T) {
	t.Parallel()
	old := newKey(t, ed25519Key, "old")
	fresh := newKey(t, ed25519Key, "fresh")
	text := `expiry-time="20200101Z" ` + old.authorizedLine() + "\n" +
		`expiry-time="20991231235959",from="127.0.0.2" ` + fresh.authorizedLine() + "\n"
	enforce := startGatewayKeyOptions(t, writeFile(t, "authorized_keys", []byte(text)), newUpstream(t), "enforce")
	ignore := startGatewayKeyOptions(t, writeFile(t, "authorized_keys", []byte(text)), newUpstream(t), "ignore")

	oldTok, freshTok := old.newToken().bearer(t), fresh.newToken().bearer(t)
	enforce.expectRefusedFrom(t, "127.0.0.2", oldTok)
	enforce.expectGrantedFrom(t, "127.0.0.2", freshTok)
	enforce.expectRefusedFrom(t, "127.0.0.3", freshTok)
	if !strings.Contains(enforce.Logs.String(), `"reason":"key_expired"`) {
		t.Errorf("no access denied log line with reason key_expired:\n%s", enforce.Logs.String())
	}
	ignore.expectGrantedFrom(t, "127.0.0.2", oldTok)
	ignore.expectGrantedFrom(t, "127.0.0.3", freshTok)
}

// TestKeyOptionsUnreadable proves that an option the gateway cannot read makes its line
// invalid: at start-up a configuration error naming file and line; after start-up the last good
// key set stays in force. With key_options ignore the same file starts.
func TestKeyOptionsUnreadable(t *testing.T) {
	t.Parallel()
	alice := newKey(t, ed25519Key, "alice")
	bad := "# e2e: line 2 has a from= pattern that is not a CIDR block\n" +
		`from="10.1.2.3/8" ` + alice.authorizedLine() + "\n"
	up := newUpstream(t)

	t.Run("start-up", func(t *testing.T) {
		keysFile := writeFile(t, "authorized_keys", []byte(bad))
		cfg, _ := writeCaddyfile(t, keysFile, up)
		res := runBin(t, cliTimeout, "validate", "--config", cfg, "--adapter", "caddyfile")
		if res.code == 0 {
			t.Errorf("exit status 0, want non-zero")
		}
		if out := res.stdout + res.stderr; !logNamesLine(out, keysFile, 2) || !strings.Contains(out, "from=") {
			t.Errorf("output does not name %s line 2 and from=:\n%s", keysFile, out)
		}
	})
	t.Run("ignore starts", func(t *testing.T) {
		g := startGatewayKeyOptions(t, writeFile(t, "authorized_keys", []byte(bad)), newUpstream(t), "ignore")
		g.expectGrantedFrom(t, "127.0.0.3", alice.newToken().bearer(t))
	})
	t.Run("reload keeps the last good set", func(t *testing.T) {
		keysFile := writeFile(t, "authorized_keys", []byte(`from="127.0.0.2" `+alice.authorizedLine()+"\n"))
		g := startGatewayKeyOptions(t, keysFile, newUpstream(t), "")
		writeFileAtomic(t, keysFile, []byte(bad))
		eventually(t, 3*time.Second, "log names the bad line", func() bool {
			return logNamesLine(g.Logs.String(), keysFile, 2)
		})
		g.expectGrantedFrom(t, "127.0.0.2", alice.newToken().bearer(t))
		g.expectRefusedFrom(t, "127.0.0.3", alice.newToken().bearer(t))
	})
}

// TestKeyOptionsTrustedProxies proves that from= is matched against the client IP as Caddy
// determines it: behind a trusted proxy (127.0.0.2) the address in X-Forwarded-For counts; from
// an untrusted peer (127.0.0.3) the header is ignored and the peer's own address counts.
func TestKeyOptionsTrustedProxies(t *testing.T) {
	t.Parallel()
	alice := newKey(t, ed25519Key, "alice")
	keysFile := writeFile(t, "authorized_keys", []byte(`from="10.0.0.0/8" `+alice.authorizedLine()+"\n"))
	g := startGatewayEdited(t, keysFile, newUpstream(t), "auto_https off\n",
		"auto_https off\n\tservers {\n\t\ttrusted_proxies static 127.0.0.2/32\n\t}\n")
	tok := alice.newToken().bearer(t)
	if !g.grantedVia(t, "127.0.0.2", "10.9.9.9", tok) {
		t.Error("trusted proxy forwarding for 10.9.9.9: refused, want granted")
	}
	if g.grantedVia(t, "127.0.0.3", "10.9.9.9", tok) {
		t.Error("untrusted peer 127.0.0.3 claiming 10.9.9.9: granted, want refused")
	}
	if g.grantedVia(t, "127.0.0.2", "192.0.2.1", tok) {
		t.Error("trusted proxy forwarding for 192.0.2.1: granted, want refused")
	}
	if g.grantedVia(t, "127.0.0.2", "", tok) {
		t.Error("trusted proxy itself: granted, want refused")
	}
}
