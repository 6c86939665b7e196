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
	"errors"
	"fmt"
	"net/netip"
	"time"

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
	// From is the line's from="..." option: the client addresses that may
	// use the key. Nil means any.
	From *FromPatterns
	// Expires is the line's expiry-time="..." option: the key is refused
	// after this second. Zero means never.
	Expires time.Time
}

// Allows reports why a client at addr may not use the key at now, or nil
// if it may: a refusal for ReasonKeyFrom when addr matches no pattern of
// the key's from= option (or a negated one), or ReasonKeyExpired when now
// is past the key's expiry-time=.
func (k *Key) Allows(addr netip.Addr, now time.Time) *Refusal {
	if k.expired(now) {
		return refuse(ReasonKeyExpired, "the key of line %d expired at %s", k.Line, k.Expires.UTC().Format(time.RFC3339))
	}
	if k.From != nil && !k.From.Allows(addr) {
		return refuse(ReasonKeyFrom, "client %s is not in from=%q of the key of line %d", addr, k.From, k.Line)
	}
	return nil
}

// expired reports whether now is past the key's expiry-time, as sshd
// compares them: in whole seconds, valid up to and including that second.
func (k *Key) expired(now time.Time) bool {
	return k != nil && !k.Expires.IsZero() && now.Unix() > k.Expires.Unix()
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
// does, and also reads the from="..." and expiry-time="..." options (in
// local time) so that they can be enforced; an option that cannot be read
// makes its line a *ParseError. Other options are ignored, as the node
// ignores them. Everything from the first '#' on a line is a comment and blank lines
// are skipped. A line that does not parse fails the whole file with a
// *ParseError. Keys that cannot sign token_v2 tokens (DSA, RSA under 2048
// bits, certificates, security keys) and keys without a user name are
// skipped, each with a Warning. When a key is listed more than once, the
// first line counts.
func ParseAuthorizedKeys(data []byte) (*KeySet, []Warning, error) {
	return parseAuthorizedKeys(data, true, time.Local)
}

// parseAuthorizedKeys is ParseAuthorizedKeys; with enforce false every
// option is ignored, as the node ignores them, and loc is the time zone of
// an expiry-time without Z.
func parseAuthorizedKeys(data []byte, enforce bool, loc *time.Location) (*KeySet, []Warning, error) {
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
		pub, user, options, rest, err := ssh.ParseAuthorizedKey(line)
		if err != nil {
			return nil, nil, &ParseError{Line: lineNo, Err: fmt.Errorf("not an authorized_keys entry: %v", err)}
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, nil, &ParseError{Line: lineNo, Err: errors.New("unexpected data after the key")}
		}
		var from *FromPatterns
		var expires time.Time
		if enforce {
			if from, expires, err = keyOptions(options, loc); err != nil {
				return nil, nil, &ParseError{Line: lineNo, Err: err}
			}
		}
		key, reason := usableKey(pub, user)
		if key == nil {
			warnings = append(warnings, Warning{Line: lineNo, Reason: reason})
			continue
		}
		key.Line, key.From, key.Expires = lineNo, from, expires
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
