package tokenv2

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"
)

// MaxMintTTL is the longest lifetime Mint gives a token.
const MaxMintTTL = 24 * time.Hour

// ErrPassphraseMissing is the error of reading a passphrase-protected key
// without its passphrase.
var ErrPassphraseMissing = errors.New("the key is protected by a passphrase")

// ErrWrongPassphrase is the error of reading a passphrase-protected key with
// a passphrase that does not decrypt it.
var ErrWrongPassphrase = errors.New("the passphrase does not decrypt the key")

// ParsePrivateKey reads an ECDSA, Ed25519 or RSA private key in OpenSSH,
// PEM (PKCS#8, SEC1, PKCS#1) or JWK form. A passphrase-protected key is
// refused with ErrPassphraseMissing; ParsePrivateKeyWithPassphrase reads it.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	return ParsePrivateKeyWithPassphrase(data, nil)
}

// ParsePrivateKeyWithPassphrase is ParsePrivateKey for a key that may be
// protected by a passphrase: an OpenSSH key, or a PEM key with OpenSSL's
// legacy encryption headers. A passphrase given for a key that has none is
// not used. Without a passphrase the error of a protected key is
// ErrPassphraseMissing, with a wrong one ErrWrongPassphrase. Encrypted
// PKCS#8 keys are not read.
func ParsePrivateKeyWithPassphrase(data, passphrase []byte) (crypto.Signer, error) {
	var key any
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(trimmed); err != nil {
			return nil, fmt.Errorf("not a JWK: %v", err)
		}
		if jwk.IsPublic() {
			return nil, errors.New("the JWK is a public key; a private key is needed")
		}
		key = jwk.Key
	} else {
		if block, _ := pem.Decode(trimmed); block != nil && block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errEncryptedPKCS8
		}
		var err error
		key, err = ssh.ParseRawPrivateKey(data)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			if len(passphrase) == 0 {
				return nil, ErrPassphraseMissing
			}
			key, err = ssh.ParseRawPrivateKeyWithPassphrase(data, passphrase)
			if errors.Is(err, x509.IncorrectPasswordError) {
				return nil, ErrWrongPassphrase
			}
		}
		if err != nil {
			return nil, fmt.Errorf("not a private key in OpenSSH, PEM or JWK form: %v", err)
		}
	}
	if k, ok := key.(*ed25519.PrivateKey); ok {
		key = *k
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign token_v2 tokens", key)
	}
	if err := checkKey(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}

// errEncryptedPKCS8 refuses an encrypted PKCS#8 key, which neither Go's
// standard library nor x/crypto/ssh decrypts.
var errEncryptedPKCS8 = errors.New("an encrypted PKCS#8 key is not read: " +
	"convert it to a passphrase-protected OpenSSH key (ssh-keygen -p -f <file>) or decrypt it (openssl pkcs8)")

// checkKey returns an error unless pub is a key that signs token_v2 tokens:
// ECDSA, Ed25519, or RSA of at least minRSABits bits.
func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits; token_v2 needs at least %d", k.N.BitLen(), minRSABits)
		}
		return nil
	}
	return fmt.Errorf("key type %T cannot sign token_v2 tokens", pub)
}

// ParsePublicKey reads a public key: any private key ParsePrivateKey
// reads, an authorized_keys line, a PEM public key (PKIX or PKCS#1) or a
// public JWK. A private key that ParsePrivateKey refuses (protected by a
// passphrase, too short) is refused with ParsePrivateKey's error.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	return ParsePublicKeyWithPassphrase(data, nil)
}

// ParsePublicKeyWithPassphrase is ParsePublicKey reading a private key as
// ParsePrivateKeyWithPassphrase does.
func ParsePublicKeyWithPassphrase(data, passphrase []byte) (crypto.PublicKey, error) {
	signer, privErr := ParsePrivateKeyWithPassphrase(data, passphrase)
	if privErr == nil {
		return signer.Public(), nil
	}
	trimmed := bytes.TrimSpace(data)
	var key any
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{':
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(trimmed); err != nil {
			return nil, fmt.Errorf("not a JWK: %v", err)
		}
		if !jwk.IsPublic() {
			return nil, privErr
		}
		key = jwk.Public().Key
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		block, _ := pem.Decode(trimmed)
		if block == nil {
			return nil, errors.New("not a PEM block")
		}
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			if strings.HasSuffix(block.Type, "PRIVATE KEY") {
				return nil, privErr
			}
			return nil, fmt.Errorf("PEM block %q is not a key this command reads", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("reading PEM %s: %v", block.Type, err)
		}
	default:
		pub, _, _, _, err := ssh.ParseAuthorizedKey(trimmed)
		if err != nil {
			return nil, errors.New("not a key in OpenSSH, PEM or JWK form")
		}
		cpk, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return nil, fmt.Errorf("SSH key type %s cannot be used", pub.Type())
		}
		key = cpk.CryptoPublicKey()
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// AuthorizedKeyLine returns the authorized_keys line for pub and user.
func AuthorizedKeyLine(pub crypto.PublicKey, user string) (string, error) {
	if user == "" || strings.ContainsAny(user, "#\r\n") {
		return "", errors.New("the user name must be non-empty and hold no '#' or line break")
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("converting to an SSH key: %v", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + user, nil
}

// Algorithm returns the JWS algorithm for a key: EdDSA for Ed25519, ES256,
// ES384 or ES512 by ECDSA curve, PS512 for RSA (RS512 if rs512 is set).
func Algorithm(pub crypto.PublicKey, rs512 bool) (string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return "EdDSA", nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		case elliptic.P521():
			return "ES512", nil
		}
		return "", fmt.Errorf("ECDSA curve %s is not allowed", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if rs512 {
			return "RS512", nil
		}
		return "PS512", nil
	}
	return "", fmt.Errorf("key type %T cannot sign token_v2 tokens", pub)
}

// MintRequest describes a token to mint.
type MintRequest struct {
	Key      crypto.Signer
	Issuer   string
	Subject  string
	Audience string
	TTL      time.Duration
	// RS512 selects RS512 instead of PS512 for an RSA key.
	RS512 bool
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Mint returns a token_v2 JWT: kid the key's SSH SHA-256 fingerprint, jti a
// fresh UUID, iat and nbf now, exp now plus TTL.
func Mint(req MintRequest) (string, error) {
	switch {
	case req.Issuer == "":
		return "", errors.New("the issuer must not be empty")
	case req.Subject == "":
		return "", errors.New("the subject must not be empty")
	case req.Audience == "":
		return "", errors.New("the audience must not be empty")
	case req.TTL <= 0 || req.TTL > MaxMintTTL:
		return "", errors.New("the ttl must be more than 0 and at most 24h")
	}
	alg, err := Algorithm(req.Key.Public(), req.RS512)
	if err != nil {
		return "", err
	}
	kid, err := SSHFingerprint(req.Key.Public())
	if err != nil {
		return "", err
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	tok := jwt.NewWithClaims(algorithms[alg].method, jwt.MapClaims{
		"iss": req.Issuer,
		"sub": req.Subject,
		"aud": req.Audience,
		"jti": uuid.NewString(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(req.TTL).Unix(),
	})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(req.Key)
	if err != nil {
		return "", fmt.Errorf("signing: %v", err)
	}
	return signed, nil
}
