package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// cliTimeout bounds one run of a subcommand that should finish on its own.
const cliTimeout = 30 * time.Second

// assertCLIError asserts the contract for bad input to a subcommand: exit status 1, exactly one
// non-empty line on stderr, nothing on stdout.
func assertCLIError(t *testing.T, res result) {
	t.Helper()
	if res.code != 1 {
		t.Errorf("exit status %d, want 1", res.code)
	}
	if res.stdout != "" {
		t.Errorf("stdout %q, want nothing", res.stdout)
	}
	if msg := strings.TrimSuffix(res.stderr, "\n"); msg == "" || strings.Contains(msg, "\n") {
		t.Errorf("stderr %q, want exactly one line", res.stderr)
	}
}

// singleLine returns the one line a successful subcommand printed, failing the test if it exited
// non-zero or printed anything else on stdout.
func singleLine(t *testing.T, res result) string {
	t.Helper()
	if res.code != 0 {
		t.Fatalf("exit status %d, stderr %q", res.code, res.stderr)
	}
	line := strings.TrimSuffix(res.stdout, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Fatalf("stdout %q, want exactly one line", res.stdout)
	}
	return line
}

// TestListModules proves the binary registers the token_v2 provider.
func TestListModules(t *testing.T) {
	t.Parallel()
	res := runBin(t, cliTimeout, "list-modules")
	if res.code != 0 {
		t.Fatalf("list-modules: exit status %d, stderr %q", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "http.authentication.providers.token_v2") {
		t.Errorf("list-modules does not list http.authentication.providers.token_v2:\n%s", res.stdout)
	}
}

// TestStartupWithBadKeyFile proves that an authorized_keys file with a line that does not parse
// is a configuration error: `validate` and `run` exit non-zero and name the file and the line.
func TestStartupWithBadKeyFile(t *testing.T) {
	t.Parallel()
	good := newKey(t, ed25519Key, "alice")
	const badLine = 3
	keysFile := writeFile(t, "authorized_keys", []byte(strings.Join([]string{
		"# e2e: the third line is broken",
		good.authorizedLine(),
		"ssh-ed25519 !!!notbase64 mallory",
		"",
	}, "\n")))
	up := newUpstream(t)
	for _, sub := range []string{"validate", "run"} {
		t.Run(sub, func(t *testing.T) {
			t.Parallel()
			cfg, _ := writeCaddyfile(t, keysFile, up)
			res := runBin(t, cliTimeout, sub, "--config", cfg, "--adapter", "caddyfile")
			if res.code == 0 {
				t.Errorf("exit status 0, want non-zero")
			}
			if out := res.stdout + res.stderr; !logNamesLine(out, keysFile, badLine) {
				t.Errorf("output does not name %s line %d:\n%s", keysFile, badLine, out)
			}
		})
	}
}

// TestTokenMint proves `nutsgate token mint` for every key format the contract lists (OpenSSH,
// PKCS#8, SEC1, PKCS#1, JWK): the token it prints carries the key's SSH fingerprint as kid, the
// algorithm that follows the key (or --alg RS512), the requested claims and lifetime, and passes
// the running gateway.
func TestTokenMint(t *testing.T) {
	t.Parallel()
	keys := map[keyType]*testKey{}
	var listed []*testKey
	for _, typ := range allKeyTypes {
		keys[typ] = newKey(t, typ, "mint-"+string(typ))
		listed = append(listed, keys[typ])
	}
	g := startGateway(t, writeAuthorizedKeys(t, listed...), newUpstream(t))

	cases := []struct {
		format keyFormat
		typ    keyType
		args   []string      // extra arguments
		alg    string        // expected alg; defaultAlg[typ] if empty
		ttl    time.Duration // expected lifetime; 0: not given, any up to 24h
	}{
		{opensshPrivate, ed25519Key, []string{"--ttl", "1h"}, "", time.Hour},
		{opensshPrivate, p256Key, []string{"--ttl", "1h"}, "", time.Hour},
		{opensshPrivate, p384Key, []string{"--ttl", "1h"}, "", time.Hour},
		{opensshPrivate, p521Key, []string{"--ttl", "1h"}, "", time.Hour},
		{opensshPrivate, rsaKey, []string{"--ttl", "1h"}, "", time.Hour},
		{opensshPrivate, ed25519Key, []string{"--ttl", "24h"}, "", 24 * time.Hour},
		{opensshPrivate, p256Key, nil, "", 0},
		{pkcs8Private, ed25519Key, []string{"--ttl", "30m"}, "", 30 * time.Minute},
		{pkcs8Private, p256Key, []string{"--ttl", "1h"}, "", time.Hour},
		{pkcs8Private, p384Key, []string{"--ttl", "1h"}, "", time.Hour},
		{pkcs8Private, p521Key, []string{"--ttl", "1h"}, "", time.Hour},
		{pkcs8Private, rsaKey, []string{"--ttl", "1h"}, "", time.Hour},
		{sec1Private, p256Key, []string{"--ttl", "1h"}, "", time.Hour},
		{sec1Private, p384Key, []string{"--ttl", "1h"}, "", time.Hour},
		{sec1Private, p521Key, []string{"--ttl", "1h"}, "", time.Hour},
		{pkcs1Private, rsaKey, []string{"--ttl", "1h"}, "", time.Hour},
		{pkcs1Private, rsaKey, []string{"--ttl", "1h", "--alg", "RS512"}, "RS512", time.Hour},
		{jwkPrivate, ed25519Key, []string{"--ttl", "1h"}, "", time.Hour},
		{jwkPrivate, p256Key, []string{"--ttl", "1h"}, "", time.Hour},
		{jwkPrivate, p384Key, []string{"--ttl", "1h"}, "", time.Hour},
		{jwkPrivate, p521Key, []string{"--ttl", "1h"}, "", time.Hour},
		{jwkPrivate, rsaKey, []string{"--ttl", "1h"}, "", time.Hour},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/%s/%s", c.format, c.typ, strings.Join(c.args, " "))
		if len(c.args) == 0 {
			name += "no-flags"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			k := keys[c.typ]
			alg := c.alg
			if alg == "" {
				alg = defaultAlg[c.typ]
			}
			sub := "sub-" + newJTI()
			args := append([]string{"token", "mint", "--key", k.writeKeyFile(t, c.format),
				"--iss", k.user, "--sub", sub, "--aud", testAudience}, c.args...)
			start := time.Now().Unix()
			jws := singleLine(t, runBin(t, cliTimeout, args...))
			end := time.Now().Unix()

			header, claims := decodeJWS(t, jws)
			if header["alg"] != alg {
				t.Errorf("alg %v, want %s", header["alg"], alg)
			}
			if header["kid"] != k.fingerprint() {
				t.Errorf("kid %v, want SSH fingerprint %s", header["kid"], k.fingerprint())
			}
			checkMintedClaims(t, claims, k.user, sub, start, end, c.ttl)
			g.expectGranted(t, "Bearer "+jws)
		})
	}
}

