package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/go-jose/go-jose/v4"
)

// MaxDenylistSize bounds a denylist (1 MiB): a longer input is refused before it is parsed.
const MaxDenylistSize = 1 << 20

// defaultSignerPKIX is the node's built-in pki.denylist.trustedsigner: an Ed25519 public key,
// PKIX DER in base64.
const defaultSignerPKIX = "MCowBQYDK2VwAyEAmKjcSOrKOJR2cYd6UNbemNeusvjs930Y4nCIZ1R2zCI="

var defaultSigner = func() ed25519.PublicKey {
	der, err := base64.StdEncoding.DecodeString(defaultSignerPKIX)
	if err != nil {
		panic("pki: built-in denylist signer: " + err.Error())
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		panic("pki: built-in denylist signer: " + err.Error())
	}
	return pub.(ed25519.PublicKey)
}()

// DefaultSigner returns the key a Nuts node trusts by default to sign the denylist (the node's
// built-in pki.denylist.trustedsigner). The caller gets its own copy.
func DefaultSigner() ed25519.PublicKey {
	return bytes.Clone(defaultSigner)
}

// ParseSigner reads a trusted denylist signer: a PEM block "PUBLIC KEY" (PKIX) holding an
// Ed25519 public key, as the node's pki.denylist.trustedsigner. Text around the block is
// ignored.
func ParseSigner(pemData []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("trusted signer: not PEM: no -----BEGIN block found")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("trusted signer: not a public key: PEM block is %q, want \"PUBLIC KEY\"", clip(block.Type))
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("trusted signer: not a public key: %v", err)
	}
	key, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("trusted signer: not Ed25519: the key is %s", keyKind(pub))
	}
	return key, nil
}

// DenyEntry is one entry of the Nuts denylist. It bans a certificate when all three of Issuer,
// SerialNumber and JWKThumbprint match it.
type DenyEntry struct {
	// Issuer is the certificate's issuer as Go renders it (x509.Certificate.Issuer.String()),
	// e.g. "CN=Nuts Development Network Root CA".
	Issuer string `json:"issuer"`
	// SerialNumber is the certificate's serial number in decimal.
	SerialNumber string `json:"serialnumber"`
	// JWKThumbprint is the RFC 7638 SHA-256 thumbprint of the certificate's public key,
	// base64url without padding (see Thumbprint).
	JWKThumbprint string `json:"jwkthumbprint"`
	// Reason is the publisher's free-text reason; it may be empty.
	Reason string `json:"reason"`
}

// Denylist is a verified Nuts denylist. It is immutable and safe for concurrent use.
type Denylist struct {
	entries []DenyEntry
	// bySerial indexes entries by serial number (decimal), so that a certificate whose serial
	// is in no entry costs one map lookup.
	bySerial map[string][]int
}

// ParseDenylist verifies a Nuts denylist and reads its entries. jws is the list as published:
// a compact JWS signed with EdDSA by signer; white space around it is ignored.
//
// It refuses, with an error naming the problem: more than MaxDenylistSize bytes; anything but
// a compact JWS; an alg other than EdDSA; a protected header other than alg, typ and kid (crit,
// b64, jwk, x5c, jku... could change what is verified or with which key, so they are refused
// rather than ignored); a signature that does not verify with signer; a payload that is not a
// JSON array of objects; an entry whose issuer, serialnumber or jwkthumbprint is missing, empty
// or not a string, whose serialnumber is not a decimal integer in canonical form (as
// SerialNumber.String() writes it) or whose jwkthumbprint is not a base64url SHA-256 digest
// (such entries could never match a certificate). Unknown entry members are ignored.
func ParseDenylist(jws []byte, signer ed25519.PublicKey) (*Denylist, error) {
	if len(jws) > MaxDenylistSize {
		return nil, fmt.Errorf("denylist: too large: %d bytes, the limit is %d", len(jws), MaxDenylistSize)
	}
	if len(signer) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("denylist: trusted signer is not an Ed25519 public key (%d bytes, want %d)", len(signer), ed25519.PublicKeySize)
	}
	text := bytes.TrimSpace(jws)
	if len(text) == 0 {
		return nil, errors.New("denylist: empty")
	}
	header, err := compactHeader(text)
	if err != nil {
		return nil, fmt.Errorf("denylist: %w", err)
	}
	if err := checkHeader(header); err != nil {
		return nil, fmt.Errorf("denylist: protected header: %w", err)
	}
	if text[len(text)-1] == '.' {
		return nil, errors.New("denylist: not signed: the signature part is empty")
	}
	sig, err := jose.ParseSignedCompact(string(text), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("denylist: not a valid compact JWS: %v", err)
	}
	payload, err := sig.Verify(signer)
	if err != nil {
		return nil, errors.New("denylist: signature does not verify with the trusted signer")
	}
	entries, err := parseEntries(payload)
	if err != nil {
		return nil, fmt.Errorf("denylist: %w", err)
	}
	return newDenylist(entries), nil
}

