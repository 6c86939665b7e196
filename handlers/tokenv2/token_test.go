package tokenv2

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// check runs a Verifier on an Authorization value and compares the outcome
// with want: "" for a grant, else the expected refusal reason.
func check(t *testing.T, v *Verifier, authorization string, want Reason) Grant {
	t.Helper()
	g, err := v.Verify(authorization)
	if want == "" {
		if err != nil {
			t.Fatalf("refused, want granted: %v", err)
		}
		return g
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("got grant %+v / error %v, want refusal %s", g, err, want)
	}
	if r.Reason != want {
		t.Fatalf("refused for %s (%s), want %s", r.Reason, r.Detail, want)
	}
	if g != (Grant{}) {
		t.Fatalf("a refusal came with a grant: %+v", g)
	}
	return g
}

// edit returns a valid token of key name with header and claims changed by
// the given functions (either may be nil).
type edit struct {
	key    string
	header func(map[string]any)
	claims func(map[string]any)
}

func (e edit) token(t *testing.T) string {
	k := testKeys(t)[e.key]
	if k == nil {
		k = testKeys(t)["ed25519"]
	}
	h, c := validHeader(t, k), validClaims(k)
	if e.header != nil {
		e.header(h)
	}
	if e.claims != nil {
		e.claims(c)
	}
	return token(t, k, h, c)
}

func set(name string, val any) func(map[string]any) {
	return func(m map[string]any) { m[name] = val }
}

func del(name string) func(map[string]any) {
	return func(m map[string]any) { delete(m, name) }
}

// The rule numbers in the comments below are those of docs/token_v2.md.

// Rule 1: the Authorization header.
func TestRuleAuthorizationHeader(t *testing.T) {
	v := testVerifier(t, Policy{})
	tok := validToken(t, testKeys(t)["ed25519"])
	for _, tc := range []struct {
		name, auth string
		want       Reason
	}{
		{"Bearer", "Bearer " + tok, ""},
		{"lower case scheme", "bearer " + tok, ""},
		{"upper case scheme", "BEARER " + tok, ""},
		{"tab", "Bearer\t" + tok, ""},
		{"several spaces and NBSP", "Bearer  \u00a0 " + tok + " ", ""},
		{"no header", "", ReasonNoHeader},
		{"basic scheme", "Basic " + tok, ReasonNotBearer},
		{"scheme only", "Bearer", ReasonNotBearer},
		{"three fields", "Bearer " + tok + " extra", ReasonNotBearer},
		{"no scheme", tok, ReasonNotBearer},
		{"scheme glued", "Bearer:" + tok, ReasonNotBearer},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, tc.auth, tc.want) })
	}
}

// Rule 2: the credential is at most 4096 bytes.
func TestRuleCredentialLength(t *testing.T) {
	v := testVerifier(t, Policy{})
	k := testKeys(t)["ed25519"]
	var exact, over string
	for n := 2500; n < 3200 && (exact == "" || over == ""); n++ {
		c, h := validClaims(k), validHeader(t, k)
		c["sub"] = strings.Repeat("s", n)
		h["typ"] = strings.Repeat("J", n%4) // the header's length varies too
		switch tok := token(t, k, h, c); {
		case len(tok) == MaxCredentialBytes:
			exact = tok
		case len(tok) > MaxCredentialBytes && over == "":
			over = tok
		}
	}
	if exact == "" || over == "" {
		t.Fatal("could not build tokens of 4096 and of just over 4096 bytes")
	}
	check(t, v, "Bearer "+exact, "")
	check(t, v, "Bearer "+over, ReasonTooLong)
	// bytes, not characters: 4096 multi-byte characters are far too long
	check(t, v, "Bearer "+strings.Repeat("é", 2049), ReasonTooLong)
}

