package tokenv2

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/ssh"
)

// privateKeyForms returns k's private key in every form ParsePrivateKey
// reads.
func privateKeyForms(t testing.TB, k *testKey) map[string][]byte {
	t.Helper()
	forms := make(map[string][]byte)
	block, err := ssh.MarshalPrivateKey(k.signer, k.user)
	if err != nil {
		t.Fatal(err)
	}
	forms["openssh"] = pem.EncodeToMemory(block)
	der, err := x509.MarshalPKCS8PrivateKey(k.signer)
	if err != nil {
		t.Fatal(err)
	}
	forms["pkcs8"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	switch key := k.signer.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		forms["sec1"] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	case *rsa.PrivateKey:
		forms["pkcs1"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	}
	jwk, err := json.Marshal(jose.JSONWebKey{Key: k.signer})
	if err != nil {
		t.Fatal(err)
	}
	forms["jwk"] = jwk
	return forms
}

func TestMintPassesVerifier(t *testing.T) {
	v := testVerifier(t, Policy{})
	for name, k := range testKeys(t) {
		for form, data := range privateKeyForms(t, k) {
			t.Run(name+" "+form, func(t *testing.T) {
				signer, err := ParsePrivateKey(data)
				if err != nil {
					t.Fatal(err)
				}
				tok, err := Mint(MintRequest{Key: signer, Issuer: k.user, Subject: "s", Audience: testAudience, TTL: time.Hour, Now: testNow})
				if err != nil {
					t.Fatal(err)
				}
				g := check(t, v, "Bearer "+tok, "")
				if g.User != k.user || g.Subject != "s" || !g.Expiry.Equal(testNow.Add(time.Hour)) {
					t.Fatalf("grant %+v", g)
				}
				h, _ := decodePart(strings.Split(tok, ".")[0], "header")
				var alg, kid string
				_ = json.Unmarshal(h["alg"], &alg)
				_ = json.Unmarshal(h["kid"], &kid)
				if alg != k.alg || kid != sshFingerprint(t, k) {
					t.Fatalf("alg %s kid %s, want %s %s", alg, kid, k.alg, sshFingerprint(t, k))
				}
			})
		}
	}
	t.Run("RS512", func(t *testing.T) {
		tok, err := Mint(MintRequest{Key: testKeys(t)["rsa"].signer, Issuer: "user-rsa", Subject: "s", Audience: testAudience, TTL: time.Hour, RS512: true, Now: testNow})
		if err != nil {
			t.Fatal(err)
		}
		check(t, v, "Bearer "+tok, "")
		if !strings.HasPrefix(tok, "eyJhbGciOiJSUzUxMiIs") { // {"alg":"RS512",
			t.Fatalf("token %s is not RS512", tok[:30])
		}
	})
}

func TestMintRefuses(t *testing.T) {
	k := testKeys(t)["ed25519"]
	ok := MintRequest{Key: k.signer, Issuer: "i", Subject: "s", Audience: "a", TTL: time.Hour}
	for _, tc := range []struct {
		name string
		edit func(*MintRequest)
	}{
		{"ttl over 24h", func(r *MintRequest) { r.TTL = 24*time.Hour + time.Second }},
		{"ttl zero", func(r *MintRequest) { r.TTL = 0 }},
		{"no issuer", func(r *MintRequest) { r.Issuer = "" }},
		{"no subject", func(r *MintRequest) { r.Subject = "" }},
		{"no audience", func(r *MintRequest) { r.Audience = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.edit(&r)
			if tok, err := Mint(r); err == nil {
				t.Fatalf("minted %s", tok)
			}
		})
	}
	ok.TTL = 24 * time.Hour
	if _, err := Mint(ok); err != nil {
		t.Fatalf("24h refused: %v", err)
	}
}

func TestParseKeysRefuses(t *testing.T) {
	k := testKeys(t)["ed25519"]
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: k.signer.Public()})
	encrypted, err := ssh.MarshalPrivateKeyWithPassphrase(k.signer, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":      nil,
		"garbage":    []byte("hello"),
		"public JWK": pubJWK,
		"bad JWK":    []byte(`{"kty":"EC"}`),
		"passphrase": pem.EncodeToMemory(encrypted),
		"public key": []byte(authorizedKeyLine(t, k)),
	} {
		if _, err := ParsePrivateKey(data); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line", name, err)
		}
	}
	if _, err := ParsePublicKey([]byte("hello")); err == nil {
		t.Error("garbage parsed as a public key")
	}
}

func TestAuthorizedKeyLineRoundTrip(t *testing.T) {
	for name, k := range testKeys(t) {
		pkix, err := x509.MarshalPKIXPublicKey(k.signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: k.signer.Public()})
		inputs := privateKeyForms(t, k)
		inputs["pkix pem"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})
		inputs["public jwk"] = pubJWK
		inputs["authorized_keys"] = []byte(authorizedKeyLine(t, k))
		for form, data := range inputs {
			pub, err := ParsePublicKey(data)
			if err != nil {
				t.Fatalf("%s %s: %v", name, form, err)
			}
			line, err := AuthorizedKeyLine(pub, "op")
			if err != nil {
				t.Fatal(err)
			}
			ks, _, err := ParseAuthorizedKeys([]byte(line))
			if err != nil || ks.Len() != 1 || ks.Keys()[0].User != "op" || ks.Keys()[0].SSHFingerprint != sshFingerprint(t, k) {
				t.Fatalf("%s %s: line %q does not give back the key", name, form, line)
			}
		}
	}
	if _, err := AuthorizedKeyLine(testKeys(t)["p256"].signer.Public(), "a#b"); err == nil {
		t.Fatal("a user name with '#' was accepted")
	}
}
