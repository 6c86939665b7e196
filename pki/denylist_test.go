package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The test helpers of this file start with "dl" so that they cannot collide with the other
// tests of package pki.

const dlFixtureDir = "testdata/nuts-denylist"

func dlReadFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dlFixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dlFixtureCert(t testing.TB) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(dlReadFixture(t, "Nuts_Development_Network_Root_CA_14349442077069222823.crt"))
	if block == nil {
		t.Fatal("fixture certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// dlSigner returns a fresh Ed25519 key pair to sign test lists with.
func dlSigner(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// dlSign signs payload with go-jose as a compact JWS, with extra protected headers if given.
func dlSign(t testing.TB, key any, alg jose.SignatureAlgorithm, payload []byte, opts *jose.SignerOptions) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dlSignEntries signs a list of entries as the Nuts network does: header {"alg":"EdDSA"}.
func dlSignEntries(t testing.TB, priv ed25519.PrivateKey, entries ...DenyEntry) []byte {
	t.Helper()
	if entries == nil {
		entries = []DenyEntry{}
	}
	payload, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(dlSign(t, priv, jose.EdDSA, payload, nil))
}

// dlRawJWS builds a compact JWS by hand from a header and payload as given, signed with sign
// (which gets the signing input).
func dlRawJWS(header, payload string, sign func(input []byte) []byte) []byte {
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(payload))
	return []byte(input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input))))
}

func dlParse(t testing.TB, jws []byte, signer ed25519.PublicKey) *Denylist {
	t.Helper()
	l, err := ParseDenylist(jws, signer)
	if err != nil {
		t.Fatalf("ParseDenylist: %v", err)
	}
	return l
}

// dlCA makes a self-signed ECDSA P-256 CA with common name cn.
func dlCA(t testing.TB, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// dlLeaf makes a certificate for pub with the given serial, issued by ca.
func dlLeaf(t testing.TB, ca *x509.Certificate, caKey crypto.Signer, serial *big.Int, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "node " + serial.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func dlKey(t testing.TB) crypto.PublicKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key.Public()
}

// dlEntry is the entry that bans cert.
func dlEntry(t testing.TB, cert *x509.Certificate, reason string) DenyEntry {
	t.Helper()
	tp, err := Thumbprint(cert)
	if err != nil {
		t.Fatal(err)
	}
	return DenyEntry{Issuer: cert.Issuer.String(), SerialNumber: cert.SerialNumber.String(), JWKThumbprint: tp, Reason: reason}
}

// TestDenylistInterop reads the list the Nuts network publishes, with its published key.
func TestDenylistInterop(t *testing.T) {
	key, err := ParseSigner(dlReadFixture(t, "pubkey.pem"))
	if err != nil {
		t.Fatalf("ParseSigner(pubkey.pem): %v", err)
	}
	if !DefaultSigner().Equal(key) {
		t.Fatalf("DefaultSigner() = %x, want the published key %x", DefaultSigner(), key)
	}
	jws := dlReadFixture(t, "denylist.jws")
	if !bytes.HasSuffix(jws, []byte("\n")) {
		t.Fatal("fixture should end with a newline, as published")
	}
	l := dlParse(t, jws, DefaultSigner())
	if l.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", l.Len())
	}
	want := DenyEntry{
		Issuer:        "CN=Nuts Development Network Root CA",
		SerialNumber:  "14349442077069222823",
		JWKThumbprint: "sVL9nJQu8nnBA3oZGwgryy8xGHMZNk_Amgkl12T-W-I",
		Reason:        "blocked for testing purposes",
	}
	if got := l.Entries(); len(got) != 1 || got[0] != want {
		t.Fatalf("Entries() = %+v, want [%+v]", got, want)
	}

	cert := dlFixtureCert(t)
	if tp, err := Thumbprint(cert); err != nil || tp != want.JWKThumbprint {
		t.Fatalf("Thumbprint(fixture) = %q, %v; want %q", tp, err, want.JWKThumbprint)
	}
	got, banned := l.Bans(cert)
	if !banned || got != want {
		t.Fatalf("Bans(fixture certificate) = %+v, %v; want %+v, true", got, banned, want)
	}

	// A CA generated here under the same name, issuing a certificate with the same serial:
	// only the key differs, so nothing is banned.
	ca, caKey := dlCA(t, "Nuts Development Network Root CA")
	serial, _ := new(big.Int).SetString(want.SerialNumber, 10)
	twin := dlLeaf(t, ca, caKey, serial, dlKey(t))
	if twin.SerialNumber.String() != want.SerialNumber || twin.Issuer.String() != want.Issuer {
		t.Fatalf("twin: issuer %q, serial %s; want the listed ones", twin.Issuer, twin.SerialNumber)
	}
	for _, c := range []*x509.Certificate{ca, twin} {
		if e, banned := l.Bans(c); banned {
			t.Errorf("Bans(%s, serial %s) = %+v: a generated certificate is banned", c.Subject, c.SerialNumber, e)
		}
	}

	// The published list with any other key is refused.
	other, _ := dlSigner(t)
	if _, err := ParseDenylist(jws, other); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Fatalf("ParseDenylist(published list, another key) = %v, want a signature error", err)
	}
}