// Rule 3: a compact JWS, and nothing else.
func TestRuleCompactJWS(t *testing.T) {
	v := testVerifier(t, Policy{})
	k := testKeys(t)["ed25519"]
	tok := validToken(t, k)
	parts := strings.Split(tok, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	unsecured := b64([]byte(`{"alg":"none","kid":"`+sshFingerprint(t, k)+`"}`)) + "." + parts[1] + "."
	for _, tc := range []struct {
		name, tok string
		want      Reason
	}{
		{"two parts", parts[0] + "." + parts[1], ReasonMalformed},
		{"JWE (five parts)", tok + ".a.b", ReasonMalformed},
		{"JSON serialisation", `{"payload":"` + parts[1] + `","signatures":[]}`, ReasonMalformed},
		{"unsecured", unsecured, ReasonAlgorithm},
		{"empty signature", parts[0] + "." + parts[1] + ".", ReasonMalformed},
		{"header not base64url", "!!." + parts[1] + "." + parts[2], ReasonMalformed},
		{"header not JSON", b64([]byte("alg")) + "." + parts[1] + "." + parts[2], ReasonMalformed},
		{"header not an object", b64([]byte(`["alg"]`)) + "." + parts[1] + "." + parts[2], ReasonMalformed},
		{"padded signature", tok + "==", ReasonMalformed},
		{"standard alphabet", parts[0] + "." + parts[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(parts[2]) + "+", ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+tc.tok, tc.want) })
	}
}

// Rule 4: the algorithm allow-list; every allowed algorithm passes with a
// key of its type.
func TestRuleAlgorithms(t *testing.T) {
	v := testVerifier(t, Policy{})
	rsaKey := testKeys(t)["rsa"]
	for _, alg := range []string{"ES256", "ES384", "ES512", "EdDSA", "RS512", "PS512"} {
		t.Run(alg, func(t *testing.T) {
			k := map[string]string{"ES256": "p256", "ES384": "p384", "ES512": "p521", "EdDSA": "ed25519"}[alg]
			if k == "" {
				k = "rsa"
			}
			check(t, v, "Bearer "+edit{key: k, header: set("alg", alg)}.token(t), "")
		})
	}
	for _, alg := range []string{"RS256", "RS384", "PS256", "PS384"} {
		t.Run("refused "+alg, func(t *testing.T) {
			h := validHeader(t, rsaKey)
			h["alg"] = alg
			check(t, v, "Bearer "+token(t, rsaKey, h, validClaims(rsaKey)), ReasonAlgorithm)
		})
	}
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		t.Run("refused "+alg, func(t *testing.T) {
			// HMAC with the public key as secret: the classic confusion attack
			k := testKeys(t)["ed25519"]
			h := validHeader(t, k)
			h["alg"] = alg
			input := base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, h))) + "." + base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, validClaims(k))))
			sig, err := jwt.GetSigningMethod(alg).Sign(input, []byte(k.signer.Public().(ed25519.PublicKey)))
			if err != nil {
				t.Fatal(err)
			}
			check(t, v, "Bearer "+input+"."+base64.RawURLEncoding.EncodeToString(sig), ReasonAlgorithm)
		})
	}
	for _, alg := range []string{"none", "", "eddsa", "ED25519"} {
		t.Run("refused "+alg, func(t *testing.T) {
			check(t, v, "Bearer "+edit{header: set("alg", alg)}.tokenSignedAs(t, "EdDSA"), ReasonAlgorithm)
		})
	}
	t.Run("refused alg missing", func(t *testing.T) {
		check(t, v, "Bearer "+edit{header: del("alg")}.tokenSignedAs(t, "EdDSA"), ReasonAlgorithm)
	})
}

// tokenSignedAs is token() for a header whose alg was removed or changed.
func (e edit) tokenSignedAs(t *testing.T, alg string) string {
	k := testKeys(t)["ed25519"]
	h, c := validHeader(t, k), validClaims(k)
	if e.header != nil {
		e.header(h)
	}
	return signRaw(t, k, alg, mustJSON(t, h), mustJSON(t, c))
}

