package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"
)

// keyType names a kind of key the gateway accepts.
type keyType string

const (
	ed25519Key keyType = "ed25519"
	p256Key    keyType = "p256"
	p384Key    keyType = "p384"
	p521Key    keyType = "p521"
	rsaKey     keyType = "rsa"
)

// defaultAlg is the JWS algorithm `token mint` picks for each key type (contract section 6).
var defaultAlg = map[keyType]string{
	ed25519Key: "EdDSA",
	p256Key:    "ES256",
	p384Key:    "ES384",
	p521Key:    "ES512",
	rsaKey:     "PS512",
}

// testKey is a key pair and the authorized_keys user name it is listed under.
type testKey struct {
	typ    keyType
	user   string
	signer crypto.Signer
	sshPub ssh.PublicKey
}

// newKey generates a fresh key of typ, to be listed under user.
func newKey(t *testing.T, typ keyType, user string) *testKey {
	t.Helper()
	var (
		signer crypto.Signer
		err    error
	)
	switch typ {
	case ed25519Key:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case p256Key:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case p384Key:
		signer, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case p521Key:
		signer, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case rsaKey:
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("unknown key type %q", typ)
	}
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{typ: typ, user: user, signer: signer, sshPub: sshPub}
}

// fingerprint is the key's SSH SHA-256 fingerprint, "SHA256:" + unpadded base64.
func (k *testKey) fingerprint() string { return ssh.FingerprintSHA256(k.sshPub) }

// authorizedKey is the key's authorized_keys line without a user name: "<type> <base64>".
func (k *testKey) authorizedKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.sshPub)))
}

// authorizedLine is the key's authorized_keys line: "<type> <base64> <user>".
func (k *testKey) authorizedLine() string { return k.authorizedKey() + " " + k.user }

// b64 is unpadded base64url, as JOSE uses it.
var b64 = base64.RawURLEncoding

// publicJWK returns the members of the key's public JWK (RFC 7517/7518/8037).
func (k *testKey) publicJWK() map[string]string {
	switch pub := k.signer.Public().(type) {
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64.EncodeToString(pub)}
	case *ecdsa.PublicKey:
		point, err := pub.Bytes() // 0x04 || X || Y, each coordinate at the curve's full size
		if err != nil {
			panic(err)
		}
		size := (len(point) - 1) / 2
		return map[string]string{
			"kty": "EC",
			"crv": pub.Curve.Params().Name,
			"x":   b64.EncodeToString(point[1 : 1+size]),
			"y":   b64.EncodeToString(point[1+size:]),
		}
	case *rsa.PublicKey:
		return map[string]string{
			"kty": "RSA",
			"n":   b64.EncodeToString(pub.N.Bytes()),
			"e":   b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		}
	}
	panic(fmt.Sprintf("unsupported key %T", k.signer.Public()))
}

// thumbprint is the key's RFC 7638 JWK SHA-256 thumbprint, unpadded base64url: the hash of the
// required members in lexicographic order with no white space. encoding/json sorts map keys, and
// none of the values needs escaping, so marshalling the map gives the canonical form.
func (k *testKey) thumbprint() string {
	jwk := k.publicJWK()
	required := map[string]string{"kty": jwk["kty"]}
	var members []string
	switch jwk["kty"] {
	case "OKP":
		members = []string{"crv", "x"}
	case "EC":
		members = []string{"crv", "x", "y"}
	case "RSA":
		members = []string{"e", "n"}
	}
	for _, m := range members {
		required[m] = jwk[m]
	}
	canonical, err := json.Marshal(required)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(canonical)
	return b64.EncodeToString(sum[:])
}