func TestDenylistBans(t *testing.T) {
	pub, priv := dlSigner(t)
	ca, caKey := dlCA(t, "Test Network CA")
	otherCA, otherCAKey := dlCA(t, "Other Network CA")
	key := dlKey(t)
	leaf := dlLeaf(t, ca, caKey, big.NewInt(1001), key)
	entry := dlEntry(t, leaf, "compromised")

	wrongIssuer := entry
	wrongIssuer.Issuer = otherCA.Subject.String()
	wrongSerial := entry
	wrongSerial.SerialNumber = "1002"
	wrongThumbprint := entry
	wrongThumbprint.JWKThumbprint = dlEntry(t, dlLeaf(t, ca, caKey, big.NewInt(1001), dlKey(t)), "").JWKThumbprint

	cases := []struct {
		name   string
		entry  DenyEntry
		banned bool
	}{
		{"all three match", entry, true},
		{"wrong issuer", wrongIssuer, false},
		{"wrong serial", wrongSerial, false},
		{"wrong thumbprint", wrongThumbprint, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := dlParse(t, dlSignEntries(t, priv, tc.entry), pub)
			got, banned := l.Bans(leaf)
			if banned != tc.banned {
				t.Fatalf("Bans = %+v, %v; want banned %v", got, banned, tc.banned)
			}
			if banned && got != tc.entry {
				t.Fatalf("Bans returned %+v, want %+v", got, tc.entry)
			}
		})
	}

	t.Run("same serial and key under another issuer", func(t *testing.T) {
		l := dlParse(t, dlSignEntries(t, priv, entry), pub)
		twin := dlLeaf(t, otherCA, otherCAKey, big.NewInt(1001), key)
		if e, banned := l.Bans(twin); banned {
			t.Fatalf("Bans(twin under %s) = %+v: banned", twin.Issuer, e)
		}
		if _, banned := l.Bans(leaf); !banned {
			t.Fatal("the listed certificate is not banned")
		}
	})

	t.Run("entries sharing a serial", func(t *testing.T) {
		twin := dlLeaf(t, otherCA, otherCAKey, big.NewInt(1001), dlKey(t))
		a, b := dlEntry(t, leaf, "a"), dlEntry(t, twin, "b")
		l := dlParse(t, dlSignEntries(t, priv, wrongThumbprint, a, b), pub)
		if got, banned := l.Bans(leaf); !banned || got.Reason != "a" {
			t.Fatalf("Bans(leaf) = %+v, %v; want reason a", got, banned)
		}
		if got, banned := l.Bans(twin); !banned || got.Reason != "b" {
			t.Fatalf("Bans(twin) = %+v, %v; want reason b", got, banned)
		}
	})

	t.Run("a CA certificate", func(t *testing.T) {
		l := dlParse(t, dlSignEntries(t, priv, dlEntry(t, ca, "rogue CA")), pub)
		if got, banned := l.Bans(ca); !banned || got.Reason != "rogue CA" {
			t.Fatalf("Bans(CA) = %+v, %v", got, banned)
		}
		if _, banned := l.Bans(leaf); banned {
			t.Fatal("Bans judges one certificate: the leaf itself is not listed")
		}
	})

	t.Run("key without a thumbprint matches no entry", func(t *testing.T) {
		// go-jose defines no JWK for P-224 keys, which x509 parses.
		k224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		xcert := dlLeaf(t, ca, caKey, big.NewInt(1001), k224.Public())
		if _, ok := xcert.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Fatalf("parsed key is %T", xcert.PublicKey)
		}
		if _, err := Thumbprint(xcert); err == nil || !strings.Contains(err.Error(), "thumbprint: ECDSA key") {
			t.Fatalf("Thumbprint(P-224 key) = %v, want an error naming the ECDSA key", err)
		}
		l := dlParse(t, dlSignEntries(t, priv, entry), pub)
		if _, banned := l.Bans(xcert); banned {
			t.Fatal("banned a certificate whose thumbprint cannot be computed")
		}
	})

	t.Run("nil and empty lists ban nothing", func(t *testing.T) {
		var nilList *Denylist
		if _, banned := nilList.Bans(leaf); banned || nilList.Len() != 0 || nilList.Entries() != nil {
			t.Fatal("a nil list is not empty")
		}
		empty := dlParse(t, dlSignEntries(t, priv), pub)
		if _, banned := empty.Bans(leaf); banned || empty.Len() != 0 {
			t.Fatal("an empty list is not empty")
		}
		full := dlParse(t, dlSignEntries(t, priv, entry), pub)
		if _, banned := full.Bans(nil); banned {
			t.Fatal("a nil certificate is banned")
		}
	})
}