// Rule 5: no embedded or referenced keys.
func TestRuleHeaderParameters(t *testing.T) {
	v := testVerifier(t, Policy{})
	for _, tc := range []struct {
		name string
		val  any
		want Reason
	}{
		{"jwk", map[string]any{"kty": "OKP"}, ReasonHeaderParameter},
		{"jwk", nil, ReasonHeaderParameter},
		{"x5c", []string{"MIIB"}, ReasonHeaderParameter},
		{"x5c", []string{}, ReasonHeaderParameter},
		{"jku", "https://evil.example/keys", ReasonHeaderParameter},
		{"jku", "", ""},
		{"jku", nil, ""},
		{"x5u", "https://evil.example/cert", ReasonHeaderParameter},
		{"x5u", "", ""},
		{"x5u", nil, ""},
		{"jku", 0, ReasonHeaderParameter},
	} {
		t.Run(tc.name+"="+mustJSON(t, tc.val), func(t *testing.T) {
			check(t, v, "Bearer "+edit{header: set(tc.name, tc.val)}.token(t), tc.want)
		})
	}
}

// Rule 6: the kid picks the key, in either form, for every key type.
func TestRuleKeyID(t *testing.T) {
	v := testVerifier(t, Policy{})
	for name, k := range testKeys(t) {
		tp, err := Thumbprint(k.signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name+" ssh fingerprint", func(t *testing.T) {
			check(t, v, "Bearer "+edit{key: name, header: set("kid", sshFingerprint(t, k))}.token(t), "")
		})
		t.Run(name+" jwk thumbprint", func(t *testing.T) {
			check(t, v, "Bearer "+edit{key: name, header: set("kid", tp)}.token(t), "")
		})
	}
	stranger := &testKey{signer: mustEd25519(t), alg: "EdDSA", user: "user-ed25519"}
	for _, tc := range []struct {
		name string
		tok  func(t *testing.T) string
		want Reason
	}{
		{"no kid", edit{header: del("kid")}.token, ReasonNoKeyID},
		{"empty kid", edit{header: set("kid", "")}.token, ReasonNoKeyID},
		{"kid not a string", edit{header: set("kid", 7)}.token, ReasonNoKeyID},
		{"unknown kid", edit{header: set("kid", "SHA256:AAAA")}.token, ReasonUnknownKey},
		{"fingerprint without prefix", func(t *testing.T) string {
			return edit{header: set("kid", strings.TrimPrefix(sshFingerprint(t, testKeys(t)["ed25519"]), "SHA256:"))}.token(t)
		}, ReasonUnknownKey},
		{"key not in the file", func(t *testing.T) string { return validToken(t, stranger) }, ReasonUnknownKey},
		{"kid of a listed key, signed by another", func(t *testing.T) string {
			return token(t, stranger, validHeader(t, testKeys(t)["ed25519"]), validClaims(testKeys(t)["ed25519"]))
		}, ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+tc.tok(t), tc.want) })
	}
}

// Rule 7: the algorithm must fit the key the kid names.
func TestRuleAlgorithmFitsKey(t *testing.T) {
	v := testVerifier(t, Policy{})
	for _, tc := range []struct{ key, alg string }{
		{"p384", "ES256"}, {"p256", "ES384"}, {"p521", "ES256"},
		{"ed25519", "ES256"}, {"rsa", "EdDSA"}, {"p256", "RS512"}, {"ed25519", "PS512"},
	} {
		t.Run(tc.alg+" with "+tc.key, func(t *testing.T) {
			// the signature is the key's own, only the label differs
			k := testKeys(t)[tc.key]
			h := validHeader(t, k)
			h["alg"] = tc.alg
			tok := signRaw(t, k, k.alg, mustJSON(t, h), mustJSON(t, validClaims(k)))
			check(t, v, "Bearer "+tok, ReasonKeyMismatch)
		})
	}
}

// Rule 8: every claim present.
func TestRuleRequiredClaims(t *testing.T) {
	v := testVerifier(t, Policy{})
	for _, name := range []string{"jti", "iat", "exp", "nbf", "aud", "iss", "sub"} {
		t.Run(name, func(t *testing.T) {
			check(t, v, "Bearer "+edit{claims: del(name)}.token(t), ReasonClaims)
		})
	}
}

