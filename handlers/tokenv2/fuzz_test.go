package tokenv2

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseAuthorizedKeys: any input either fails with a line number inside
// the file, or gives keys that each have a user name and are found by both
// of their key IDs.
func FuzzParseAuthorizedKeys(f *testing.F) {
	k := testKeys(f)
	for _, name := range []string{"ed25519", "p256", "rsa"} {
		f.Add([]byte(authorizedKeyLine(f, k[name])))
	}
	f.Add([]byte("# comment\n\n" + authorizedKeyLine(f, k["p384"]) + "#x\nno-pty " + authorizedKeyLine(f, k["p521"])))
	f.Add([]byte("ssh-ed25519 !!! user"))
	f.Add([]byte(`command="a b" ssh-rsa AAAA user`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, warnings, err := ParseAuthorizedKeys(data)
		lines := strings.Count(string(data), "\n") + 1
		if err != nil {
			pe, ok := err.(*ParseError)
			if !ok || pe.Line < 1 || pe.Line > lines {
				t.Fatalf("error %v does not name a line of the file", err)
			}
			return
		}
		for _, w := range warnings {
			if w.Line < 1 || w.Line > lines {
				t.Fatalf("warning on line %d of %d", w.Line, lines)
			}
		}
		for _, key := range ks.Keys() {
			if key.User == "" || strings.Contains(key.User, "#") {
				t.Fatalf("key of line %d has user %q", key.Line, key.User)
			}
			for _, kid := range []string{key.SSHFingerprint, key.Thumbprint} {
				if got, ok := ks.Lookup(kid); !ok || got.SSHFingerprint != key.SSHFingerprint {
					t.Fatalf("kid %s does not find the key of line %d", kid, key.Line)
				}
			}
		}
	})
}

// FuzzVerify: no input panics, every outcome is a grant or a Refusal, and
// a grant names the user of a listed key and is given again for the same
// input. Without the private keys the fuzzer can only keep or break the
// seeds' signatures, so grants come from seeds and from the freedom a
// verifier leaves (white space, scheme case).
func FuzzVerify(f *testing.F) {
	for _, k := range testKeys(f) {
		f.Add("Bearer " + validToken(f, k))
	}
	k := testKeys(f)["ed25519"]
	f.Add("bearer\t" + token(f, k, validHeader(f, k), map[string]any{"iss": k.user, "sub": "s", "aud": []any{testAudience}, "jti": "urn:uuid:9a1e4f0c-6f36-4f3c-9b1e-0a8f6b6f2c11", "iat": "1795262400", "nbf": 1795262400.5, "exp": "2026-11-21T13:00:00Z"}))
	f.Add("Bearer " + signRaw(f, k, "EdDSA", mustJSON(f, validHeader(f, k)), `{"a":{"b":[1,{"c":null}]}}`))
	f.Add("Basic abc")
	v := testVerifier(f, Policy{})
	f.Fuzz(func(t *testing.T, auth string) {
		g, err := v.Verify(auth)
		if err != nil {
			if _, ok := err.(*Refusal); !ok {
				t.Fatalf("error %v is not a Refusal", err)
			}
			return
		}
		if _, ok := map[string]bool{"user-ed25519": true, "user-p256": true, "user-p384": true, "user-p521": true, "user-rsa": true}[g.User]; !ok {
			t.Fatalf("granted to %q", g.User)
		}
		if g2, err := v.Verify(auth); err != nil || g2 != g {
			t.Fatalf("second verification differs: %+v %v", g2, err)
		}
	})
}

// FuzzParseObject: what the strict parser accepts is valid UTF-8 JSON whose
// object encoding/json reads with the same member names.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":[1,2,{"c":true}]}}`, `{"a":1}x`, `[1]`, `{"a":"\ud800"}`, " {\"a\" : null} \n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := parseObject(data)
		if err != nil {
			return
		}
		var m map[string]any
		if !utf8.Valid(data) || json.Unmarshal(data, &m) != nil || len(m) != len(obj) {
			t.Fatalf("accepted %q, which encoding/json reads differently", data)
		}
	})
}

// FuzzParseDate: a date is accepted only within the years 1 to 9999.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{`1795262400`, `1795262400.9`, `1.7e9`, `"1795262400"`, `"2026-11-21T12:00:00Z"`, `true`, `null`, `1e400`, `-1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		secs, err := parseDate(raw)
		if err == nil && (secs < minDate || secs > maxDate) {
			t.Fatalf("%q gave %d, out of range", raw, secs)
		}
	})
}