func TestDenylistEntriesIsACopy(t *testing.T) {
	pub, priv := dlSigner(t)
	ca, caKey := dlCA(t, "Test Network CA")
	leaf := dlLeaf(t, ca, caKey, big.NewInt(7), dlKey(t))
	l := dlParse(t, dlSignEntries(t, priv, dlEntry(t, leaf, "r")), pub)
	es := l.Entries()
	es[0].SerialNumber = "8"
	es[0].Reason = "changed"
	if got, banned := l.Bans(leaf); !banned || got.Reason != "r" || l.Entries()[0].Reason != "r" {
		t.Fatalf("changing Entries()'s result changed the list: %+v, %v", got, banned)
	}
}

func TestParseDenylistAccepts(t *testing.T) {
	pub, priv := dlSigner(t)
	ca, caKey := dlCA(t, "Test Network CA")
	leaf := dlLeaf(t, ca, caKey, big.NewInt(42), dlKey(t))
	entry := dlEntry(t, leaf, "")
	payload, _ := json.Marshal([]DenyEntry{entry})
	plain := dlSignEntries(t, priv, entry)

	withExtra := fmt.Sprintf(`[{"jwkthumbprint":%q,"serialnumber":%q,"issuer":%q,"comment":{"x":[1,2]},"added":"2024-07-12"}]`,
		entry.JWKThumbprint, entry.SerialNumber, entry.Issuer)

	cases := map[string][]byte{
		"as published":                 append(bytes.Clone(plain), '\n'),
		"white space around":           []byte(" \t\r\n" + string(plain) + "\r\n\r\n"),
		"typ and kid headers":          []byte(dlSign(t, priv, jose.EdDSA, payload, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "denylist-2024"))),
		"unknown members, no reason":   []byte(dlSign(t, priv, jose.EdDSA, []byte(withExtra), nil)),
		"payload with white space":     []byte(dlSign(t, priv, jose.EdDSA, []byte("\n [ "+string(payload[1:len(payload)-1])+" ] \n"), nil)),
		"size exactly MaxDenylistSize": append(bytes.Clone(plain), bytes.Repeat([]byte("\n"), MaxDenylistSize-len(plain))...),
	}
	for name, jws := range cases {
		t.Run(name, func(t *testing.T) {
			l := dlParse(t, jws, pub)
			if got, banned := l.Bans(leaf); !banned || got.JWKThumbprint != entry.JWKThumbprint {
				t.Fatalf("Bans = %+v, %v", got, banned)
			}
		})
	}
}