// Rule 9: time, with zero clock skew unless a leeway is configured.
func TestRuleTime(t *testing.T) {
	strict := testVerifier(t, Policy{})
	lenient := testVerifier(t, Policy{Leeway: 30 * time.Second})
	now := testNow.Unix()
	times := func(iat, nbf, exp int64) func(map[string]any) {
		return func(c map[string]any) { c["iat"], c["nbf"], c["exp"] = iat, nbf, exp }
	}
	for _, tc := range []struct {
		name          string
		claims        func(map[string]any)
		strict, loose Reason
	}{
		{"expired", times(now-100, now-100, now-1), ReasonExpired, ""},
		{"expires now", times(now-100, now-100, now), ReasonExpired, ""},
		{"expired beyond leeway", times(now-100, now-100, now-30), ReasonExpired, ReasonExpired},
		{"expires in a second", times(now, now, now+1), "", ""},
		{"nbf in the future", times(now, now+1, now+100), ReasonNotYetValid, ""},
		{"iat and nbf in the future", times(now+1, now+1, now+100), ReasonNotYetValid, ""},
		{"nbf beyond leeway", times(now+31, now+31, now+100), ReasonNotYetValid, ReasonNotYetValid},
		{"iat and nbf now", times(now, now, now+100), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := "Bearer " + edit{claims: tc.claims}.token(t)
			check(t, strict, tok, tc.strict)
			check(t, lenient, tok, tc.loose)
		})
	}
	t.Run("fraction of a second", func(t *testing.T) {
		// the fraction is dropped before comparing, and now is whole seconds
		sub := NewVerifier(Policy{Audience: testAudience}, -1, func() time.Time { return testNow.Add(900 * time.Millisecond) })
		sub.SetKeys(testKeySet(t))
		check(t, sub, "Bearer "+edit{claims: times(now, now, now+1)}.token(t), "")
		check(t, sub, "Bearer "+edit{claims: set("exp", float64(now)+0.99)}.token(t), ReasonExpired)
	})
}

// Rule 10: the audience.
func TestRuleAudience(t *testing.T) {
	v := testVerifier(t, Policy{})
	for _, tc := range []struct {
		name string
		aud  any
		want Reason
	}{
		{"string", testAudience, ""},
		{"array holding it", []any{"other", testAudience}, ""},
		{"other string", "other", ReasonAudience},
		{"array without it", []any{"other"}, ReasonAudience},
		{"empty array", []any{}, ReasonAudience},
		{"array with a non-string", []any{testAudience, 1}, ReasonAudience},
		{"null", nil, ReasonAudience},
		{"number", 1, ReasonAudience},
		{"different case", strings.ToUpper(testAudience), ReasonAudience},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+edit{claims: set("aud", tc.aud)}.token(t), tc.want) })
	}
}

// Rule 11: jti is a UUID, in any form a standard parser takes.
func TestRuleJTI(t *testing.T) {
	v := testVerifier(t, Policy{})
	const id = "9a1e4f0c-6f36-4f3c-9b1e-0a8f6b6f2c11"
	for _, tc := range []struct {
		name string
		jti  any
		want Reason
	}{
		{"canonical", id, ""},
		{"upper case", strings.ToUpper(id), ""},
		{"urn prefix", "urn:uuid:" + id, ""},
		{"urn prefix upper case", "URN:UUID:" + id, ""},
		{"braces", "{" + id + "}", ""},
		{"no hyphens", strings.ReplaceAll(id, "-", ""), ""},
		{"nil UUID, any version", "00000000-0000-0000-0000-000000000000", ""},
		{"not a UUID", "token-1", ReasonClaims},
		{"too short", id[:35], ReasonClaims},
		{"number", 12, ReasonClaims},
		{"empty", "", ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+edit{claims: set("jti", tc.jti)}.token(t), tc.want) })
	}
}

