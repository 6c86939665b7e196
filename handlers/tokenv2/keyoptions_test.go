package tokenv2

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The examples of the OpenSSH server manual (AUTHORIZED_KEYS FILE FORMAT) and
// of ssh_config(5) PATTERNS, and the forms a client address takes, with host
// names never looked up.
func TestFromPatterns(t *testing.T) {
	for _, tc := range []struct {
		list string
		addr string
		want bool
	}{
		// The manual's example: host names never match, so it allows no one.
		{"*.sales.example.net,!pc.sales.example.net", "10.0.0.1", false},
		{"*.sales.example.net,!pc.sales.example.net", "192.0.2.7", false},
		{"10.0.0.0/8,!10.1.2.3", "10.9.8.7", true},
		{"10.0.0.0/8,!10.1.2.3", "10.1.2.3", false},
		{"10.0.0.0/8,!10.1.2.3", "11.0.0.1", false},
		// ssh_config(5): 192.168.0.? matches 192.168.0.[0-9].
		{"192.168.0.?", "192.168.0.7", true},
		{"192.168.0.?", "192.168.0.17", false},
		{"192.168.2.*", "192.168.2.200", true},
		{"192.168.2.*", "192.168.3.2", false},
		{"*", "203.0.113.9", true},
		{"*", "2001:db8::1", true},
		{"!*", "203.0.113.9", false},
		{"*,!203.0.113.9", "203.0.113.9", false},
		{"!203.0.113.9,*", "203.0.113.9", false},
		{"!203.0.113.9,*", "203.0.113.8", true},
		{"!10.0.0.0/8", "192.0.2.1", false}, // only negations: matches nothing
		{"!10.0.0.1,!10.0.0.2", "192.0.2.1", false},
		{"127.0.0.2", "127.0.0.2", true},
		{"127.0.0.2", "127.0.0.3", false},
		{"127.0.0.0/31", "127.0.0.1", true},
		{"127.0.0.0/31", "127.0.0.2", false},
		{"0.0.0.0/0", "8.8.8.8", true},
		{"0.0.0.0/0", "::1", false},
		{"::1", "::1", true},
		{"2001:db8::/32", "2001:db8:1::5", true},
		{"2001:db8::/32", "2001:db9::5", false},
		{"2001:DB8::*", "2001:db8::ab", true},
		{"::ffff:10.0.0.0/104", "10.1.1.1", true},
		{"10.0.0.1", "::ffff:10.0.0.1", true},
		{"localhost", "127.0.0.1", false},
		{"10.0.0.*", "10.0.0.5", true},
		{"10.0.0.*", "10.0.1.5", false},
		{"*0.0.1", "10.0.0.1", true},
		{"1?.0.0.1", "10.0.0.1", true},
		{"1?.0.0.1", "1.0.0.1", false},
	} {
		t.Run(tc.list+"@"+tc.addr, func(t *testing.T) {
			f, err := ParseFromPatterns(tc.list)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Allows(netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Fatalf("Allows(%s) = %v, want %v", tc.addr, got, tc.want)
			}
		})
	}
	f, _ := ParseFromPatterns("*")
	if f.Allows(netip.Addr{}) {
		t.Fatal("an unknown client address passed from=\"*\"")
	}
}

func TestFromPatternsInvalid(t *testing.T) {
	for _, list := range []string{
		"", ",", "10.0.0.1,", ",10.0.0.1", "!", "10.0.0.1,!",
		"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/8x", "10.1.2.3/8", "host/8", "::1/129", "10.0.0.0/-1",
		"10.0.0.1 ", "a b", `"x"`, "fe80::1%eth0", "10.0.0.1;", "é",
	} {
		if _, err := ParseFromPatterns(list); err == nil {
			t.Errorf("%q parsed, want an error", list)
		}
	}
}

