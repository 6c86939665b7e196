package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"iter"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Reason is why a certificate chain is refused.
type Reason string

// The reasons of a Refusal.
const (
	Revoked    Reason = "revoked"    // a certificate's serial is in its issuer's CRL
	Banned     Reason = "banned"     // the denylist names a certificate of the chain
	Stale      Reason = "stale"      // a CRL or the denylist is missing or past due beyond MaxStale
	Expired    Reason = "expired"    // a certificate of the chain is past its notAfter
	Unverified Reason = "unverified" // there is no verified chain to judge
)

// Refusal is the error of a refused chain.
type Refusal struct {
	Reason Reason
	// Cert is the certificate of the chain the refusal is about: the
	// revoked, banned or expired one, or the one whose status is unknown.
	Cert   *x509.Certificate
	Detail string
}

func (r *Refusal) Error() string {
	if r.Cert == nil {
		return fmt.Sprintf("%s: %s", r.Reason, r.Detail)
	}
	return fmt.Sprintf("%s: certificate %q (serial %s): %s", r.Reason, r.Cert.Subject.String(), r.Cert.SerialNumber, r.Detail)
}

// points yields the HTTP(S) distribution points of cert that are
// followed.
func points(cert *x509.Certificate) iter.Seq[string] {
	return func(yield func(string) bool) {
		n := 0
		for _, p := range cert.CRLDistributionPoints {
			if !IsURL(p) {
				continue
			}
			if n++; n > maxPointsPerCert || !yield(p) {
				return
			}
		}
	}
}

// issuerOf is the certificate that issued chain[i]: the next one, or the
// last itself if it is self-issued; nil if it is not in the chain.
func issuerOf(chain []*x509.Certificate, i int) *x509.Certificate {
	if i+1 < len(chain) {
		return chain[i+1]
	}
	if c := chain[i]; bytes.Equal(c.RawIssuer, c.RawSubject) {
		return c
	}
	return nil
}

// issued yields every certificate of chains whose issuer is in its chain,
// with that issuer: the certificates whose CRLs can be checked.
func issued(chains [][]*x509.Certificate) iter.Seq2[*x509.Certificate, *x509.Certificate] {
	return func(yield func(cert, issuer *x509.Certificate) bool) {
		for _, chain := range chains {
			for i, cert := range chain {
				if issuer := issuerOf(chain, i); issuer != nil && !yield(cert, issuer) {
					return
				}
			}
		}
	}
}

// Check judges the verified chains of a client certificate: nil if they
// pass, else a *Refusal. Every chain is judged; one refused chain refuses
// the certificate. A source that no chain has needed before is fetched
// first, waiting at most 5 s or the fetch timeout (the fetch goes on
// after), or until ctx ends.
func (c *Checker) Check(ctx context.Context, chains [][]*x509.Certificate) error {
	if wait := c.prepare(ctx, chains); len(wait) > 0 {
		t := time.NewTimer(min(firstFetchWait, c.cfg.FetchTimeout))
		defer t.Stop()
	waiting:
		for _, ch := range wait {
			select {
			case <-ch:
			case <-t.C:
				break waiting
			case <-ctx.Done():
				break waiting
			}
		}
	}
	return c.Held(chains)
}