// compactHeader checks that text has the form of a compact JWS (three base64url parts, the
// protected header not empty) and returns the decoded protected header.
func compactHeader(text []byte) ([]byte, error) {
	dots := 0
	for _, c := range text {
		switch {
		case c == '.':
			dots++
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return nil, fmt.Errorf("not a compact JWS: unexpected character %q", c)
		}
	}
	if dots != 2 {
		return nil, fmt.Errorf("not a compact JWS: %d parts, want 3 separated by dots", dots+1)
	}
	parts := bytes.SplitN(text, []byte("."), 3)
	if len(parts[0]) == 0 {
		return nil, errors.New("not a compact JWS: empty protected header")
	}
	header, err := base64.RawURLEncoding.DecodeString(string(parts[0]))
	if err != nil {
		return nil, fmt.Errorf("not a compact JWS: protected header is not base64url: %v", err)
	}
	return header, nil
}

// checkHeader accepts a protected header that is a JSON object with alg "EdDSA" and, besides,
// only typ and kid (strings), each at most once.
func checkHeader(header []byte) error {
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	alg := ""
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("not a JSON object")
		}
		name, _ := tok.(string)
		if seen[name] {
			return fmt.Errorf("%q appears twice", clip(name))
		}
		seen[name] = true
		switch name {
		case "alg", "typ", "kid":
		default:
			return fmt.Errorf("%q is not allowed (only alg, typ and kid)", clip(name))
		}
		var value string
		if err := dec.Decode(&value); err != nil {
			return fmt.Errorf("%q is not a string", name)
		}
		if name == "alg" {
			alg = value
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	if !seen["alg"] {
		return errors.New("no alg")
	}
	if alg != string(jose.EdDSA) {
		return fmt.Errorf("alg %q is not allowed, want EdDSA", clip(alg))
	}
	return nil
}

// parseEntries reads a verified denylist payload: a JSON array of objects, each with string
// members issuer, serialnumber, jwkthumbprint and, optionally, reason. Member names are
// matched exactly and may appear once; other members are ignored.
func parseEntries(payload []byte) ([]DenyEntry, error) {
	trimmed := bytes.TrimLeft(payload, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, errors.New("payload is not a JSON array: empty")
	}
	if trimmed[0] != '[' {
		return nil, fmt.Errorf("payload is not a JSON array: it starts with %q", clip(string(trimmed[:min(len(trimmed), 8)])))
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("payload is not valid JSON: %v", err)
	}
	entries := make([]DenyEntry, 0, len(raw))
	for i, r := range raw {
		e, err := parseEntry(r)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseEntry(raw []byte) (DenyEntry, error) {
	var e DenyEntry
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return e, errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return e, errors.New("not a JSON object")
		}
		name, _ := tok.(string)
		var field *string
		switch name {
		case "issuer":
			field = &e.Issuer
		case "serialnumber":
			field = &e.SerialNumber
		case "jwkthumbprint":
			field = &e.JWKThumbprint
		case "reason":
			field = &e.Reason
		}
		if field == nil {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return e, errors.New("not a JSON object")
			}
			continue
		}
		if seen[name] {
			return e, fmt.Errorf("%s appears twice", name)
		}
		seen[name] = true
		var value *string
		if err := dec.Decode(&value); err != nil || value == nil {
			return e, fmt.Errorf("%s is not a string", name)
		}
		*field = *value
	}
	switch {
	case e.Issuer == "":
		return e, errors.New("missing issuer")
	case e.SerialNumber == "":
		return e, errors.New("missing serialnumber")
	case e.JWKThumbprint == "":
		return e, errors.New("missing jwkthumbprint")
	}
	if !isDecimal(e.SerialNumber) {
		return e, fmt.Errorf("serialnumber %q is not a decimal integer in canonical form", clip(e.SerialNumber))
	}
	if !isThumbprint(e.JWKThumbprint) {
		return e, fmt.Errorf("jwkthumbprint %q is not a base64url SHA-256 thumbprint (43 characters)", clip(e.JWKThumbprint))
	}
	return e, nil
}

