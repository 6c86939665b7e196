package tokenv2

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchVerifier is a Verifier at testNow over the authorized_keys lines.
func benchVerifier(b *testing.B, cacheSize int, lines []string) *Verifier {
	b.Helper()
	ks, _, err := ParseAuthorizedKeys([]byte(strings.Join(lines, "\n")))
	if err != nil {
		b.Fatal(err)
	}
	v := NewVerifier(Policy{Audience: testAudience}, cacheSize, func() time.Time { return testNow })
	v.SetKeys(ks)
	return v
}

func runVerify(b *testing.B, v *Verifier, auth string) {
	b.Helper()
	if _, err := v.Verify(auth); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(auth); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyFirstSeen is the cost of a token not seen before: the
// verified-token cache is off, so every iteration checks the signature.
func BenchmarkVerifyFirstSeen(b *testing.B) {
	keys := testKeys(b)
	rsa4096, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	all := []*testKey{keys["ed25519"], keys["p256"], keys["p384"], keys["p521"], keys["rsa"],
		{name: "rsa4096", signer: rsa4096, alg: "PS512", user: "user-rsa4096"}}
	names := map[string]string{"ed25519": "Ed25519", "p256": "P-256", "p384": "P-384", "p521": "P-521", "rsa": "RSA-2048", "rsa4096": "RSA-4096"}
	for _, k := range all {
		b.Run(names[k.name], func(b *testing.B) {
			v := benchVerifier(b, -1, []string{authorizedKeyLine(b, k)})
			runVerify(b, v, "Bearer "+validToken(b, k))
		})
	}
}

// BenchmarkVerifyCached is the cost of a token verified before.
func BenchmarkVerifyCached(b *testing.B) {
	k := testKeys(b)["p256"]
	v := benchVerifier(b, 0, []string{authorizedKeyLine(b, k)})
	runVerify(b, v, "Bearer "+validToken(b, k))
}

// BenchmarkVerifyKeyCount is the cost of a first-seen Ed25519 token with 1,
// 100 and 1000 keys in the file: the kid picks the key, so it stays flat.
func BenchmarkVerifyKeyCount(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			var lines []string
			var last *testKey
			for i := range n {
				_, priv, _ := ed25519.GenerateKey(rand.Reader)
				last = &testKey{signer: priv, alg: "EdDSA", user: fmt.Sprintf("user%d", i)}
				lines = append(lines, authorizedKeyLine(b, last))
			}
			v := benchVerifier(b, -1, lines)
			runVerify(b, v, "Bearer "+validToken(b, last))
		})
	}
}