func TestParseDenylistRefuses(t *testing.T) {
	pub, priv := dlSigner(t)
	ca, caKey := dlCA(t, "Test Network CA")
	entry := dlEntry(t, dlLeaf(t, ca, caKey, big.NewInt(42), dlKey(t)), "r")
	payload, _ := json.Marshal([]DenyEntry{entry})
	good := dlSignEntries(t, priv, entry)
	parts := strings.Split(string(good), ".")

	_, otherPriv := dlSigner(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edSign := func(input []byte) []byte { return ed25519.Sign(priv, input) }
	signPayload := func(p string) []byte { return []byte(dlSign(t, priv, jose.EdDSA, []byte(p), nil)) }
	// entryJSON is entry as JSON with member name replaced by value (raw JSON), or removed
	// when value is "".
	entryJSON := func(name, value string) string {
		m := map[string]json.RawMessage{}
		b, _ := json.Marshal(entry)
		_ = json.Unmarshal(b, &m)
		if value == "" {
			delete(m, name)
		} else {
			m[name] = json.RawMessage(value)
		}
		out, _ := json.Marshal(m)
		return "[" + string(out) + "]"
	}

	tamperedPayload := strings.Replace(string(payload), `"r"`, `"x"`, 1)
	jsonSerialized := func() []byte {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, nil)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(obj.FullSerialize())
	}()
	hs256 := dlRawJWS(`{"alg":"HS256"}`, string(payload), func(input []byte) []byte {
		// The classic confusion: the trusted public key used as an HMAC secret.
		mac := hmac.New(sha256.New, pub)
		mac.Write(input)
		return mac.Sum(nil)
	})

	cases := []struct {
		name    string
		jws     []byte
		signer  ed25519.PublicKey
		wantErr string
	}{
		{"empty", nil, pub, "denylist: empty"},
		{"white space only", []byte(" \n\t\r\n"), pub, "denylist: empty"},
		{"oversized garbage", bytes.Repeat([]byte("a"), MaxDenylistSize+1), pub, "too large"},
		{"valid list padded past the limit", append(bytes.Clone(good), bytes.Repeat([]byte("\n"), MaxDenylistSize+1-len(good))...), pub, "too large"},
		{"JSON serialization", jsonSerialized, pub, "not a compact JWS"},
		{"two parts", []byte(parts[0] + "." + parts[1]), pub, "not a compact JWS: 2 parts"},
		{"four parts", []byte(string(good) + ".AAAA"), pub, "not a compact JWS: 4 parts"},
		{"space inside", []byte(parts[0] + ". " + parts[1] + "." + parts[2]), pub, "not a compact JWS: unexpected character ' '"},
		{"padding", []byte(parts[0] + "." + parts[1] + "." + parts[2] + "=="), pub, "not a compact JWS: unexpected character '='"},
		{"empty header", []byte("." + parts[1] + "." + parts[2]), pub, "empty protected header"},
		{"header not base64url", []byte("e." + parts[1] + "." + parts[2]), pub, "protected header is not base64url"},
		{"header not JSON", dlRawJWS(`alg=EdDSA`, string(payload), edSign), pub, "protected header: not a JSON object"},
		{"header an array", dlRawJWS(`["alg","EdDSA"]`, string(payload), edSign), pub, "protected header: not a JSON object"},
		{"header with trailing data", dlRawJWS(`{"alg":"EdDSA"}{}`, string(payload), edSign), pub, "protected header: data after the JSON object"},
		{"no alg", dlRawJWS(`{"typ":"JWT"}`, string(payload), edSign), pub, "protected header: no alg"},
		{"alg none, unsigned", []byte(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."), pub, `alg "none" is not allowed`},
		{"alg none, signed", dlRawJWS(`{"alg":"none"}`, string(payload), edSign), pub, `alg "none" is not allowed`},
		{"alg HS256", hs256, pub, `alg "HS256" is not allowed`},
		{"alg ES256", []byte(dlSign(t, ecKey, jose.ES256, payload, nil)), pub, `alg "ES256" is not allowed`},
		{"alg lowercase", dlRawJWS(`{"alg":"eddsa"}`, string(payload), edSign), pub, `alg "eddsa" is not allowed`},
		{"alg not a string", dlRawJWS(`{"alg":["EdDSA"]}`, string(payload), edSign), pub, `"alg" is not a string`},
		{"alg twice", dlRawJWS(`{"alg":"EdDSA","alg":"EdDSA"}`, string(payload), edSign), pub, `"alg" appears twice`},
		{"Alg", dlRawJWS(`{"Alg":"EdDSA"}`, string(payload), edSign), pub, `"Alg" is not allowed`},
		{"EdDSA without a signature", []byte(parts[0] + "." + parts[1] + "."), pub, "not signed"},
		{"crit header", []byte(dlSign(t, priv, jose.EdDSA, payload, (&jose.SignerOptions{}).WithCritical("exp").WithHeader("exp", 1))), pub, `"crit" is not allowed`},
		{"b64 false", []byte(dlSign(t, priv, jose.EdDSA, []byte("[]"), (&jose.SignerOptions{}).WithBase64(false))), pub, `"b64" is not allowed`},
		{"embedded jwk", []byte(dlSign(t, priv, jose.EdDSA, payload, &jose.SignerOptions{EmbedJWK: true})), pub, `"jwk" is not allowed`},
		{"jku", []byte(dlSign(t, priv, jose.EdDSA, payload, (&jose.SignerOptions{}).WithHeader("jku", "https://example.org/keys"))), pub, `"jku" is not allowed`},
		{"x5c", []byte(dlSign(t, priv, jose.EdDSA, payload, (&jose.SignerOptions{}).WithHeader("x5c", []string{"AAAA"}))), pub, `"x5c" is not allowed`},
		{"tampered payload", []byte(parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(tamperedPayload)) + "." + parts[2]), pub, "signature does not verify"},
		{"tampered header", []byte(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]), pub, "signature does not verify"},
		{"tampered signature", []byte(parts[0] + "." + parts[1] + "." + dlFlipFirst(parts[2])), pub, "signature does not verify"},
		{"signed by another key", dlSignEntries(t, otherPriv, entry), pub, "signature does not verify"},
		{"signer not an Ed25519 key", good, pub[:16], "trusted signer is not an Ed25519 public key"},
		{"nil signer", good, nil, "trusted signer is not an Ed25519 public key"},
		{"payload an object", signPayload(`{"issuer":"CN=x"}`), pub, `payload is not a JSON array: it starts with "{\"issuer"`},
		{"payload null", signPayload(`null`), pub, `payload is not a JSON array: it starts with "null"`},
		{"payload a string", signPayload(`"[]"`), pub, "payload is not a JSON array"},
		{"payload not JSON", signPayload(`[{"issuer":`), pub, "payload is not valid JSON"},
		{"payload two arrays", signPayload(`[] []`), pub, "payload is not valid JSON"},
		{"payload empty", signPayload(``), pub, "payload is not a JSON array: empty"},
		{"array of numbers", signPayload(`[1,2]`), pub, "entry 0: not a JSON object"},
		{"array of strings", signPayload(`["CN=x"]`), pub, "entry 0: not a JSON object"},
		{"array with null", signPayload(`[null]`), pub, "entry 0: not a JSON object"},
		{"array of arrays", signPayload(`[[]]`), pub, "entry 0: not a JSON object"},
		{"second entry bad", signPayload(strings.TrimSuffix(entryJSON("reason", `"ok"`), "]") + ",{}]"), pub, "entry 1: missing issuer"},
		{"missing issuer", signPayload(entryJSON("issuer", "")), pub, "entry 0: missing issuer"},
		{"missing serialnumber", signPayload(entryJSON("serialnumber", "")), pub, "entry 0: missing serialnumber"},
		{"missing jwkthumbprint", signPayload(entryJSON("jwkthumbprint", "")), pub, "entry 0: missing jwkthumbprint"},
		{"empty issuer", signPayload(entryJSON("issuer", `""`)), pub, "entry 0: missing issuer"},
		{"issuer null", signPayload(entryJSON("issuer", `null`)), pub, "entry 0: issuer is not a string"},
		{"serialnumber a number", signPayload(entryJSON("serialnumber", `42`)), pub, "entry 0: serialnumber is not a string"},
		{"reason a number", signPayload(entryJSON("reason", `1`)), pub, "entry 0: reason is not a string"},
		{"issuer twice", signPayload(strings.Replace(entryJSON("reason", `"r"`), `{`, `{"issuer":"CN=evil",`, 1)), pub, "entry 0: issuer appears twice"},
		{"Issuer capitalised", signPayload(strings.Replace(entryJSON("reason", `"r"`), `"issuer"`, `"Issuer"`, 1)), pub, "entry 0: missing issuer"},
		{"serialnumber hex", signPayload(entryJSON("serialnumber", `"0x2a"`)), pub, `serialnumber "0x2a" is not a decimal integer`},
		{"serialnumber with letters", signPayload(entryJSON("serialnumber", `"42a"`)), pub, `serialnumber "42a" is not a decimal integer`},
		{"serialnumber leading zero", signPayload(entryJSON("serialnumber", `"042"`)), pub, `serialnumber "042" is not a decimal integer`},
		{"serialnumber plus", signPayload(entryJSON("serialnumber", `"+42"`)), pub, `serialnumber "+42" is not a decimal integer`},
		{"serialnumber minus zero", signPayload(entryJSON("serialnumber", `"-0"`)), pub, `serialnumber "-0" is not a decimal integer`},
		{"serialnumber minus only", signPayload(entryJSON("serialnumber", `"-"`)), pub, `serialnumber "-" is not a decimal integer`},
		{"serialnumber with space", signPayload(entryJSON("serialnumber", `" 42"`)), pub, `serialnumber " 42" is not a decimal integer`},
		{"serialnumber exponent", signPayload(entryJSON("serialnumber", `"4e2"`)), pub, `serialnumber "4e2" is not a decimal integer`},
		{"serialnumber long, clipped in the error", signPayload(entryJSON("serialnumber", `"`+strings.Repeat("9", 100)+`x"`)), pub, `serialnumber "` + strings.Repeat("9", 64) + `..." is not a decimal integer`},
		{"jwkthumbprint padded", signPayload(entryJSON("jwkthumbprint", `"`+entry.JWKThumbprint+`="`)), pub, "is not a base64url SHA-256 thumbprint"},
		{"jwkthumbprint std base64", signPayload(entryJSON("jwkthumbprint", `"`+strings.Repeat("+", 43)+`"`)), pub, "is not a base64url SHA-256 thumbprint"},
		{"jwkthumbprint hex", signPayload(entryJSON("jwkthumbprint", fmt.Sprintf(`"%x"`, sha256.Sum256(nil)))), pub, "is not a base64url SHA-256 thumbprint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseDenylist(tc.jws, tc.signer)
			if err == nil {
				t.Fatalf("accepted: %d entries", l.Len())
			}
			if l != nil {
				t.Fatal("a list returned with the error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) {
				t.Fatalf("error %q does not mention %q", msg, tc.wantErr)
			}
			if !strings.HasPrefix(msg, "denylist: ") || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error %q is not one line starting with \"denylist: \"", msg)
			}
		})
	}
}

func dlFlipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestParseSigner(t *testing.T) {
	pemOf := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	spki := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	edPub, _ := dlSigner(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	got, err := ParseSigner(append([]byte("# the signer\n"), pemOf("PUBLIC KEY", spki(edPub))...))
	if err != nil || !got.Equal(edPub) {
		t.Fatalf("ParseSigner(Ed25519) = %x, %v", got, err)
	}

	cases := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"empty", nil, "not PEM"},
		{"base64 without PEM armour", []byte(defaultSignerPKIX), "not PEM"},
		{"certificate", pemOf("CERTIFICATE", spki(edPub)), `not a public key: PEM block is "CERTIFICATE"`},
		{"private key", pemOf("PRIVATE KEY", []byte{1, 2, 3}), `not a public key: PEM block is "PRIVATE KEY"`},
		{"garbage in the block", pemOf("PUBLIC KEY", []byte("not DER")), "not a public key: "},
		{"ECDSA key", pemOf("PUBLIC KEY", spki(dlKey(t))), "not Ed25519: the key is ECDSA"},
		{"RSA key", pemOf("PUBLIC KEY", spki(&rsaKey.PublicKey)), "not Ed25519: the key is RSA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ParseSigner(tc.data)
			if err == nil {
				t.Fatalf("accepted: %x", key)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) || !strings.HasPrefix(msg, "trusted signer: ") || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error %q: want one line starting with \"trusted signer: \" mentioning %q", msg, tc.wantErr)
			}
		})
	}
}

