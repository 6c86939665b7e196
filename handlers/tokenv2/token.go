package tokenv2

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// MaxCredentialBytes is the longest bearer credential the node accepts.
const MaxCredentialBytes = 4096

// MaxLifetime is how far exp may lie after nbf and after iat: 24.5 hours.
const MaxLifetime = 1470 * time.Minute

// Reason names why a token was refused. The set is fixed, so it can label
// metrics; the detail of a refusal is in Refusal.Detail.
type Reason string

// The reasons a request is refused.
const (
	ReasonNoHeader        Reason = "no_authorization"
	ReasonNotBearer       Reason = "not_bearer"
	ReasonTooLong         Reason = "too_long"
	ReasonMalformed       Reason = "malformed"
	ReasonAlgorithm       Reason = "algorithm"
	ReasonHeaderParameter Reason = "header_parameter"
	ReasonNoKeyID         Reason = "no_kid"
	ReasonUnknownKey      Reason = "unknown_key"
	ReasonKeyMismatch     Reason = "key_mismatch"
	ReasonSignature       Reason = "signature"
	ReasonClaims          Reason = "claims"
	ReasonExpired         Reason = "expired"
	ReasonNotYetValid     Reason = "not_yet_valid"
	ReasonAudience        Reason = "audience"
	ReasonLifetime        Reason = "lifetime"
	ReasonIssuer          Reason = "issuer"
	ReasonKeyFrom         Reason = "key_from"
	ReasonKeyExpired      Reason = "key_expired"
)

// Refusal is the error returned for a request that must not pass.
type Refusal struct {
	Reason Reason
	Detail string
	// RetryAfter, for ReasonFailureBudget only, is how long until the
	// client may have a signature checked again.
	RetryAfter time.Duration
}

func (r *Refusal) Error() string { return string(r.Reason) + ": " + r.Detail }

func refuse(reason Reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Grant is what a request that passes is known by.
type Grant struct {
	// User is the user name of the key that signed the token.
	User string
	// Subject and JTI are the token's sub and jti claims.
	Subject string
	JTI     string
	// Expiry is the token's exp claim.
	Expiry time.Time
	// Cached tells that the token had already been verified.
	Cached bool
	// Key is the key that signed the token.
	Key *Key
}

// algorithms maps each allowed JWS algorithm to its verifier and to a check
// that the key fits it. ES256, ES384 and ES512 are paired with their curves
// as RFC 7518 does.
var algorithms = map[string]struct {
	method jwt.SigningMethod
	fits   func(any) bool
}{
	"ES256": {jwt.SigningMethodES256, curveIs(elliptic.P256())},
	"ES384": {jwt.SigningMethodES384, curveIs(elliptic.P384())},
	"ES512": {jwt.SigningMethodES512, curveIs(elliptic.P521())},
	"EdDSA": {jwt.SigningMethodEdDSA, func(k any) bool { _, ok := k.(ed25519.PublicKey); return ok }},
	"RS512": {jwt.SigningMethodRS512, isRSA},
	"PS512": {ps512, isRSA},
}

// ps512 verifies PS512 as the node does: the PSS salt must be exactly as
// long as the hash (64 bytes). golang-jwt's own PS512 accepts any salt
// length on verification.
var ps512 = &jwt.SigningMethodRSAPSS{
	SigningMethodRSA: jwt.SigningMethodPS512.SigningMethodRSA,
	Options:          &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash},
}

func curveIs(c elliptic.Curve) func(any) bool {
	return func(k any) bool {
		ek, ok := k.(*ecdsa.PublicKey)
		return ok && ek.Curve == c
	}
}

func isRSA(k any) bool { _, ok := k.(*rsa.PublicKey); return ok }

// b64 decodes the parts of a compact JWS. Only canonical unpadded base64url
// is accepted.
var b64 = base64.RawURLEncoding.Strict()

