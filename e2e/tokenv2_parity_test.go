package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"strconv"
	"testing"
	"time"
)

// TestTokenV2Parity proves, through the running binary, the verdicts where the gateway follows
// the node beyond a plain reading of the rules (docs/token_v2.md): PS512 only with a PSS salt as
// long as the hash, typ only as a string, and a date as a digit string with a fraction. Each
// refused request never reaches the upstream.
func TestTokenV2Parity(t *testing.T) {
	t.Parallel()
	rsaK := newKey(t, rsaKey, "rsa-user")
	alice := newKey(t, ed25519Key, "alice")
	g := startGateway(t, writeAuthorizedKeys(t, rsaK, alice), newUpstream(t))

	pss := func(t *testing.T, salt int) string {
		tk := rsaK.newToken().with(func(h, _ map[string]any) { h["alg"] = "PS512" })
		input := b64JSON(t, tk.header) + "." + b64JSON(t, tk.claims)
		sum := sha512.Sum512([]byte(input))
		sig, err := rsa.SignPSS(rand.Reader, rsaK.signer.(*rsa.PrivateKey), crypto.SHA512, sum[:], &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + input + "." + b64.EncodeToString(sig)
	}
	t.Run("PS512 salt 64 granted", func(t *testing.T) { g.expectGranted(t, pss(t, 64)) })
	t.Run("PS512 salt 0 refused", func(t *testing.T) { g.expectRefused(t, pss(t, 0)) })
	t.Run("PS512 maximum salt refused", func(t *testing.T) { g.expectRefused(t, pss(t, rsa.PSSSaltLengthAuto)) })

	t.Run("typ 1 refused", func(t *testing.T) {
		g.expectRefused(t, alice.newToken().with(func(h, _ map[string]any) { h["typ"] = 1 }).bearer(t))
	})
	t.Run("cty 1 refused", func(t *testing.T) {
		g.expectRefused(t, alice.newToken().with(func(h, _ map[string]any) { h["cty"] = 1 }).bearer(t))
	})
	t.Run("typ JWT granted", func(t *testing.T) {
		g.expectGranted(t, alice.newToken().with(func(h, _ map[string]any) { h["typ"] = "JWT" }).bearer(t))
	})

	now := time.Now().Unix()
	t.Run("digit string dates with a fraction granted", func(t *testing.T) {
		g.expectGranted(t, alice.newToken().with(func(_, c map[string]any) {
			c["iat"] = strconv.FormatInt(now, 10) + ".5"
			c["nbf"] = strconv.FormatInt(now, 10) + ".5"
			c["exp"] = strconv.FormatInt(now+3600, 10) + ".5"
		}).bearer(t))
	})
	t.Run("digit string exp with a fraction in the past refused", func(t *testing.T) {
		g.expectRefused(t, alice.newToken().with(func(_, c map[string]any) {
			c["iat"], c["nbf"] = now-7200, now-7200
			c["exp"] = strconv.FormatInt(now-3600, 10) + ".5"
		}).bearer(t))
	})
}
