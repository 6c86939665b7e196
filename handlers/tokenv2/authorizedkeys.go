// Package tokenv2 checks bearer tokens exactly as a Nuts node does when its
// internal API uses token_v2 authentication: JWTs signed by one of the keys of
// an SSH authorized_keys file, with the user name of that key as issuer.
//
// It has no Caddy import; package caddymodule wires it into Caddy.
package tokenv2

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"fmt"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/ssh"
)

// minRSABits is the smallest RSA modulus the node accepts.
const minRSABits = 2048

// Key is one usable key of an authorized_keys file.
type Key struct {
	// User is the user name the file gives for the key: the comment after
	// the key, which a token's iss claim must equal.
	User string
	// Line is the line of the file the key was read from (1-based).
	Line int
	// Public is the *ecdsa.PublicKey, ed25519.PublicKey or *rsa.PublicKey.
	Public crypto.PublicKey
	// SSHFingerprint is the key's fingerprint as ssh-keygen -l prints it:
	// "SHA256:" followed by unpadded standard base64.
	SSHFingerprint string
	// Thumbprint is the RFC 7638 JWK SHA-256 thumbprint, unpadded base64url.
	Thumbprint string
}

// KeySet is the usable keys of one authorized_keys file, indexed by both
// forms of key ID a token may name. It is immutable once built.
type KeySet struct {
	keys  []*Key
	byKID map[string]*Key
}

// Len reports how many usable keys the set holds.
func (ks *KeySet) Len() int { return len(ks.keys) }

// Keys returns the usable keys in file order.
func (ks *KeySet) Keys() []*Key { return ks.keys }

// Lookup returns the key that a token's kid names, if any.
func (ks *KeySet) Lookup(kid string) (*Key, bool) {
	k, ok := ks.byKID[kid]
	return k, ok
}

// Warning is a line of an authorized_keys file that was skipped.
type Warning struct {
	Line   int
	Reason string
}

func (w Warning) String() string { return fmt.Sprintf("line %d: %s", w.Line, w.Reason) }

// ParseError is a line of an authorized_keys file that does not parse; it
// makes the whole file invalid.
type ParseError struct {
	Line int
	Err  error
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e *ParseError) Unwrap() error { return e.Err }

// ParseAuthorizedKeys reads an OpenSSH authorized_keys file the way the node
// does. Everything from the first '#' on a line is a comment and blank lines
// are skipped. A line that does not parse fails the whole file with a
// *ParseError. Keys that cannot sign token_v2 tokens (DSA, RSA under 2048
// bits, certificates, security keys) and keys without a user name are
// skipped, each with a Warning. When a key is listed more than once, the
// first line counts.
func ParseAuthorizedKeys(data []byte) (*KeySet, []Warning, error) {
	ks := &KeySet{byKID: make(map[string]*Key)}
	var warnings []Warning
	for n, line := range bytes.Split(data, []byte("\n")) {
		lineNo := n + 1
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		pub, user, _, rest, err := ssh.ParseAuthorizedKey(line)
		if err != nil {
			return nil, nil, &ParseError{Line: lineNo, Err: fmt.Errorf("not an authorized_keys entry: %v", err)}
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, nil, &ParseError{Line: lineNo, Err: fmt.Errorf("unexpected data after the key")}
		}
		key, reason := usableKey(pub, user)
		if key == nil {
			warnings = append(warnings, Warning{Line: lineNo, Reason: reason})
			continue
		}
		key.Line = lineNo
		if prev, dup := ks.byKID[key.SSHFingerprint]; dup {
			warnings = append(warnings, Warning{Line: lineNo, Reason: fmt.Sprintf("key already listed on line %d; user name %q ignored", prev.Line, user)})
			continue
		}
		ks.keys = append(ks.keys, key)
		ks.byKID[key.SSHFingerprint] = key
		ks.byKID[key.Thumbprint] = key
	}
	return ks, warnings, nil
}

// usableKey converts an SSH public key to a Key, or says why it is skipped.
func usableKey(pub ssh.PublicKey, user string) (*Key, string) {
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSA:
	default:
		return nil, fmt.Sprintf("key type %s cannot sign token_v2 tokens; skipped", pub.Type())
	}
	cpk, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return nil, fmt.Sprintf("key type %s cannot be used; skipped", pub.Type())
	}
	public := cpk.CryptoPublicKey()
	if rk, ok := public.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
		return nil, fmt.Sprintf("RSA key of %d bits is shorter than %d; skipped", rk.N.BitLen(), minRSABits)
	}
	if user == "" {
		return nil, "key has no user name; skipped"
	}
	tp, err := Thumbprint(public)
	if err != nil {
		return nil, fmt.Sprintf("key cannot be used: %v; skipped", err)
	}
	return &Key{
		User:           user,
		Public:         public,
		SSHFingerprint: ssh.FingerprintSHA256(pub),
		Thumbprint:     tp,
	}, ""
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of an ECDSA, Ed25519
// or RSA public key, unpadded base64url.
func Thumbprint(public crypto.PublicKey) (string, error) {
	switch public.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey, *rsa.PublicKey:
	default:
		return "", fmt.Errorf("unsupported key type %T", public)
	}
	sum, err := (&jose.JSONWebKey{Key: public}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing JWK thumbprint: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// SSHFingerprint returns the "SHA256:..." fingerprint of a public key, as
// ssh-keygen -l prints it.
func SSHFingerprint(public crypto.PublicKey) (string, error) {
	pub, err := ssh.NewPublicKey(public)
	if err != nil {
		return "", fmt.Errorf("converting to an SSH key: %v", err)
	}
	return ssh.FingerprintSHA256(pub), nil
}