// Credential returns the bearer token of an Authorization header value: the
// header must split on white space into exactly two fields, the first of
// them "bearer" in any letter case, the second at most MaxCredentialBytes.
func Credential(authorization string) (string, error) {
	if authorization == "" {
		return "", refuse(ReasonNoHeader, "no Authorization header")
	}
	fields := strings.Fields(authorization)
	if len(fields) != 2 || !strings.EqualFold(fields[0], "bearer") {
		return "", refuse(ReasonNotBearer, "Authorization is not a bearer credential")
	}
	if len(fields[1]) > MaxCredentialBytes {
		return "", refuse(ReasonTooLong, "credential is %d bytes, more than %d", len(fields[1]), MaxCredentialBytes)
	}
	return fields[1], nil
}

// Policy is the part of the token_v2 rules that an operator configures.
type Policy struct {
	// Audience must be in the token's aud claim.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// IgnoreKeyOptions ignores the from= and expiry-time= options of the
	// authorized_keys file, as the node does, instead of enforcing them.
	IgnoreKeyOptions bool
}

// checked is a token that passed every rule but its signature.
type checked struct {
	method jwt.SigningMethod
	input  string // the signing input: header and claims parts
	sig    []byte
	key    *Key
	grant  Grant
}

// precheck applies every rule but the signature, cheap checks all: the form,
// the header, the key that kid names, and the claims. A forged token that
// fails any of them costs no signature check.
func precheck(token string, ks *KeySet, p Policy, now time.Time) (*checked, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, refuse(ReasonMalformed, "not a compact JWS: %d parts", len(parts))
	}
	header, err := decodePart(parts[0], "header")
	if err != nil {
		return nil, err
	}
	alg, kid, err := checkHeader(header)
	if err != nil {
		return nil, err
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return nil, refuse(ReasonMalformed, "signature is not base64url")
	}
	key, ok := ks.Lookup(kid)
	if !ok {
		return nil, refuse(ReasonUnknownKey, "kid %q names no authorized key", kid)
	}
	a := algorithms[alg]
	if !a.fits(key.Public) {
		return nil, refuse(ReasonKeyMismatch, "%s does not fit the key of line %d", alg, key.Line)
	}
	claims, err := decodePart(parts[1], "claims")
	if err != nil {
		return nil, err
	}
	g, err := checkClaims(claims, key, p, now)
	if err != nil {
		return nil, err
	}
	if key.expired(now) {
		return nil, key.Allows(netip.Addr{}, now)
	}
	return &checked{method: a.method, input: token[:len(parts[0])+1+len(parts[1])], sig: sig, key: key, grant: g}, nil
}

// checkSignature verifies the signature of a token that passed precheck: the
// one costly check, made last.
func (c *checked) checkSignature() error {
	if err := c.method.Verify(c.input, c.sig, c.key.Public); err != nil {
		return refuse(ReasonSignature, "signature does not verify with the key of line %d", c.key.Line)
	}
	return nil
}

func decodePart(part, what string) (map[string]json.RawMessage, error) {
	raw, err := b64.DecodeString(part)
	if err != nil {
		return nil, refuse(ReasonMalformed, "%s is not base64url", what)
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, refuse(ReasonMalformed, "%s: %v", what, err)
	}
	return obj, nil
}