// Rules 12 and 13: lifetime at most 1470 minutes; iat not after nbf.
func TestRuleLifetime(t *testing.T) {
	v := testVerifier(t, Policy{})
	now := testNow.Unix()
	max := int64(MaxLifetime / time.Second)
	times := func(iat, nbf, exp int64) func(map[string]any) {
		return func(c map[string]any) { c["iat"], c["nbf"], c["exp"] = iat, nbf, exp }
	}
	for _, tc := range []struct {
		name   string
		claims func(map[string]any)
		want   Reason
	}{
		{"exactly 1470 minutes", times(now, now, now+max), ""},
		{"a second more after nbf and iat", times(now, now, now+max+1), ReasonLifetime},
		{"a second more after iat only", times(now-10, now-9, now-10+max+1), ReasonLifetime},
		{"iat before nbf", times(now-10, now, now+100), ""},
		{"iat after nbf", times(now, now-10, now+100), ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+edit{claims: tc.claims}.token(t), tc.want) })
	}
}

// Rules 14 and 15: sub not empty; iss the user name of the signing key.
func TestRuleSubjectAndIssuer(t *testing.T) {
	v := testVerifier(t, Policy{})
	check(t, v, "Bearer "+edit{claims: set("sub", "")}.token(t), ReasonClaims)
	check(t, v, "Bearer "+edit{claims: set("sub", 5)}.token(t), ReasonClaims)
	check(t, v, "Bearer "+edit{claims: set("iss", "user-p256")}.token(t), ReasonIssuer)
	check(t, v, "Bearer "+edit{claims: set("iss", "USER-ED25519")}.token(t), ReasonIssuer)
	check(t, v, "Bearer "+edit{claims: set("iss", nil)}.token(t), ReasonIssuer)
	g := check(t, v, "Bearer "+validToken(t, testKeys(t)["p256"]), "")
	if g.User != "user-p256" || g.Subject != validClaims(testKeys(t)["p256"])["sub"] || g.JTI == "" {
		t.Fatalf("grant %+v", g)
	}
}

// The node's leniency on dates, which the gateway follows.
func TestDateForms(t *testing.T) {
	v := testVerifier(t, Policy{})
	now := testNow.Unix()
	exp := now + 3600
	for _, tc := range []struct {
		name string
		exp  any
		want Reason
	}{
		{"integer", exp, ""},
		{"fraction", float64(exp) + 0.75, ""},
		{"exponent", rawJSON("1.7953056e9"), ""},
		{"digit string", "1795305600", ""},
		{"RFC 3339 string", testNow.Add(time.Hour).Format(time.RFC3339), ""},
		{"boolean", true, ReasonClaims},
		{"null", nil, ReasonClaims},
		{"absurd", rawJSON("1e300"), ReasonClaims},
		{"exponent beyond float range", rawJSON("1E700000000"), ReasonClaims},
		{"object", map[string]any{}, ReasonClaims},
		{"words", "tomorrow", ReasonClaims},
		{"negative digit string", "-5", ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+edit{claims: set("exp", tc.exp)}.token(t), tc.want) })
	}
}

// rawJSON is a JSON number kept exactly as written.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// Where the node is too lenient, the gateway refuses.
func TestRefusedWhereNodeIsLenient(t *testing.T) {
	v := testVerifier(t, Policy{})
	k := testKeys(t)["ed25519"]
	h, c := mustJSON(t, validHeader(t, k)), mustJSON(t, validClaims(k))
	inner := validToken(t, k)
	for _, tc := range []struct {
		name, header, claims string
		want                 Reason
	}{
		{"b64 false", h[:len(h)-1] + `,"b64":false}`, c, ReasonHeaderParameter},
		{"b64 false with crit", h[:len(h)-1] + `,"b64":false,"crit":["b64"]}`, c, ReasonHeaderParameter},
		{"crit", h[:len(h)-1] + `,"crit":["exp"]}`, c, ReasonHeaderParameter},
		{"nested JWS", h, inner, ReasonMalformed},
		{"nested JWS as JSON string", h, `"` + inner + `"`, ReasonMalformed},
		{"duplicate header member", h[:len(h)-1] + `,"alg":"EdDSA"}`, c, ReasonMalformed},
		{"duplicate claim", h, c[:len(c)-1] + `,"iss":"user-ed25519"}`, ReasonMalformed},
		{"duplicate nested member", h, c[:len(c)-1] + `,"x":{"a":1,"a":2}}`, ReasonMalformed},
		{"data after the claims", h, c + `{}`, ReasonMalformed},
		{"garbage after the claims", h, c + `x`, ReasonMalformed},
		{"invalid UTF-8", h, c[:len(c)-1] + ",\"x\":\"\xff\"}", ReasonMalformed},
		{"white space after the claims", h, c + " \n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check(t, v, "Bearer "+signRaw(t, k, "EdDSA", tc.header, tc.claims), tc.want)
		})
	}
}