// prepare makes sure every source the chains need is known, remembers the
// CAs that use each, and starts the first fetch of those never fetched. It
// returns what to wait for: the first fetches under way (a retry after a
// failed first fetch is not waited for).
func (c *Checker) prepare(ctx context.Context, chains [][]*x509.Certificate) []chan struct{} {
	c.mu.RLock()
	ready := c.ready(chains)
	var missing []string
	if !ready {
		missing = c.missing(chains)
	}
	c.mu.RUnlock()
	if ready {
		return nil
	}
	// Off the lock: the new sources read their state files.
	built := make(map[string]*crlSource, len(missing))
	for _, p := range missing {
		built[p] = c.newCRLSource(p)
	}
	var wait []chan struct{}
	var learnt []*crlSource // configured sources that learnt an issuer
	defer func() {
		// Off the lock: the CRL, now verified, and its issuers are kept.
		for _, s := range learnt {
			c.keepConfigured(s)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	await := func(s *sourceState, held bool) {
		if !held && !s.attempted {
			c.startFetch(s)
		}
		if !held && s.firstFetching() {
			wait = append(wait, s.fetching)
		}
	}
	if c.deny != nil {
		await(&c.deny.sourceState, c.deny.held != nil)
	}
	for _, s := range c.extra {
		await(&s.sourceState, s.held != nil)
	}
	for cert, issuer := range issued(chains) {
		for p := range points(cert) {
			s := c.crls[p]
			switch {
			case s != nil:
			case c.configured(p) != nil:
				s = c.configured(p) // one source, whatever names it
				c.crls[p] = s
			case built[p] == nil, len(c.crls) >= maxCRLSources:
				c.capReached(p) // not built: the cap was reached
				continue
			default:
				s = built[p]
				c.crls[p] = s
			}
			if s.addIssuer(issuer) && c.configured(p) == s && !slices.Contains(learnt, s) {
				learnt = append(learnt, s)
			}
			await(&s.sourceState, s.held != nil)
		}
		for _, s := range c.extra {
			if s.held != nil && !s.knows(issuer) && s.held.issuedBy(issuer) && s.addIssuer(issuer) && !slices.Contains(learnt, s) {
				learnt = append(learnt, s)
			}
		}
	}
	return wait
}

// missing lists the distribution points of chains that have no source
// yet, as many as the cap leaves room for; the lock is held for reading.
func (c *Checker) missing(chains [][]*x509.Certificate) []string {
	var out []string
	for cert := range issued(chains) {
		for p := range points(cert) {
			if c.crls[p] == nil && c.configured(p) == nil && !slices.Contains(out, p) && len(c.crls)+len(out) < maxCRLSources {
				out = append(out, p)
			}
		}
	}
	return out
}

// ready reports whether prepare has nothing to do for chains; the lock is
// held for reading.
func (c *Checker) ready(chains [][]*x509.Certificate) bool {
	if c.deny != nil && c.deny.held == nil && (!c.deny.attempted || c.deny.firstFetching()) {
		return false
	}
	for cert, issuer := range issued(chains) {
		for p := range points(cert) {
			s := c.crls[p]
			if s == nil && len(c.crls) >= maxCRLSources && c.configured(p) == nil {
				c.capReached(p)
				continue // not followed: judged unknown
			}
			if s == nil || !s.hasIssuer(issuer) || s.held == nil && (!s.attempted || s.firstFetching()) {
				return false
			}
		}
		for _, s := range c.extra {
			if s.held != nil && !s.hasIssuer(issuer) && s.held.issuedBy(issuer) {
				return false
			}
		}
	}
	for _, s := range c.extra {
		if s.held == nil && (!s.attempted || s.firstFetching()) {
			return false
		}
	}
	return true
}

// capReached logs, once, that the distribution point p is not followed:
// maxCRLSources are.
func (c *Checker) capReached(p string) {
	if c.capWarned.CompareAndSwap(false, true) {
		c.cfg.Logger.Warn("too many CRL distribution points; those of further CAs are not followed (their status is unknown)",
			zap.Int("limit", maxCRLSources), zap.String("source", p))
	}
}

// Held judges chains as Check does, by what is held now: it fetches
// nothing and never waits.
func (c *Checker) Held(chains [][]*x509.Certificate) error {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return &Refusal{Reason: Unverified, Detail: "no verified certificate chain"}
	}
	now := c.now()
	c.mu.RLock()
	defer c.mu.RUnlock()
	var stale error
	for _, chain := range chains {
		// Root first, as the node does: a revoked CA is reported as such
		// rather than as the stale CRL of a certificate below it.
		for i := len(chain) - 1; i >= 0; i-- {
			err := c.judge(chain, i, now)
			if r, ok := err.(*Refusal); ok && r.Reason != Stale {
				return err
			}
			if stale == nil {
				stale = err
			}
		}
	}
	return stale
}

// judge gives the verdict on chain[i]; the lock is held for reading.
func (c *Checker) judge(chain []*x509.Certificate, i int, now time.Time) error {
	cert := chain[i]
	if now.After(cert.NotAfter) {
		return &Refusal{Reason: Expired, Cert: cert, Detail: "past its notAfter " + cert.NotAfter.UTC().Format(time.RFC3339)}
	}
	var unknown error
	note := func(err error) {
		if unknown == nil {
			unknown = err
		}
	}
	if d := c.deny; d != nil {
		if e, banned := d.held.Bans(cert); banned {
			return &Refusal{Reason: Banned, Cert: cert, Detail: "on the Nuts denylist: " + e.Reason}
		}
		if d.held == nil {
			note(c.unknown(&d.sourceState, cert, now, time.Time{}, "denylist not fetched yet"))
		} else if due := refreshDue(d.lastSuccess, c.cfg.Refresh); !now.Before(due) {
			note(c.unknown(&d.sourceState, cert, now, due, "denylist past due"))
		}
	}
	issuer := issuerOf(chain, i)
	if issuer == nil {
		return unknown
	}
	for p := range points(cert) {
		s := c.crls[p]
		switch {
		case s == nil:
			note(c.unknown(nil, cert, now, time.Time{}, "CRL "+p+" not fetched yet"))
		case s.held == nil:
			note(c.unknown(&s.sourceState, cert, now, time.Time{}, "CRL "+p+" not fetched yet"))
		case !s.held.issuedBy(issuer):
			note(c.unknown(&s.sourceState, cert, now, time.Time{}, "CRL "+p+" is not signed by the certificate's issuer"))
		case s.held.revokes(cert):
			return &Refusal{Reason: Revoked, Cert: cert, Detail: "listed in CRL " + p}
		default:
			if due := s.held.due(s.lastSuccess, c.cfg.Refresh); !now.Before(due) {
				note(c.unknown(&s.sourceState, cert, now, due, "CRL "+p+" past due"))
			}
		}
	}
	for _, s := range c.extra {
		switch {
		case s.held == nil && (len(s.issuers) == 0 || s.knows(issuer)):
			// Never held: it cannot say which CA it covers, unless one is
			// remembered.
			note(c.unknown(&s.sourceState, cert, now, time.Time{}, "CRL "+s.name+" not fetched yet"))
			continue
		case s.held == nil, !bytes.Equal(s.held.list.RawIssuer, issuer.RawSubject):
			continue // another CA's
		case !s.held.issuedBy(issuer):
			note(c.unknown(&s.sourceState, cert, now, time.Time{}, "CRL "+s.name+" is in the name of the certificate's issuer but not signed by it"))
			continue
		}
		if s.held.revokes(cert) {
			return &Refusal{Reason: Revoked, Cert: cert, Detail: "listed in CRL " + s.name}
		}
		if due := s.held.due(s.lastSuccess, c.cfg.Refresh); !now.Before(due) {
			note(c.unknown(&s.sourceState, cert, now, due, "CRL "+s.name+" past due"))
		}
	}
	return unknown
}

// pastMaxStale reports whether, at now, a source past due since due is
// past MaxStale (set).
func (c *Checker) pastMaxStale(due, now time.Time) bool {
	return !now.Before(due.Add(c.cfg.MaxStale))
}

// unknown decides, at now, on a certificate whose status a source cannot
// establish: past due since due (zero: never held). Past MaxStale it is a Stale
// refusal; before, or without MaxStale, it passes, with a warning now and
// then (once a minute per source; once a minute for all the sources not
// known yet, s nil).
func (c *Checker) unknown(s *sourceState, cert *x509.Certificate, now, due time.Time, detail string) error {
	if c.cfg.MaxStale > 0 && (due.IsZero() || c.pastMaxStale(due, now)) {
		return &Refusal{Reason: Stale, Cert: cert, Detail: detail}
	}
	warned := &c.warned // a source not known yet
	if s != nil {
		warned = &s.warned
	}
	last := warned.Load()
	if now.UnixNano()-last < int64(warnEvery) || !warned.CompareAndSwap(last, now.UnixNano()) {
		return nil
	}
	c.cfg.Logger.Warn("certificate status unknown; passed (max_stale not reached or off)",
		zap.String("subject", cert.Subject.String()), zap.String("serial", cert.SerialNumber.String()), zap.String("detail", detail))
	return nil
}