func TestDefaultSigner(t *testing.T) {
	der, err := base64.StdEncoding.DecodeString("MCowBQYDK2VwAyEAmKjcSOrKOJR2cYd6UNbemNeusvjs930Y4nCIZ1R2zCI=")
	if err != nil {
		t.Fatal(err)
	}
	want := ed25519.PublicKey(der[len(der)-ed25519.PublicKeySize:])
	k := DefaultSigner()
	if !k.Equal(want) {
		t.Fatalf("DefaultSigner() = %x, want %x", k, want)
	}
	k[0] ^= 0xff
	if !DefaultSigner().Equal(want) {
		t.Fatal("changing DefaultSigner()'s result changed the built-in key")
	}
}

// TestThumbprint compares Thumbprint with RFC 7638 computed here from the key's raw members:
// the required members in lexicographic order, no white space, coordinates at the curve's
// size.
func TestThumbprint(t *testing.T) {
	ca, caKey := dlCA(t, "Test Network CA")
	b64 := base64.RawURLEncoding.EncodeToString
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return b64(h[:]) }
	ecJWK := func(crv string, pub *ecdsa.PublicKey) string {
		point, err := pub.ECDH()
		if err != nil {
			t.Fatal(err)
		}
		raw := point.Bytes() // 0x04 || X || Y, each at the curve's size
		n := (len(raw) - 1) / 2
		return fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, crv, b64(raw[1:1+n]), b64(raw[1+n:]))
	}

	// A P-256 key whose X begins with a zero byte, to check that coordinates keep their size.
	var p256 *ecdsa.PrivateKey
	for range 10000 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if raw, _ := k.PublicKey.ECDH(); raw.Bytes()[1] == 0 {
			p256 = k
			break
		}
	}
	if p256 == nil {
		t.Fatal("no P-256 key with a leading zero in X in 10000 tries")
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _ := dlSigner(t)

	// RFC 7638, section 3.1: the example RSA key and its thumbprint.
	rfcN, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt" +
		"VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn6" +
		"4tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD" +
		"W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9" +
		"1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINH" +
		"aQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	rfcKey := &rsa.PublicKey{N: new(big.Int).SetBytes(rfcN), E: 65537}

	cases := []struct {
		name string
		pub  crypto.PublicKey
		want string
	}{
		{"EC P-256, X with a leading zero", &p256.PublicKey, sum(ecJWK("P-256", &p256.PublicKey))},
		{"EC P-384", &p384.PublicKey, sum(ecJWK("P-384", &p384.PublicKey))},
		{"RSA", &rsaKey.PublicKey, sum(fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`,
			b64(big.NewInt(int64(rsaKey.E)).Bytes()), b64(rsaKey.N.Bytes())))},
		{"RSA, RFC 7638 example", rfcKey, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"},
		{"Ed25519", edPub, sum(fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, b64(edPub)))},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert := dlLeaf(t, ca, caKey, big.NewInt(int64(100+i)), tc.pub)
			got, err := Thumbprint(cert)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Thumbprint = %s, want %s", got, tc.want)
			}
		})
	}

	if _, err := Thumbprint(nil); err == nil {
		t.Fatal("Thumbprint(nil) returned no error")
	}
	if _, err := Thumbprint(&x509.Certificate{}); err == nil {
		t.Fatal("Thumbprint(certificate without key) returned no error")
	}
}

// BenchmarkDenylistBans measures Bans on a list of 1000 entries, for a certificate that is in
// none (the common case: one map lookup) and for one that is listed (issuer compared and
// thumbprint computed).
func BenchmarkDenylistBans(b *testing.B) {
	pub, priv := dlSigner(b)
	ca, caKey := dlCA(b, "Test Network CA")
	entries := make([]DenyEntry, 0, 1000)
	for i := range 999 {
		e := DenyEntry{Issuer: ca.Subject.String(), SerialNumber: fmt.Sprint(1_000_000 + i), Reason: "r"}
		h := sha256.Sum256([]byte(e.SerialNumber))
		e.JWKThumbprint = base64.RawURLEncoding.EncodeToString(h[:])
		entries = append(entries, e)
	}
	serial, _ := new(big.Int).SetString("14349442077069222823", 10)
	listed := dlLeaf(b, ca, caKey, serial, dlKey(b))
	entries = append(entries, dlEntry(b, listed, "listed"))
	l := dlParse(b, dlSignEntries(b, priv, entries...), pub)
	unlisted := dlLeaf(b, ca, caKey, new(big.Int).Add(serial, big.NewInt(1)), dlKey(b))

	b.Run("not listed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, banned := l.Bans(unlisted); banned {
				b.Fatal("banned")
			}
		}
	})
	b.Run("listed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, banned := l.Bans(listed); !banned {
				b.Fatal("not banned")
			}
		}
	})
}
