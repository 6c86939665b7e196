package tokenv2

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/ssh"
)

// testNow is the fixed clock of the unit tests.
var testNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

const testAudience = "nuts-node.example"

// testKey is a generated key with its authorized_keys user name.
type testKey struct {
	name   string
	signer crypto.Signer
	alg    string
	user   string
}

var (
	keysOnce sync.Once
	keys     map[string]*testKey
)

// testKeys returns one key of each type the node accepts, generated once.
func testKeys(t testing.TB) map[string]*testKey {
	t.Helper()
	keysOnce.Do(func() {
		keys = make(map[string]*testKey)
		add := func(name, alg string, s crypto.Signer) {
			keys[name] = &testKey{name: name, signer: s, alg: alg, user: "user-" + name}
		}
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		add("ed25519", "EdDSA", ed)
		for _, c := range []struct {
			name, alg string
			curve     elliptic.Curve
		}{{"p256", "ES256", elliptic.P256()}, {"p384", "ES384", elliptic.P384()}, {"p521", "ES512", elliptic.P521()}} {
			k, err := ecdsa.GenerateKey(c.curve, rand.Reader)
			if err != nil {
				panic(err)
			}
			add(c.name, c.alg, k)
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		add("rsa", "PS512", rk)
	})
	return keys
}

// authorizedKeyLine is k's line in an authorized_keys file.
func authorizedKeyLine(t testing.TB, k *testKey) string {
	t.Helper()
	line, err := AuthorizedKeyLine(k.signer.Public(), k.user)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// testKeySet parses an authorized_keys file holding every test key.
func testKeySet(t testing.TB) *KeySet {
	t.Helper()
	var lines []string
	for _, name := range []string{"ed25519", "p256", "p384", "p521", "rsa"} {
		lines = append(lines, authorizedKeyLine(t, testKeys(t)[name]))
	}
	ks, warnings, err := ParseAuthorizedKeys([]byte(strings.Join(lines, "\n")))
	if err != nil || len(warnings) > 0 || ks.Len() != 5 {
		t.Fatalf("test key set: %v, %v, %d keys", err, warnings, ks.Len())
	}
	return ks
}

func sshFingerprint(t testing.TB, k *testKey) string {
	t.Helper()
	fp, err := SSHFingerprint(k.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// validClaims are claims the node accepts at testNow.
func validClaims(k *testKey) map[string]any {
	return map[string]any{
		"iss": k.user,
		"sub": "urn:oid:2.16.840.1.113883.2.4.6.1:00000001",
		"aud": testAudience,
		"jti": "9a1e4f0c-6f36-4f3c-9b1e-0a8f6b6f2c11",
		"iat": testNow.Unix(),
		"nbf": testNow.Unix(),
		"exp": testNow.Add(time.Hour).Unix(),
	}
}

// validHeader is a protected header the node accepts for k.
func validHeader(t testing.TB, k *testKey) map[string]any {
	return map[string]any{"alg": k.alg, "typ": "JWT", "kid": sshFingerprint(t, k)}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signRaw signs the given header and claims JSON texts, as they are, with
// k using the JWS algorithm alg.
func signRaw(t testing.TB, k *testKey, alg, header, claims string) string {
	t.Helper()
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	sig, err := jwt.GetSigningMethod(alg).Sign(input, k.signer)
	if err != nil {
		t.Fatalf("signing with %s: %v", alg, err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// token signs header and claims with k, with the algorithm the header names.
func token(t testing.TB, k *testKey, header, claims map[string]any) string {
	t.Helper()
	return signRaw(t, k, fmt.Sprint(header["alg"]), mustJSON(t, header), mustJSON(t, claims))
}

// validToken is a token the node accepts at testNow, signed with k.
func validToken(t testing.TB, k *testKey) string {
	t.Helper()
	return token(t, k, validHeader(t, k), validClaims(k))
}

// testVerifier is a Verifier on the test key set at testNow, without cache.
func testVerifier(t testing.TB, p Policy) *Verifier {
	t.Helper()
	if p.Audience == "" {
		p.Audience = testAudience
	}
	v := NewVerifier(p, -1, func() time.Time { return testNow })
	v.SetKeys(testKeySet(t))
	return v
}

// sshPublic is k's public key as an ssh.PublicKey.
func sshPublic(t testing.TB, k *testKey) ssh.PublicKey {
	t.Helper()
	pub, err := ssh.NewPublicKey(k.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
