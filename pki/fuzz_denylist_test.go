package pki

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"math/big"
	"testing"
)

// dlFuzzKey is a fixed signer for the fuzz targets, so that a seed signed with it stays valid
// across runs of the corpus.
var dlFuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// dlCheckList asserts what every list ParseDenylist or parseEntries returns must satisfy, and
// that looking certificates up in it does not fail.
func dlCheckList(t *testing.T, entries []DenyEntry) {
	t.Helper()
	for i, e := range entries {
		if e.Issuer == "" || e.SerialNumber == "" || e.JWKThumbprint == "" {
			t.Fatalf("entry %d lacks a field: %+v", i, e)
		}
		n, ok := new(big.Int).SetString(e.SerialNumber, 10)
		if !ok || n.String() != e.SerialNumber {
			t.Fatalf("entry %d: serialnumber %q is not a canonical decimal integer", i, e.SerialNumber)
		}
		if !isThumbprint(e.JWKThumbprint) {
			t.Fatalf("entry %d: jwkthumbprint %q", i, e.JWKThumbprint)
		}
	}
	l := newDenylist(entries)
	if l.Len() != len(entries) {
		t.Fatalf("Len() = %d, want %d", l.Len(), len(entries))
	}
	for _, e := range entries {
		if len(l.bySerial[e.SerialNumber]) == 0 {
			t.Fatalf("serial %s not indexed", e.SerialNumber)
		}
	}
}

// FuzzParseDenylist feeds arbitrary bytes to ParseDenylist (with the fixed fuzz key as signer):
// it must never panic, and a list it accepts has only well-formed entries.
func FuzzParseDenylist(f *testing.F) {
	f.Add(dlReadFixture(f, "denylist.jws"))
	ca, caKey := dlCA(f, "Test Network CA")
	leaf := dlLeaf(f, ca, caKey, big.NewInt(1001), dlKey(f))
	f.Add(dlSignEntries(f, dlFuzzKey, dlEntry(f, leaf, "compromised"), dlEntry(f, ca, "")))
	f.Add(dlSignEntries(f, dlFuzzKey))
	f.Add([]byte(dlSign(f, dlFuzzKey, "EdDSA", []byte(`[{"issuer":"CN=x","serialnumber":"1","jwkthumbprint":"x"}]`), nil)))
	f.Add(dlRawJWS(`{"alg":"EdDSA","kid":"k","typ":"JWT"}`, `[]`, func(in []byte) []byte { return ed25519.Sign(dlFuzzKey, in) }))
	f.Add([]byte("eyJhbGciOiJub25lIn0.W10."))
	pub := dlFuzzKey.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, jws []byte) {
		l, err := ParseDenylist(jws, pub)
		if err != nil {
			if l != nil {
				t.Fatal("a list returned with an error")
			}
			return
		}
		dlCheckList(t, l.Entries())
		l.Bans(leaf)
		l.Bans(ca)
	})
}

// FuzzDenylistPayload feeds arbitrary payloads to parseEntries, which ParseDenylist calls once
// the signature verifies: it must never panic, and the entries it returns are well-formed.
func FuzzDenylistPayload(f *testing.F) {
	ca, caKey := dlCA(f, "Test Network CA")
	leaf := dlLeaf(f, ca, caKey, big.NewInt(1001), dlKey(f))
	entries := []DenyEntry{dlEntry(f, leaf, "compromised"), dlEntry(f, ca, "")}
	payload, err := json.Marshal(entries)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(payload)
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"issuer":"CN=x","serialnumber":"-12","jwkthumbprint":"sVL9nJQu8nnBA3oZGwgryy8xGHMZNk_Amgkl12T-W-I","extra":{"a":[1,{}]}}]`))
	f.Add([]byte(`[{"issuer":"CN=x","issuer":"CN=y"}]`))
	f.Add([]byte(`[null, 1, "x", [], {}]`))
	f.Add([]byte(`{"issuer":"CN=x"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := parseEntries(payload)
		if err != nil {
			if got != nil {
				t.Fatal("entries returned with an error")
			}
			return
		}
		dlCheckList(t, got)
		l := newDenylist(got)
		l.Bans(leaf)
		l.Bans(ca)
		if !json.Valid(payload) {
			t.Fatal("accepted invalid JSON")
		}
	})
}
