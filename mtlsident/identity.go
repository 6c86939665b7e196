// Package mtlsident identifies the client of a request by its verified TLS
// client certificate, matches it against deny lists, and encodes the
// certificate for the header in which a Nuts node reads it when TLS is
// offloaded to a proxy. A deny list kept in a file is a Store, which writes
// changes to the file and follows edits of it by hand (Watch). Streams and
// Conns track the open requests and the connections of identified clients,
// so that denying a client cuts off what it holds, and bound how many
// requests one client keeps open. It has no Caddy import.
package mtlsident

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// oidCommonName is the attribute type of a subject's CN.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// Identity is who a client is, by its verified leaf certificate.
type Identity struct {
	// Subject is the certificate's subject DN as an RFC 2253 string, rendered
	// from the full raw subject: every RDN, in order. Control characters are
	// escaped as RFC 4514 hex pairs ("\0A" for a line feed), so it is one
	// line, in logs and placeholders alike, and a deny entry as it is.
	Subject string
	// CN is the subject's common name, empty if it has none; control
	// characters escaped as in Subject.
	CN string
	// Fingerprint is the SHA-256 of the certificate's DER, lower-case hex.
	Fingerprint string
	// Issuer is the issuer DN as an RFC 2253 string, escaped as Subject.
	Issuer string
	// NotAfter is when the certificate expires.
	NotAfter time.Time
	// Chains are the verified chains of the certificate on the connection
	// it was identified on, set by the caller (Identify does not).
	Chains [][]*x509.Certificate

	subjectKey     string // normalised Subject, for deny-list matching
	fingerprintKey string // "sha256:" + Fingerprint, for deny-list matching
	pemValue       string // the certificate as FormatPEM writes it
	derValue       string // the certificate as FormatDER writes it
}

// Forward returns the forwarding-header value of the certificate in format f,
// encoded once when the certificate was identified.
func (id Identity) Forward(f Format) string {
	if f == FormatDER {
		return id.derValue
	}
	return id.pemValue
}

// ErrAmbiguous is returned for a certificate whose subject holds more than
// one CN: which of them names the client is not clear, so it is refused.
var ErrAmbiguous = errors.New("certificate subject holds more than one CN")

// cacheSize bounds how many certificates Identify remembers.
const cacheSize = 10000

// identities remembers the identities of the certificates Identify has seen,
// keyed by fingerprint, since a client sends many requests.
var identities = struct {
	sync.RWMutex
	m map[[sha256.Size]byte]cachedIdentity
}{m: make(map[[sha256.Size]byte]cachedIdentity)}

type cachedIdentity struct {
	id  Identity
	err error
}

// Identify returns FromCertificate(cert), remembering it for the next
// request with the same certificate.
func Identify(cert *x509.Certificate) (Identity, error) {
	sum := sha256.Sum256(cert.Raw)
	identities.RLock()
	c, ok := identities.m[sum]
	identities.RUnlock()
	if ok {
		return c.id, c.err
	}
	c.id, c.err = fromCertificate(cert, sum)
	identities.Lock()
	for k := range identities.m {
		if len(identities.m) < cacheSize {
			break
		}
		delete(identities.m, k)
	}
	identities.m[sum] = c
	identities.Unlock()
	return c.id, c.err
}

// FromCertificate returns the identity of a verified leaf certificate.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	return fromCertificate(cert, sha256.Sum256(cert.Raw))
}

func fromCertificate(cert *x509.Certificate, sum [sha256.Size]byte) (Identity, error) {
	subject, err := parseName(cert.RawSubject)
	if err != nil {
		return Identity{}, fmt.Errorf("reading certificate subject: %v", err)
	}
	issuer, err := parseName(cert.RawIssuer)
	if err != nil {
		return Identity{}, fmt.Errorf("reading certificate issuer: %v", err)
	}
	var cn string
	cns := 0
	for _, rdn := range subject {
		for _, atv := range rdn {
			if atv.Type.Equal(oidCommonName) {
				cns++
				cn = escapeControls(fmt.Sprint(atv.Value))
			}
		}
	}
	if cns > 1 {
		return Identity{}, ErrAmbiguous
	}
	id := Identity{
		Subject:     escapeControls(subject.String()),
		CN:          cn,
		Fingerprint: hex.EncodeToString(sum[:]),
		Issuer:      escapeControls(issuer.String()),
		NotAfter:    cert.NotAfter,
	}
	key, err := normalizeDN(trimEntry(id.Subject)) // as ParseEntry reads it
	if err != nil {
		return Identity{}, fmt.Errorf("normalising subject %q: %v", id.Subject, err)
	}
	id.subjectKey, id.fingerprintKey = key, fingerprintPrefix+id.Fingerprint
	id.pemValue, id.derValue = FormatPEM.Encode(cert), FormatDER.Encode(cert)
	return id, nil
}

// parseName decodes a raw DER Name into its RDN sequence. Unlike
// x509.Certificate.Subject it keeps every attribute, repeated CNs included.
// A value of a string type is decoded as OpenSSL reads it (decodeString), so
// that what openssl prints of a certificate is a deny entry for it; a value
// of another type is what encoding/asn1 makes of it, or, if nothing, "#" and
// the hex of its DER, so that no two values read the same.
func parseName(raw []byte) (pkix.RDNSequence, error) {
	var rdns []rawRDNSET
	rest, err := asn1.Unmarshal(raw, &rdns)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, errors.New("trailing data after the name")
	}
	name := make(pkix.RDNSequence, len(rdns))
	for i, rdn := range rdns {
		name[i] = make(pkix.RelativeDistinguishedNameSET, len(rdn))
		for j, a := range rdn {
			name[i][j] = pkix.AttributeTypeAndValue{Type: a.Type, Value: attributeValue(a.Value)}
		}
	}
	return name, nil
}

// rawRDNSET is an RDN whose values are left encoded.
type rawRDNSET []struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

func attributeValue(v asn1.RawValue) any {
	if s, ok := decodeString(v); ok {
		return s
	}
	var decoded any
	if rest, err := asn1.Unmarshal(v.FullBytes, &decoded); err == nil && len(rest) == 0 && decoded != nil {
		return decoded
	}
	return "#" + hex.EncodeToString(v.FullBytes)
}
