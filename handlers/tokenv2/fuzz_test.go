package tokenv2

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
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

// FuzzFromPatterns checks that any from= pattern list either is refused
// with an error or parses into a list that decides any address without
// panicking, and that a negated pattern matching the address always
// refuses it.
func FuzzFromPatterns(f *testing.F) {
	for _, s := range []string{"*.sales.example.net,!pc.sales.example.net", "10.0.0.0/8,!10.1.2.3", "192.168.0.?", "*", "!*", "::1", "2001:db8::/32", "::ffff:10.0.0.0/104", "a**?*b", ""} {
		f.Add(s, []byte{10, 1, 2, 3})
	}
	f.Fuzz(func(t *testing.T, list string, raw []byte) {
		fp, err := ParseFromPatterns(list)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		addr, ok := netip.AddrFromSlice(raw)
		if !ok {
			addr = netip.MustParseAddr("10.1.2.3")
		}
		if neg, err := ParseFromPatterns("!" + list); err == nil && strings.Count(list, ",") == 0 && neg.Allows(addr) {
			t.Fatalf("!%q allows %s", list, addr)
		}
		if fp.Allows(netip.Addr{}) {
			t.Fatalf("%q allows an unknown address", list)
		}
		// The wildcard matcher agrees with a regular expression.
		re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(list)) + "$"
		text := addr.Unmap().String()
		if m, err := regexp.MatchString("(?s)"+re, text); err == nil && m != wildcardMatch(list, text) {
			t.Fatalf("wildcardMatch(%q, %q) = %v, regexp says %v", list, text, !m, m)
		}
	})
}

// FuzzParseExpiryTime checks that any timespec is refused with an error or
// read as a time that formats back to the same digits.
func FuzzParseExpiryTime(f *testing.F) {
	for _, s := range []string{"20301231", "20301231Z", "203012312359", "20301231235959UTC", "20300230", "2030123z", "99991231235959Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		tm, err := ParseExpiryTime(spec, time.UTC)
		if err != nil {
			return
		}
		digits := strings.TrimRight(strings.ToUpper(spec), "ZUTC")
		layout := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}[len(digits)]
		if layout == "" || tm.Format(layout) != digits {
			t.Fatalf("%q read as %v", spec, tm)
		}
	})
}