// checkMintedClaims asserts the claims `token mint` must write: iss, sub, aud as asked, a UUID
// jti, iat = nbf = the time of the run, exp = iat + ttl (or at most 24h later if ttl is 0).
func checkMintedClaims(t *testing.T, claims map[string]any, iss, sub string, start, end int64, ttl time.Duration) {
	t.Helper()
	if claims["iss"] != iss || claims["sub"] != sub {
		t.Errorf("iss %v sub %v, want %s %s", claims["iss"], claims["sub"], iss, sub)
	}
	if !audContains(claims["aud"], testAudience) {
		t.Errorf("aud %v, want %s", claims["aud"], testAudience)
	}
	if jti, _ := claims["jti"].(string); uuid.Validate(jti) != nil {
		t.Errorf("jti %v is not a UUID", claims["jti"])
	}
	num := func(name string) int64 {
		v, ok := claims[name].(float64)
		if !ok {
			t.Fatalf("%s %v is not a number", name, claims[name])
		}
		return int64(v)
	}
	iat, nbf, exp := num("iat"), num("nbf"), num("exp")
	if iat != nbf || iat < start-1 || iat > end+1 {
		t.Errorf("iat %d nbf %d, want both the time of the run (%d..%d)", iat, nbf, start, end)
	}
	life := time.Duration(exp-iat) * time.Second
	switch {
	case ttl != 0 && life != ttl:
		t.Errorf("exp - iat = %s, want %s", life, ttl)
	case ttl == 0 && (life <= 0 || life > 24*time.Hour):
		t.Errorf("exp - iat = %s, want a default lifetime in (0, 24h]", life)
	}
}

