package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"
)

// MaxCRLSize bounds a CRL (32 MiB).
const MaxCRLSize = 32 << 20

// clockSkew is how far in the future a CRL's thisUpdate may be: the CA's
// clock may run a little ahead of ours.
const clockSkew = time.Minute

// maxIssuersPerSource bounds the CAs remembered for one CRL source.
const maxIssuersPerSource = 8

// ParseCRL reads a CRL in DER or PEM ("X509 CRL").
func ParseCRL(data []byte) (*x509.RevocationList, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %q is not an X509 CRL", b.Type)
		}
		data = b.Bytes
	} else if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		return nil, errors.New("malformed PEM")
	}
	list, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("not a CRL: %v", err)
	}
	return list, nil
}

// heldCRL is a CRL a source holds, with its revoked serials indexed.
type heldCRL struct {
	list    *x509.RevocationList
	revoked map[string]struct{} // by serialKey
	// trusted is set once the CRL's signature is found to be its issuer's;
	// until then a newer CRL replaces it whatever its number.
	trusted atomic.Bool
	// signedBy caches whether the CRL is signed by an issuer, by the
	// issuer's SubjectPublicKeyInfo.
	signedBy sync.Map
}

func newHeldCRL(list *x509.RevocationList) *heldCRL {
	h := &heldCRL{list: list, revoked: make(map[string]struct{}, len(list.RevokedCertificateEntries))}
	for _, e := range list.RevokedCertificateEntries {
		if e.SerialNumber != nil {
			h.revoked[serialKey(e.SerialNumber)] = struct{}{}
		}
	}
	return h
}

// serialKey is a serial number as a map key: its bytes, after a '-' if it
// is negative (such serials exist in the wild).
func serialKey(n *big.Int) string {
	if n.Sign() < 0 {
		return "-" + string(n.Bytes())
	}
	return string(n.Bytes())
}

// revokes reports whether the CRL lists cert's serial number.
func (h *heldCRL) revokes(cert *x509.Certificate) bool {
	if cert.SerialNumber == nil {
		return false
	}
	_, ok := h.revoked[serialKey(cert.SerialNumber)]
	return ok
}

// issuedBy reports whether issuer issued the CRL: its name is the CRL's
// issuer and its key signed the CRL.
func (h *heldCRL) issuedBy(issuer *x509.Certificate) bool {
	if !bytes.Equal(h.list.RawIssuer, issuer.RawSubject) {
		return false
	}
	key := string(issuer.RawSubjectPublicKeyInfo)
	if ok, found := h.signedBy.Load(key); found {
		return ok.(bool)
	}
	ok := h.list.CheckSignatureFrom(issuer) == nil
	h.signedBy.Store(key, ok)
	if ok {
		h.trusted.Store(true)
	}
	return ok
}

// signedByOneOf reports whether one of issuers issued the CRL.
func (h *heldCRL) signedByOneOf(issuers map[string]*x509.Certificate) bool {
	for _, issuer := range issuers {
		if h.issuedBy(issuer) {
			return true
		}
	}
	return false
}

// due is when the CRL is past due: its nextUpdate, or, without one, as
// the denylist (see refreshDue).
func (h *heldCRL) due(fetched time.Time, refresh time.Duration) time.Time {
	if !h.list.NextUpdate.IsZero() {
		return h.list.NextUpdate
	}
	return refreshDue(fetched, refresh)
}

// refreshDue is when a source without a nextUpdate of its own, fetched
// last at fetched, is past due: a refresh later, plus the time its
// refetch may take to succeed (a retry), so that it is not past due for a
// moment every refresh.
func refreshDue(fetched time.Time, refresh time.Duration) time.Time {
	return fetched.Add(refresh + min(refresh, retryFailed))
}

// crlSource is one place a CRL comes from: a distribution point named by
// certificates, or one configured.
type crlSource struct {
	sourceState
	held *heldCRL
	// issuers are the CAs seen to issue certificates that use this source,
	// by SubjectPublicKeyInfo: a new CRL must be signed by one of them.
	issuers map[string]*x509.Certificate
}

// addIssuer remembers issuer as a CA whose CRL the source serves, and
// reports whether it was new; the Checker's lock is held.
func (s *crlSource) addIssuer(issuer *x509.Certificate) bool {
	key := string(issuer.RawSubjectPublicKeyInfo)
	if _, ok := s.issuers[key]; ok || len(s.issuers) >= maxIssuersPerSource {
		return false
	}
	if s.issuers == nil {
		s.issuers = make(map[string]*x509.Certificate)
	}
	s.issuers[key] = issuer
	return true
}

// knows reports whether issuer itself is remembered; the Checker's lock is
// held, for reading at least.
func (s *crlSource) knows(issuer *x509.Certificate) bool {
	_, ok := s.issuers[string(issuer.RawSubjectPublicKeyInfo)]
	return ok
}

// hasIssuer reports whether issuer is remembered; the Checker's lock is
// held, for reading at least.
func (s *crlSource) hasIssuer(issuer *x509.Certificate) bool {
	_, ok := s.issuers[string(issuer.RawSubjectPublicKeyInfo)]
	return ok || len(s.issuers) >= maxIssuersPerSource
}

// verifyCRL checks a newly fetched CRL, without the Checker's lock: its
// thisUpdate is not in the future nor its nextUpdate before it, and, if any
// CAs are known to issue certificates naming its source (issuers, a copy
// of the source's), it is signed by one of them (then it is trusted: held,
// it guards against rollback). With none known yet (a configured source
// no client's CA has verified), it is not trusted, and judge checks its
// signature against each certificate's issuer. It returns the CRL indexed.
func verifyCRL(list *x509.RevocationList, issuers map[string]*x509.Certificate, now time.Time) (*heldCRL, error) {
	if list.ThisUpdate.After(now.Add(clockSkew)) {
		return nil, fmt.Errorf("CRL thisUpdate %s is in the future", list.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !list.NextUpdate.IsZero() && list.NextUpdate.Before(list.ThisUpdate) {
		return nil, fmt.Errorf("CRL nextUpdate %s is before its thisUpdate", list.NextUpdate.UTC().Format(time.RFC3339))
	}
	held := newHeldCRL(list)
	if len(issuers) > 0 && !held.signedByOneOf(issuers) {
		return nil, errors.New("CRL is not signed by the CA whose certificates name this source")
	}
	return held, nil
}

// noRollback refuses a verified CRL older than the trusted one the source
// holds: issued before it, or with a lower number (or none where it has
// one). The Checker's lock is held.
func (s *crlSource) noRollback(list *x509.RevocationList) error {
	old := s.held
	if old == nil || !old.trusted.Load() {
		return nil
	}
	if list.ThisUpdate.Before(old.list.ThisUpdate) {
		return fmt.Errorf("CRL thisUpdate %s is before the %s of the one held", list.ThisUpdate.UTC().Format(time.RFC3339),
			old.list.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if old.list.Number != nil {
		if list.Number == nil {
			return fmt.Errorf("CRL has no number, the one held has %s", old.list.Number)
		}
		if list.Number.Cmp(old.list.Number) < 0 {
			return fmt.Errorf("CRL number %s is lower than the %s held", list.Number, old.list.Number)
		}
	}
	return nil
}