func TestParseExpiryTime(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		spec string
		want time.Time
	}{
		{"20301231", time.Date(2030, 12, 31, 0, 0, 0, 0, cet)},
		{"20301231Z", time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)},
		{"20301231z", time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)},
		{"20301231UTC", time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)},
		{"203012312359", time.Date(2030, 12, 31, 23, 59, 0, 0, cet)},
		{"203012312359Z", time.Date(2030, 12, 31, 23, 59, 0, 0, time.UTC)},
		{"20301231235958", time.Date(2030, 12, 31, 23, 59, 58, 0, cet)},
		{"20240229Z", time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
	} {
		got, err := ParseExpiryTime(tc.spec, cet)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.spec, got, err, tc.want)
		}
	}
	for _, spec := range []string{
		"", "Z", "UTC", "2030123", "203012310", "2030123123", "2030-12-31", "20301331", "20300230", "20230229",
		"203012312460", "203012312400", "20301231235960", "+0301231", "20301231 ", "20301231ZZ", "20301231Zulu",
		"2030123１", "x0301231",
	} {
		if got, err := ParseExpiryTime(spec, cet); err == nil {
			t.Errorf("%q parsed as %v, want an error", spec, got)
		}
	}
}

// An option the gateway cannot read makes its line invalid; other options
// are ignored; key_options ignore reads none of them.
func TestAuthorizedKeysOptions(t *testing.T) {
	k := testKeys(t)["ed25519"]
	key := authorizedKeyLine(t, k)
	for _, tc := range []struct {
		options string
		err     string // "" if the line is valid
		from    string
		expires time.Time
	}{
		{`from="10.0.0.0/8,!10.1.2.3"`, "", "10.0.0.0/8,!10.1.2.3", time.Time{}},
		{`FROM="127.0.0.1"`, "", "127.0.0.1", time.Time{}},
		{`expiry-time="20301231Z"`, "", "", time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)},
		{`expiry-time="20301231Z",expiry-time="20291231Z"`, "", "", time.Date(2029, 12, 31, 0, 0, 0, 0, time.UTC)},
		{`no-pty,from="*.example.net",command="echo a,b",restrict`, "", "*.example.net", time.Time{}},
		{`environment="X=\"1\""`, "", "", time.Time{}},
		{`from="10.0.0.1",from="10.0.0.2"`, "from= given twice", "", time.Time{}},
		{`from="10.1.2.3/8"`, "host bits", "", time.Time{}},
		{`from="10.0.0.1,,10.0.0.2"`, "empty pattern", "", time.Time{}},
		{`from=10.0.0.1`, "not in double quotes", "", time.Time{}},
		{`from=""`, "empty pattern", "", time.Time{}},
		{`from="10.0.0.1"x`, "after the closing quote", "", time.Time{}},
		{`expiry-time="2030"`, "not YYYYMMDD", "", time.Time{}},
		{`expiry-time="20301301"`, "not a valid date", "", time.Time{}},
		{`expiry-time=20301231`, "not in double quotes", "", time.Time{}},
		{`from="10.0.0.1`, "not an authorized_keys entry", "", time.Time{}},
	} {
		t.Run(tc.options, func(t *testing.T) {
			data := []byte("\n" + tc.options + " " + key + "\n")
			ks, _, err := parseAuthorizedKeys(data, true, time.UTC)
			if tc.err != "" {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Line != 2 || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want line 2: ...%s...", err, tc.err)
				}
			} else {
				if err != nil || ks.Len() != 1 {
					t.Fatalf("%v, %d keys", err, ks.Len())
				}
				got := ks.Keys()[0]
				if (got.From == nil) != (tc.from == "") || got.From != nil && got.From.String() != tc.from {
					t.Errorf("from %v, want %q", got.From, tc.from)
				}
				if !got.Expires.Equal(tc.expires) {
					t.Errorf("expires %v, want %v", got.Expires, tc.expires)
				}
			}
			// key_options ignore: as the node, options are not read.
			ks, _, err = parseAuthorizedKeys(data, false, time.UTC)
			if tc.err == "not an authorized_keys entry" {
				if err == nil {
					t.Fatal("an unterminated quote parsed with options ignored")
				}
				return
			}
			if err != nil || ks.Len() != 1 || ks.Keys()[0].From != nil || !ks.Keys()[0].Expires.IsZero() {
				t.Fatalf("options ignored: %v, %d keys", err, ks.Len())
			}
		})
	}
}