// isDecimal reports whether s is an integer written as big.Int's String writes it: digits
// without leading zeros, "-" before a negative number.
func isDecimal(s string) bool {
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
		if s == "0" {
			return false
		}
	}
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isThumbprint reports whether s is a SHA-256 digest in canonical unpadded base64url.
func isThumbprint(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(32) {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

func newDenylist(entries []DenyEntry) *Denylist {
	l := &Denylist{entries: entries, bySerial: make(map[string][]int, len(entries))}
	for i, e := range entries {
		l.bySerial[e.SerialNumber] = append(l.bySerial[e.SerialNumber], i)
	}
	return l
}

// Entries returns a copy of the list's entries, in the order of the list.
func (l *Denylist) Entries() []DenyEntry {
	if l == nil {
		return nil
	}
	return append([]DenyEntry(nil), l.entries...)
}

// Len returns the number of entries. A nil *Denylist has none.
func (l *Denylist) Len() int {
	if l == nil {
		return 0
	}
	return len(l.entries)
}

// Bans reports the first entry that bans cert: its issuer, serial number and public key
// thumbprint all match. A certificate whose serial number is in no entry costs one map lookup;
// the thumbprint is computed only when serial and issuer match. A nil *Denylist bans nothing,
// and a key whose thumbprint cannot be computed matches no entry.
func (l *Denylist) Bans(cert *x509.Certificate) (DenyEntry, bool) {
	if l == nil || cert == nil || len(l.bySerial) == 0 {
		return DenyEntry{}, false
	}
	var buf [64]byte
	idx := l.bySerial[string(cert.SerialNumber.Append(buf[:0], 10))]
	if len(idx) == 0 {
		return DenyEntry{}, false
	}
	issuer := cert.Issuer.String()
	thumbprint, computed := "", false
	for _, i := range idx {
		e := l.entries[i]
		if e.Issuer != issuer {
			continue
		}
		if !computed {
			tp, err := Thumbprint(cert)
			if err != nil {
				return DenyEntry{}, false
			}
			thumbprint, computed = tp, true
		}
		if e.JWKThumbprint == thumbprint {
			return e, true
		}
	}
	return DenyEntry{}, false
}

// Thumbprint returns the RFC 7638 SHA-256 JWK thumbprint of cert's public key, base64url
// without padding: the jwkthumbprint of a denylist entry. RSA, ECDSA (P-256, P-384, P-521)
// and Ed25519 keys are supported.
func Thumbprint(cert *x509.Certificate) (string, error) {
	if cert == nil || cert.PublicKey == nil {
		return "", errors.New("thumbprint: certificate has no public key")
	}
	sum, err := (&jose.JSONWebKey{Key: cert.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %s key: %v", keyKind(cert.PublicKey), err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// keyKind names a public key's type for error messages.
func keyKind(pub any) string {
	switch pub.(type) {
	case ed25519.PublicKey:
		return "Ed25519"
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	case *ecdh.PublicKey:
		return "X25519"
	}
	return fmt.Sprintf("%T", pub)
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