// checkHeader applies the rules on the protected header and returns its alg
// and kid.
func checkHeader(h map[string]json.RawMessage) (alg, kid string, err error) {
	if json.Unmarshal(h["alg"], &alg) != nil {
		return "", "", refuse(ReasonAlgorithm, "alg is missing or not a string")
	}
	if _, ok := algorithms[alg]; !ok {
		return "", "", refuse(ReasonAlgorithm, "alg %q is not allowed", alg)
	}
	for _, name := range []string{"jwk", "x5c", "crit", "b64"} {
		if _, ok := h[name]; ok {
			return "", "", refuse(ReasonHeaderParameter, "header parameter %q is not allowed", name)
		}
	}
	// The node reads these registered parameters into string fields: any
	// other JSON type than a string (or null, the same as absent) refuses.
	for _, name := range []string{"typ", "cty", "x5t", "x5t#S256"} {
		if v, ok := h[name]; ok && v[0] != '"' && !bytes.Equal(v, []byte("null")) {
			return "", "", refuse(ReasonHeaderParameter, "header parameter %q is not a string", name)
		}
	}
	for _, name := range []string{"jku", "x5u"} {
		if v, ok := h[name]; ok && !bytes.Equal(v, []byte("null")) && !bytes.Equal(v, []byte(`""`)) {
			return "", "", refuse(ReasonHeaderParameter, "header parameter %q is not allowed", name)
		}
	}
	raw, ok := h["kid"]
	if !ok {
		return "", "", refuse(ReasonNoKeyID, "header has no kid")
	}
	if json.Unmarshal(raw, &kid) != nil || kid == "" {
		return "", "", refuse(ReasonNoKeyID, "kid is not a non-empty string")
	}
	return alg, kid, nil
}

// checkClaims applies the rules on the claims of a token whose kid names
// key; its signature is checked after them.
func checkClaims(c map[string]json.RawMessage, key *Key, p Policy, now time.Time) (Grant, error) {
	for _, name := range []string{"jti", "iat", "exp", "nbf", "aud", "iss", "sub"} {
		if _, ok := c[name]; !ok {
			return Grant{}, refuse(ReasonClaims, "claim %s is missing", name)
		}
	}
	var dates [3]int64 // iat, nbf, exp
	for i, name := range []string{"iat", "nbf", "exp"} {
		d, err := parseDate(c[name])
		if err != nil {
			return Grant{}, refuse(ReasonClaims, "claim %s: %v", name, err)
		}
		dates[i] = d
	}
	iat, nbf, exp := time.Unix(dates[0], 0), time.Unix(dates[1], 0), time.Unix(dates[2], 0)
	now = now.Truncate(time.Second)
	switch {
	case !now.Before(exp.Add(p.Leeway)):
		return Grant{}, refuse(ReasonExpired, "exp %d is not in the future", dates[2])
	case now.Before(nbf.Add(-p.Leeway)):
		return Grant{}, refuse(ReasonNotYetValid, "nbf %d is in the future", dates[1])
	case now.Before(iat.Add(-p.Leeway)):
		return Grant{}, refuse(ReasonNotYetValid, "iat %d is in the future", dates[0])
	case exp.Sub(nbf) > MaxLifetime || exp.Sub(iat) > MaxLifetime:
		return Grant{}, refuse(ReasonLifetime, "exp is more than %v after nbf or iat", MaxLifetime)
	case iat.After(nbf):
		return Grant{}, refuse(ReasonClaims, "iat is after nbf")
	}
	if !hasAudience(c["aud"], p.Audience) {
		return Grant{}, refuse(ReasonAudience, "aud does not hold %q", p.Audience)
	}
	var jti, sub, iss string
	if json.Unmarshal(c["jti"], &jti) != nil || uuid.Validate(jti) != nil {
		return Grant{}, refuse(ReasonClaims, "jti is not a UUID")
	}
	if json.Unmarshal(c["sub"], &sub) != nil || sub == "" {
		return Grant{}, refuse(ReasonClaims, "sub is not a non-empty string")
	}
	if json.Unmarshal(c["iss"], &iss) != nil || iss != key.User {
		return Grant{}, refuse(ReasonIssuer, "iss is not the user name of the key of line %d", key.Line)
	}
	return Grant{User: key.User, Subject: sub, JTI: jti, Expiry: exp, Key: key}, nil
}

// hasAudience reports whether aud, a string or an array of strings, holds
// want. An array with any element that is not a string refuses.
func hasAudience(aud json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == want
	}
	var many []string
	if json.Unmarshal(aud, &many) != nil || many == nil {
		return false
	}
	for _, a := range many {
		if a == want {
			return true
		}
	}
	return false
}
