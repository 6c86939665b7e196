package e2e

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// allKeyTypes lists every key type the gateway must accept.
var allKeyTypes = []keyType{ed25519Key, p256Key, p384Key, p521Key, rsaKey}

// TestTokenV2Grants proves that a valid token passes the running binary for every key type and
// algorithm (Ed25519 EdDSA, P-256 ES256, P-384 ES384, P-521 ES512, RSA PS512 and RS512) with
// either kid form (SSH SHA-256 fingerprint, RFC 7638 JWK thumbprint), and that the upstream then
// receives the request with the Authorization header unchanged.
func TestTokenV2Grants(t *testing.T) {
	t.Parallel()
	keys := map[keyType]*testKey{}
	var listed []*testKey
	for _, typ := range allKeyTypes {
		keys[typ] = newKey(t, typ, "user-"+string(typ))
		listed = append(listed, keys[typ])
	}
	g := startGateway(t, writeAuthorizedKeys(t, listed...), newUpstream(t))

	cases := []struct {
		typ keyType
		alg string
	}{
		{ed25519Key, "EdDSA"},
		{p256Key, "ES256"},
		{p384Key, "ES384"},
		{p521Key, "ES512"},
		{rsaKey, "PS512"},
		{rsaKey, "RS512"},
	}
	kidForms := []struct {
		name string
		kid  func(*testKey) string
	}{
		{"ssh-fingerprint", (*testKey).fingerprint},
		{"jwk-thumbprint", (*testKey).thumbprint},
	}
	for _, c := range cases {
		for _, form := range kidForms {
			t.Run(c.alg+"/"+form.name, func(t *testing.T) {
				t.Parallel()
				k := keys[c.typ]
				auth := k.newToken().with(func(h, _ map[string]any) {
					h["alg"] = c.alg
					h["kid"] = form.kid(k)
				}).bearer(t)
				g.expectGranted(t, auth)
			})
		}
	}
}

// TestTokenV2Refusals proves, through the running binary, that a representative set of bad
// requests each gets the uniform refusal (401, body "Unauthorized", WWW-Authenticate: Bearer)
// and never reaches the upstream. A valid token is granted on the same gateway, so each refusal
// is down to the one thing the case changes.
func TestTokenV2Refusals(t *testing.T) {
	t.Parallel()
	alice := newKey(t, ed25519Key, "alice")
	bob := newKey(t, p256Key, "bob")
	stranger := newKey(t, ed25519Key, "alice") // not in the file
	g := startGateway(t, writeAuthorizedKeys(t, alice, bob), newUpstream(t))

	t.Run("control: valid token granted", func(t *testing.T) {
		g.expectGranted(t, alice.newToken().bearer(t))
	})

	hour := int64(time.Hour / time.Second)
	cases := []struct {
		name string
		auth func(t *testing.T) string // the Authorization header; "" sends none
	}{
		{"no Authorization header", func(*testing.T) string { return "" }},
		{"Basic credentials", func(*testing.T) string {
			return "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))
		}},
		{"valid token under Basic scheme", func(t *testing.T) string {
			return "Basic " + alice.newToken().sign(t)
		}},
		{"expired", func(t *testing.T) string {
			return alice.newToken().with(func(_, c map[string]any) {
				now := time.Now().Unix()
				c["iat"], c["nbf"], c["exp"] = now-2*hour, now-2*hour, now-hour
			}).bearer(t)
		}},
		{"wrong audience", func(t *testing.T) string {
			return alice.newToken().with(func(_, c map[string]any) { c["aud"] = "other-aud" }).bearer(t)
		}},
		{"iss another listed user", func(t *testing.T) string {
			return alice.newToken().with(func(_, c map[string]any) { c["iss"] = bob.user }).bearer(t)
		}},
		{"iss unknown user", func(t *testing.T) string {
			return alice.newToken().with(func(_, c map[string]any) { c["iss"] = "mallory" }).bearer(t)
		}},
		{"kid unknown", func(t *testing.T) string {
			return alice.newToken().with(func(h, _ map[string]any) { h["kid"] = stranger.fingerprint() }).bearer(t)
		}},
		{"no kid", func(t *testing.T) string {
			return alice.newToken().with(func(h, _ map[string]any) { delete(h, "kid") }).bearer(t)
		}},
		{"alg HS256 with a guessed secret", func(t *testing.T) string {
			return alice.newToken().with(func(h, _ map[string]any) { h["alg"] = "HS256" }).bearer(t)
		}},
		{"alg none", func(t *testing.T) string {
			return alice.newToken().with(func(h, _ map[string]any) { h["alg"] = "none" }).bearer(t)
		}},
		{"signed by unlisted key, kid of a listed key", func(t *testing.T) string {
			return stranger.newToken().with(func(h, _ map[string]any) { h["kid"] = alice.fingerprint() }).bearer(t)
		}},
		{"signed by unlisted key, its own kid", func(t *testing.T) string {
			return stranger.newToken().bearer(t)
		}},
		{"signed by unlisted key, thumbprint kid of a listed key", func(t *testing.T) string {
			return stranger.newToken().with(func(h, _ map[string]any) { h["kid"] = alice.thumbprint() }).bearer(t)
		}},
		{"signature of another token", func(t *testing.T) string {
			good := strings.Split(alice.newToken().sign(t), ".")
			other := strings.Split(alice.newToken().with(func(_, c map[string]any) { c["sub"] = "someone-else" }).sign(t), ".")
			return "Bearer " + other[0] + "." + other[1] + "." + good[2]
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g.expectRefused(t, c.auth(t))
		})
	}
}

// TestTokenV2NoUsableKeys proves rule 19 (docs/token_v2.md): a file with no usable key still starts, and every
// token is then refused.
func TestTokenV2NoUsableKeys(t *testing.T) {
	t.Parallel()
	k := newKey(t, ed25519Key, "alice")
	keysFile := writeFile(t, "authorized_keys", []byte("# no keys yet\n\n"))
	g := startGateway(t, keysFile, newUpstream(t))
	g.expectRefused(t, k.newToken().bearer(t))
}