// ECDSA signatures with a high S value verify, as at the node.
func TestHighSSignature(t *testing.T) {
	v := testVerifier(t, Policy{})
	k := testKeys(t)["p256"]
	parts := strings.Split(validToken(t, k), ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	n := k.signer.(*ecdsa.PrivateKey).Curve.Params().N
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(n, s)
	high := make([]byte, 64)
	copy(high, sig[:32])
	s.FillBytes(high[32:])
	check(t, v, "Bearer "+parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(high), "")
	high[40] ^= 1
	check(t, v, "Bearer "+parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(high), ReasonSignature)
}

// A tampered payload fails the signature check, for every key type.
func TestTamperedToken(t *testing.T) {
	v := testVerifier(t, Policy{})
	for name, k := range testKeys(t) {
		t.Run(name, func(t *testing.T) {
			parts := strings.Split(validToken(t, k), ".")
			c := validClaims(k)
			c["sub"] = "someone-else"
			forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, c))) + "." + parts[2]
			check(t, v, "Bearer "+forged, ReasonSignature)
		})
	}
}

func TestCache(t *testing.T) {
	now := testNow
	v := NewVerifier(Policy{Audience: testAudience}, 2, func() time.Time { return now })
	v.SetKeys(testKeySet(t))
	keys := testKeys(t)
	tok := "Bearer " + validToken(t, keys["ed25519"])
	if g := check(t, v, tok, ""); g.Cached {
		t.Fatal("first use reported as cached")
	}
	if g := check(t, v, tok, ""); !g.Cached || g.User != "user-ed25519" {
		t.Fatalf("second use: %+v, want cached grant", g)
	}
	// the cache is bounded: two more tokens push out entries
	check(t, v, "Bearer "+validToken(t, keys["p256"]), "")
	check(t, v, "Bearer "+validToken(t, keys["p384"]), "")
	if n := len(v.state.Load().seen); n > 2 {
		t.Fatalf("cache holds %d tokens, bound is 2", n)
	}
	// a cached token stops at exp
	check(t, v, tok, "")
	check(t, v, tok, "")
	now = testNow.Add(time.Hour)
	check(t, v, tok, ReasonExpired)
	// a new key set forgets verified tokens
	now = testNow
	check(t, v, tok, "")
	ks, _, err := ParseAuthorizedKeys([]byte(authorizedKeyLine(t, keys["p256"])))
	if err != nil {
		t.Fatal(err)
	}
	v.SetKeys(ks)
	check(t, v, tok, ReasonUnknownKey)
}

func TestCacheKeyIsWholeToken(t *testing.T) {
	v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return testNow })
	v.SetKeys(testKeySet(t))
	tok := validToken(t, testKeys(t)["ed25519"])
	check(t, v, "Bearer "+tok, "")
	// the same claims with a broken signature are not served from the cache
	i := len(tok) - 10 // inside the signature
	other := "A"
	if tok[i] == 'A' {
		other = "B"
	}
	check(t, v, "Bearer "+tok[:i]+other+tok[i+1:], ReasonSignature)
	if _, ok := v.state.Load().seen[sha256.Sum256([]byte(tok))]; !ok {
		t.Fatal("the verified token is not cached")
	}
}

func mustEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signPSS signs a valid token of the RSA test key with PS512 and the given
// PSS salt length.
func signPSS(t *testing.T, saltLength int) string {
	t.Helper()
	k := testKeys(t)["rsa"]
	input := base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, validHeader(t, k)))) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, validClaims(k))))
	sum := sha512.Sum512([]byte(input))
	sig, err := rsa.SignPSS(rand.Reader, k.signer.(*rsa.PrivateKey), crypto.SHA512, sum[:], &rsa.PSSOptions{SaltLength: saltLength})
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Parity: the node verifies PS512 with a salt as long as the hash (64
// bytes) and refuses any other salt length.
func TestPS512SaltLength(t *testing.T) {
	v := testVerifier(t, Policy{})
	for _, tc := range []struct {
		name string
		salt int
		want Reason
	}{
		{"salt equals hash", rsa.PSSSaltLengthEqualsHash, ""},
		{"salt 64", 64, ""},
		{"salt 0", 0, ReasonSignature},
		{"salt 32", 32, ReasonSignature},
		{"salt 65", 65, ReasonSignature},
		{"salt maximum", rsa.PSSSaltLengthAuto, ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, v, "Bearer "+signPSS(t, tc.salt), tc.want) })
	}
}

// Parity: the node reads the registered header parameters it knows into
// typed fields, so one of the wrong JSON type refuses the token; null is
// the same as absent.
func TestHeaderParameterTypes(t *testing.T) {
	v := testVerifier(t, Policy{})
	for _, tc := range []struct {
		name string
		val  any
		want Reason
	}{
		{"typ", "JWT", ""},
		{"typ", "at+jwt", ""},
		{"typ", nil, ""},
		{"typ", 1, ReasonHeaderParameter},
		{"typ", true, ReasonHeaderParameter},
		{"typ", []string{"JWT"}, ReasonHeaderParameter},
		{"typ", map[string]any{}, ReasonHeaderParameter},
		{"cty", "JWT", ""},
		{"cty", nil, ""},
		{"cty", 1, ReasonHeaderParameter},
		{"x5t", "abc", ""},
		{"x5t", 1, ReasonHeaderParameter},
		{"x5t#S256", "abc", ""},
		{"x5t#S256", false, ReasonHeaderParameter},
		{"kid", 1, ReasonNoKeyID},
		{"jku", []string{}, ReasonHeaderParameter},
		{"x5u", 1, ReasonHeaderParameter},
		{"private", 1, ""},
	} {
		t.Run(tc.name+"="+mustJSON(t, tc.val), func(t *testing.T) {
			check(t, v, "Bearer "+edit{header: set(tc.name, tc.val)}.token(t), tc.want)
		})
	}
}

// Parity: a date as a digit string may have a fraction, dropped as for
// numbers.
func TestDateDigitStringFraction(t *testing.T) {
	v := testVerifier(t, Policy{})
	now := testNow.Unix()
	for _, tc := range []struct {
		name, claim, val string
		want             Reason
	}{
		{"exp with fraction", "exp", strconv.FormatInt(now+3600, 10) + ".5", ""},
		{"exp with trailing dot", "exp", strconv.FormatInt(now+3600, 10) + ".", ""},
		{"nbf with fraction", "nbf", strconv.FormatInt(now, 10) + ".999", ""},
		{"exp fraction dropped", "exp", strconv.FormatInt(now, 10) + ".9", ReasonExpired},
		{"nbf fraction dropped", "nbf", strconv.FormatInt(now+1, 10) + ".1", ReasonNotYetValid},
		{"leading dot", "exp", ".5", ReasonClaims},
		{"two dots", "exp", strconv.FormatInt(now+3600, 10) + ".5.5", ReasonClaims},
		{"letters in fraction", "exp", strconv.FormatInt(now+3600, 10) + ".5x", ReasonClaims},
		{"exponent", "exp", "1.7953056e9", ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check(t, v, "Bearer "+edit{claims: set(tc.claim, tc.val)}.token(t), tc.want)
		})
	}
}