// from= and expiry-time= are applied on every request, remembered tokens
// included; expiry-time ends the remembered grant.
func TestVerifyKeyOptions(t *testing.T) {
	k := testKeys(t)["ed25519"]
	now := testNow
	clock := func() time.Time { return now }
	line := `from="10.0.0.0/8,!10.1.2.3",expiry-time="20261121120010Z" ` + authorizedKeyLine(t, k)
	v := NewVerifier(Policy{Audience: testAudience}, 0, clock)
	ks, _, err := parseAuthorizedKeys([]byte(line), true, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	v.SetKeys(ks)
	auth := "Bearer " + validToken(t, k)
	verify := func(addr string, want Reason) Grant {
		t.Helper()
		g, err := v.VerifyFrom(context.Background(), auth, netip.MustParseAddr(addr))
		var r *Refusal
		switch {
		case want == "" && err != nil:
			t.Fatalf("from %s: refused (%v), want granted", addr, err)
		case want != "" && (!errors.As(err, &r) || r.Reason != want || g != (Grant{})):
			t.Fatalf("from %s: %+v, %v; want refusal %s", addr, g, err, want)
		}
		return g
	}
	verify("10.9.9.9", "")
	if g := verify("10.9.9.9", ""); !g.Cached {
		t.Fatal("second grant not from the cache")
	}
	verify("10.1.2.3", ReasonKeyFrom) // cached token, excluded address
	verify("192.0.2.1", ReasonKeyFrom)
	if _, err := v.Verify(auth); err != nil {
		t.Fatalf("Verify without an address: %v", err)
	}
	now = testNow.Add(10 * time.Second) // the last second of the key
	verify("10.9.9.9", "")
	now = testNow.Add(11 * time.Second)
	verify("10.9.9.9", ReasonKeyExpired)
	if _, err := v.Verify(auth); err == nil {
		t.Fatal("Verify granted a token of an expired key")
	}
	if n := len(v.state.Load().seen); n != 0 {
		t.Fatalf("%d grants still remembered after the key expired", n)
	}

	// Options ignored: the node's behaviour.
	ks, _, _ = parseAuthorizedKeys([]byte(line), false, time.UTC)
	v.SetKeys(ks)
	verify("10.1.2.3", "")
	verify("192.0.2.1", "")
}

// A forged token that names a key whose from= or expiry-time= refuses the
// request is refused for that, before any signature check: both are cheap.
func TestKeyOptionsBeforeSignature(t *testing.T) {
	k := testKeys(t)["p521"]
	for _, tc := range []struct {
		options string
		want    Reason
	}{
		{`from="10.0.0.0/8"`, ReasonKeyFrom},
		{`expiry-time="20200101Z"`, ReasonKeyExpired},
	} {
		v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return testNow })
		ks, _, err := parseAuthorizedKeys([]byte(tc.options+" "+authorizedKeyLine(t, k)), true, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		v.SetKeys(ks)
		_, err = v.VerifyFrom(context.Background(), "Bearer "+forged(t, k, freshClaims(k)), netip.MustParseAddr("192.0.2.1"))
		var r *Refusal
		if !errors.As(err, &r) || r.Reason != tc.want {
			t.Errorf("%s: %v, want %s", tc.options, err, tc.want)
		}
		if n := v.SignatureChecks(); n != 0 {
			t.Errorf("%s: %d signature checks, want 0", tc.options, n)
		}
	}
}