// audContains reports whether a JWT aud claim (a string or an array of strings) holds aud.
func audContains(claim any, aud string) bool {
	switch v := claim.(type) {
	case string:
		return v == aud
	case []any:
		for _, e := range v {
			if e == aud {
				return true
			}
		}
	}
	return false
}

// TestTokenMintBadInput proves that bad input to `token mint` exits 1 with a one-line error and
// prints no token.
func TestTokenMintBadInput(t *testing.T) {
	t.Parallel()
	k := newKey(t, ed25519Key, "alice")
	goodKey := k.writeKeyFile(t, opensshPrivate)
	cases := []struct {
		name string
		key  func(t *testing.T) string
		args []string
	}{
		{"ttl over 24h", func(*testing.T) string { return goodKey }, []string{"--ttl", "25h"}},
		{"missing key file", func(t *testing.T) string { return t.TempDir() + "/no-such-key" }, nil},
		{"garbage key file", func(t *testing.T) string {
			return writeFile(t, "garbage.key", []byte("-----BEGIN PRIVATE KEY-----\nnot a key\n"))
		}, nil},
		{"public key only", func(t *testing.T) string { return k.writeKeyFile(t, opensshPublic) }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"token", "mint", "--key", c.key(t),
				"--iss", k.user, "--sub", "s", "--aud", testAudience}, c.args...)
			assertCLIError(t, runBin(t, cliTimeout, args...))
		})
	}
}

// TestTokenAuthorizedKey proves `nutsgate token authorized-key` for private keys in every format
// (an Ed25519 PKCS#8 PEM key included, which ssh-keygen -y cannot read) and for public keys: it
// prints exactly the key's authorized_keys line with the user name, and those lines, written as
// the gateway's authorized_keys file, make tokens of those keys pass.
func TestTokenAuthorizedKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		format keyFormat
		typ    keyType
	}{
		{opensshPrivate, ed25519Key},
		{pkcs8Private, ed25519Key},
		{pkcs8Private, p384Key},
		{sec1Private, p256Key},
		{pkcs1Private, rsaKey},
		{jwkPrivate, p521Key},
		{opensshPublic, ed25519Key},
		{pkixPublic, p256Key},
	}
	keys := make([]*testKey, len(cases))
	lines := make([]string, len(cases))
	for i, c := range cases {
		keys[i] = newKey(t, c.typ, fmt.Sprintf("ak%d-%s-%s", i, c.format, c.typ))
		res := runBin(t, cliTimeout, "token", "authorized-key",
			"--key", keys[i].writeKeyFile(t, c.format), "--user", keys[i].user)
		if res.code != 0 {
			t.Errorf("%s %s: exit status %d, stderr %q", c.format, c.typ, res.code, res.stderr)
			continue
		}
		lines[i] = strings.TrimSuffix(res.stdout, "\n")
		if want := keys[i].authorizedLine(); lines[i] != want {
			t.Errorf("%s %s: printed %q, want %q", c.format, c.typ, res.stdout, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	keysFile := writeFile(t, "authorized_keys", []byte(strings.Join(lines, "\n")+"\n"))
	g := startGateway(t, keysFile, newUpstream(t))
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s/%s", c.format, c.typ), func(t *testing.T) {
			t.Parallel()
			g.expectGranted(t, keys[i].newToken().bearer(t))
		})
	}
}

// TestTokenAuthorizedKeyBadInput proves that bad input to `token authorized-key` exits 1 with a
// one-line error and prints nothing.
func TestTokenAuthorizedKeyBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		key  func(t *testing.T) string
	}{
		{"missing key file", func(t *testing.T) string { return t.TempDir() + "/no-such-key" }},
		{"garbage key file", func(t *testing.T) string {
			return writeFile(t, "garbage.key", []byte("this is not a key\n"))
		}},
		{"empty key file", func(t *testing.T) string { return writeFile(t, "empty.key", nil) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			assertCLIError(t, runBin(t, cliTimeout, "token", "authorized-key", "--key", c.key(t), "--user", "alice"))
		})
	}
}