// privateJWK returns the key's private JWK as JSON.
func (k *testKey) privateJWK(t *testing.T) []byte {
	t.Helper()
	jwk := k.publicJWK()
	switch priv := k.signer.(type) {
	case ed25519.PrivateKey:
		jwk["d"] = b64.EncodeToString(priv.Seed())
	case *ecdsa.PrivateKey:
		d, err := priv.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		jwk["d"] = b64.EncodeToString(d)
	case *rsa.PrivateKey:
		priv.Precompute()
		jwk["d"] = b64.EncodeToString(priv.D.Bytes())
		jwk["p"] = b64.EncodeToString(priv.Primes[0].Bytes())
		jwk["q"] = b64.EncodeToString(priv.Primes[1].Bytes())
		jwk["dp"] = b64.EncodeToString(priv.Precomputed.Dp.Bytes())
		jwk["dq"] = b64.EncodeToString(priv.Precomputed.Dq.Bytes())
		jwk["qi"] = b64.EncodeToString(priv.Precomputed.Qinv.Bytes())
	}
	out, err := json.Marshal(jwk)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// keyFormat names a way of writing a key to a file.
type keyFormat string

const (
	opensshPrivate keyFormat = "openssh"     // "OPENSSH PRIVATE KEY" PEM, as ssh-keygen writes
	pkcs8Private   keyFormat = "pkcs8"       // "PRIVATE KEY" PEM
	sec1Private    keyFormat = "sec1"        // "EC PRIVATE KEY" PEM
	pkcs1Private   keyFormat = "pkcs1"       // "RSA PRIVATE KEY" PEM
	jwkPrivate     keyFormat = "jwk"         // private JWK JSON
	opensshPublic  keyFormat = "openssh-pub" // an authorized_keys line, as ssh-keygen writes *.pub
	pkixPublic     keyFormat = "pkix-pub"    // "PUBLIC KEY" PEM
)

// encode returns the key in format f.
func (k *testKey) encode(t *testing.T, f keyFormat) []byte {
	t.Helper()
	pemOf := func(typ string, der []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatalf("encode %s key as %s: %v", k.typ, f, err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	switch f {
	case opensshPrivate:
		block, err := ssh.MarshalPrivateKey(k.signer, k.user)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(block)
	case pkcs8Private:
		der, err := x509.MarshalPKCS8PrivateKey(k.signer)
		return pemOf("PRIVATE KEY", der, err)
	case sec1Private:
		der, err := x509.MarshalECPrivateKey(k.signer.(*ecdsa.PrivateKey))
		return pemOf("EC PRIVATE KEY", der, err)
	case pkcs1Private:
		return pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k.signer.(*rsa.PrivateKey)), nil)
	case jwkPrivate:
		return k.privateJWK(t)
	case opensshPublic:
		return []byte(k.authorizedKey() + " " + k.user + "@example\n")
	case pkixPublic:
		der, err := x509.MarshalPKIXPublicKey(k.signer.Public())
		return pemOf("PUBLIC KEY", der, err)
	}
	t.Fatalf("unknown key format %q", f)
	return nil
}

// writeKeyFile writes the key in format f to a fresh file and returns its path.
func (k *testKey) writeKeyFile(t *testing.T, f keyFormat) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.key", k.typ, f))
	writeFileAtomic(t, path, k.encode(t, f))
	return path
}

// writeAuthorizedKeys writes an authorized_keys file listing keys, one line each, and returns
// its path.
func writeAuthorizedKeys(t *testing.T, keys ...*testKey) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "authorized_keys")
	writeFileAtomic(t, path, []byte(authorizedKeysText(keys...)))
	return path
}

// authorizedKeysText is the content of an authorized_keys file listing keys.
func authorizedKeysText(keys ...*testKey) string {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.authorizedLine() + "\n")
	}
	return b.String()
}

// ---- tokens ----

// newJTI returns a fresh random UUID string.
func newJTI() string { return uuid.NewString() }

// token is a JWS under construction: its protected header and claims, which tests may change
// before signing.
type token struct {
	header map[string]any
	claims map[string]any
	key    *testKey
}

// newToken returns a valid token for k: alg by key type, kid the SSH fingerprint, the claims the
// node requires (iss = the key's user, aud = the test audience, a fresh jti, iat = nbf = now,
// exp = now + 1h).
func (k *testKey) newToken() *token {
	now := time.Now().Unix()
	return &token{
		key:    k,
		header: map[string]any{"alg": defaultAlg[k.typ], "typ": "JWT", "kid": k.fingerprint()},
		claims: map[string]any{
			"iss": k.user, "sub": "e2e-subject", "aud": testAudience, "jti": newJTI(),
			"iat": now, "nbf": now, "exp": now + 3600,
		},
	}
}

// with applies a change to the token and returns it, for chaining.
func (tk *token) with(change func(header, claims map[string]any)) *token {
	change(tk.header, tk.claims)
	return tk
}

// sign serialises and signs the token with its key (or with hmacSecret for HS256, or not at all
// for alg "none") and returns the compact JWS.
func (tk *token) sign(t *testing.T) string {
	t.Helper()
	input := b64JSON(t, tk.header) + "." + b64JSON(t, tk.claims)
	sig, err := signJWS(tk.header["alg"], tk.key.signer, []byte(input))
	if err != nil {
		t.Fatalf("sign %v token: %v", tk.header["alg"], err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// bearer is the Authorization header value carrying the signed token.
func (tk *token) bearer(t *testing.T) string {
	t.Helper()
	return "Bearer " + tk.sign(t)
}

// hmacSecret is what HS256 test tokens are signed with (an attacker's guess at a shared secret).
var hmacSecret = []byte("not-a-secret-the-gateway-knows")

// signJWS computes the JWS signature of input for alg (RFC 7518 section 3).
func signJWS(alg any, signer crypto.Signer, input []byte) ([]byte, error) {
	switch alg {
	case "none":
		return nil, nil
	case "HS256":
		mac := hmac.New(sha256.New, hmacSecret)
		mac.Write(input)
		return mac.Sum(nil), nil
	case "EdDSA":
		return ed25519.Sign(signer.(ed25519.PrivateKey), input), nil
	case "ES256":
		return ecdsaSign(signer, crypto.SHA256, input)
	case "ES384":
		return ecdsaSign(signer, crypto.SHA384, input)
	case "ES512":
		return ecdsaSign(signer, crypto.SHA512, input)
	case "PS512":
		sum := sha512.Sum512(input)
		return rsa.SignPSS(rand.Reader, signer.(*rsa.PrivateKey), crypto.SHA512, sum[:],
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "RS512":
		sum := sha512.Sum512(input)
		return rsa.SignPKCS1v15(nil, signer.(*rsa.PrivateKey), crypto.SHA512, sum[:])
	}
	return nil, fmt.Errorf("unsupported alg %v", alg)
}

// ecdsaSign returns the JWS form of an ECDSA signature: R || S, each at the curve's byte size.
func ecdsaSign(signer crypto.Signer, h crypto.Hash, input []byte) ([]byte, error) {
	priv := signer.(*ecdsa.PrivateKey)
	hasher := h.New()
	hasher.Write(input)
	r, s, err := ecdsa.Sign(rand.Reader, priv, hasher.Sum(nil))
	if err != nil {
		return nil, err
	}
	size := (priv.Curve.Params().BitSize + 7) / 8
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	s.FillBytes(sig[size:])
	return sig, nil
}

// b64JSON is the unpadded base64url of v's JSON.
func b64JSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(data)
}

// decodeJWS splits a compact JWS and decodes its header and claims, failing the test if it is
// not one.
func decodeJWS(t *testing.T, jws string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS (%d parts): %q", len(parts), jws)
	}
	decode := func(part string) map[string]any {
		data, err := b64.DecodeString(part)
		if err != nil {
			t.Fatalf("JWS part %q: %v", part, err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("JWS part %s: %v", data, err)
		}
		return m
	}
	return decode(parts[0]), decode(parts[1])
}

// writeFile writes data to a fresh file named name and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	writeFileAtomic(t, path, data)
	return path
}
