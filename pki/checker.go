package pki

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/internal/atomicfile"
)

// Defaults of Config.
const (
	DefaultRefresh      = time.Hour // the Nuts network's rule: CRLs at least hourly
	DefaultFetchTimeout = 10 * time.Second
)

const (
	// firstFetchWait bounds how long a check waits for the first fetch of a
	// source; the fetch goes on in the background.
	firstFetchWait = 5 * time.Second
	// retryFailed bounds how long a source whose fetch failed waits for
	// the next attempt.
	retryFailed = time.Minute
	// maxCRLSources bounds the distribution points a Checker follows.
	maxCRLSources = 1000
	// maxPointsPerCert bounds the distribution points followed per
	// certificate.
	maxPointsPerCert = 8
	// maxFetches bounds the fetches under way at once.
	maxFetches = 4
	// warnEvery bounds how often one source's unknown status is logged.
	warnEvery = time.Minute
)

// Config is what a Checker checks, and how.
type Config struct {
	// Refresh is how often every source is fetched again. Default 1h.
	Refresh time.Duration
	// MaxStale is how far past due a CRL or the denylist may be before the
	// chains it decides on are refused. Zero: never (soft-fail).
	MaxStale time.Duration
	// FetchTimeout bounds one fetch, body included. Default 10s.
	FetchTimeout time.Duration
	// CRLs are further CRL sources (HTTP(S) URLs or files), each applying
	// to the certificates of the CA that signed it.
	CRLs []string
	// Denylist is where the Nuts denylist comes from; empty: none.
	Denylist string
	// Signer is the denylist's trusted signer. Default: DefaultSigner().
	Signer ed25519.PublicKey
	// StateDir keeps the last good CRLs and denylist fetched over HTTP(S);
	// empty: none are kept.
	StateDir string
	// Logger logs fetches that fail and chains passed with an unknown
	// status. Default: none.
	Logger *zap.Logger
	// Changed, if set, is called after what is held may change a verdict:
	// a CRL or denylist replaced, or a source past MaxStale.
	Changed func()
	// FetchFailed, if set, is called with the source of each failed fetch.
	FetchFailed func(source string)
}

// Checker holds the CRLs and the denylist, and judges chains by them.
type Checker struct {
	cfg    Config
	client *http.Client
	now    func() time.Time

	mu    sync.RWMutex
	crls  map[string]*crlSource // by source
	extra []*crlSource          // Config.CRLs
	deny  *denySource           // nil: no denylist

	ctx      context.Context // ends with Stop; every fetch runs in it
	stop     context.CancelFunc
	fetches  sync.WaitGroup
	slots    chan struct{} // one per fetch under way: at most maxFetches
	loopDone chan struct{} // closed when the refresh loop ends; nil if not started
	lastTick time.Time

	capWarned atomic.Bool // maxCRLSources reached and logged
	// warned is the unix nanoseconds of the last warning of an unknown
	// status from a source not known yet.
	warned atomic.Int64
}

// sourceState is what every source records of its fetches; the Checker's
// lock guards it.
type sourceState struct {
	name        string
	attempted   bool // a fetch was started
	lastAttempt time.Time
	lastSuccess time.Time
	lastErr     string
	fetching    chan struct{} // closed when the fetch under way ends; nil: none
	run         func()        // fetches the source once
	warned      atomic.Int64  // unix nanoseconds of the last warning of an unknown status
}

// firstFetching reports whether the first fetch of the source is under
// way: only that one is waited for; a retry after a failure is not.
func (s *sourceState) firstFetching() bool {
	return s.fetching != nil && s.lastAttempt.IsZero()
}

// nextAttempt is when the source is fetched again: a refresh after the
// last attempt, or at nextUpdate (of the CRL held; zero: none) if that
// comes first. After a failed attempt, or one that left a CRL already past
// its nextUpdate, it is tried again sooner: within retryFailed.
func (s *sourceState) nextAttempt(refresh time.Duration, nextUpdate time.Time) time.Time {
	retry := s.lastAttempt.Add(min(refresh, retryFailed))
	switch {
	case s.lastErr != "":
		return retry
	case nextUpdate.IsZero():
		return s.lastAttempt.Add(refresh)
	case nextUpdate.After(s.lastAttempt):
		return earliest(s.lastAttempt.Add(refresh), nextUpdate)
	default:
		return retry
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// denySource is the denylist's source.
type denySource struct {
	sourceState
	held *Denylist
	raw  []byte
}

// New returns a Checker for cfg. It fetches nothing until Start, or until
// a chain needs a source.
func New(cfg Config) *Checker {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.Signer == nil {
		cfg.Signer = DefaultSigner()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Checker{cfg: cfg, client: newHTTPClient(), now: time.Now, crls: make(map[string]*crlSource),
		slots: make(chan struct{}, maxFetches)}
	c.ctx, c.stop = context.WithCancel(context.Background())
	for _, src := range cfg.CRLs {
		if c.configured(src) == nil {
			c.extra = append(c.extra, c.newCRLSource(src))
		}
	}
	if cfg.Denylist != "" {
		c.deny = &denySource{sourceState: sourceState{name: cfg.Denylist}}
		c.deny.run = c.fetchDenylist
		c.loadDenyState(c.deny)
	}
	return c
}

// Config returns the configuration in force, defaults filled in.
func (c *Checker) Config() Config { return c.cfg }

// Adopt takes over what prev, the Checker of the config before a reload,
// holds, so that the connections it let in are judged by what was known of
// their sources rather than as never fetched: the distribution points'
// sources (CRL, CAs, last fetches; not fetched again before their time)
// and, for the configured CRLs and the denylist of the same name that c
// does not hold (from its state directory), prev's copy (the denylist only
// if both trust the same signer). c's configuration and state directory
// stay its own. Call it before Start; prev may be nil.
func (c *Checker) Adopt(prev *Checker) {
	if prev == nil || prev == c {
		return
	}
	prev.mu.RLock()
	defer prev.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, ps := range prev.crls {
		if prev.configured(name) == ps || c.crls[name] != nil || c.configured(name) != nil || len(c.crls) >= maxCRLSources {
			continue
		}
		s := &crlSource{sourceState: sourceState{name: name, attempted: true, lastAttempt: ps.lastAttempt,
			lastSuccess: ps.lastSuccess, lastErr: ps.lastErr}, held: ps.held, issuers: maps.Clone(ps.issuers)}
		s.run = func() { c.fetchCRL(s) }
		c.crls[name] = s
	}
	for _, s := range c.extra {
		ps := prev.crls[s.name]
		if ps == nil {
			ps = prev.configured(s.name)
		}
		if s.held != nil || ps == nil || ps.held == nil {
			continue
		}
		s.held, s.lastSuccess = ps.held, ps.lastSuccess
		for _, issuer := range ps.issuers {
			s.addIssuer(issuer)
		}
	}
	if d, pd := c.deny, prev.deny; d != nil && pd != nil && d.held == nil && pd.held != nil && d.name == pd.name &&
		bytes.Equal(c.cfg.Signer, prev.cfg.Signer) {
		d.held, d.raw, d.lastSuccess = pd.held, pd.raw, pd.lastSuccess
	}
}

// Start fetches every configured source and then keeps every source fresh,
// until Stop.
func (c *Checker) Start() {
	c.lastTick = c.now()
	c.tick()
	c.loopDone = make(chan struct{})
	go c.loop()
}

// Stop ends the refreshes, cancels the fetches under way and waits for
// them to end.
func (c *Checker) Stop() {
	// Under the lock: startFetch, which checks c.ctx under it, then adds no
	// fetch once Wait below may have begun.
	c.mu.Lock()
	c.stop()
	c.mu.Unlock()
	if c.loopDone != nil {
		<-c.loopDone
	}
	c.fetches.Wait()
}

// loop starts the fetches that are due, once a second.
func (c *Checker) loop() {
	defer close(c.loopDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.tick()
		}
	}
}

// tick starts the fetches that are due, and calls Changed if a source
// went past MaxStale since the last tick.
func (c *Checker) tick() {
	now := c.now()
	crossed := false
	c.mu.Lock()
	last := c.lastTick
	c.lastTick = now
	// fetchIfDue starts the fetch of s if one is due, and notes whether
	// what it holds (past due since heldDue; zero: none held) went past
	// MaxStale since the last tick.
	fetchIfDue := func(s *sourceState, heldDue, nextUpdate time.Time) {
		if s.fetching == nil && (!s.attempted || !now.Before(s.nextAttempt(c.cfg.Refresh, nextUpdate))) {
			c.startFetch(s)
		}
		if c.cfg.MaxStale > 0 && !heldDue.IsZero() && !c.pastMaxStale(heldDue, last) && c.pastMaxStale(heldDue, now) {
			crossed = true
		}
	}
	for _, s := range c.allCRLs() {
		var d, next time.Time
		if s.held != nil {
			d, next = s.held.due(s.lastSuccess, c.cfg.Refresh), s.held.list.NextUpdate
		}
		fetchIfDue(&s.sourceState, d, next)
	}
	if c.deny != nil {
		var d time.Time
		if c.deny.held != nil {
			d = refreshDue(c.deny.lastSuccess, c.cfg.Refresh)
		}
		fetchIfDue(&c.deny.sourceState, d, time.Time{})
	}
	c.mu.Unlock()
	if crossed && c.cfg.Changed != nil {
		c.cfg.Changed()
	}
}

// allCRLs lists every CRL source once; the lock is held.
func (c *Checker) allCRLs() []*crlSource {
	all := make([]*crlSource, 0, len(c.crls)+len(c.extra))
	all = append(all, c.extra...)
	for _, s := range c.crls {
		if c.configured(s.name) != s {
			all = append(all, s)
		}
	}
	return all
}

// configured returns the configured CRL source of that name; nil if there
// is none. A distribution point that is also configured is that one
// source.
func (c *Checker) configured(name string) *crlSource {
	for _, s := range c.extra {
		if s.name == name {
			return s
		}
	}
	return nil
}

// startFetch runs the fetch of a source in the background, unless the
// Checker is stopped; the lock is held.
func (c *Checker) startFetch(s *sourceState) {
	if c.ctx.Err() != nil {
		return
	}
	s.attempted = true
	s.fetching = make(chan struct{})
	c.fetches.Add(1)
	go func() {
		defer c.fetches.Done()
		select {
		case c.slots <- struct{}{}: // at most maxFetches at once
		case <-c.ctx.Done():
			now := c.now()
			c.mu.Lock()
			c.record(s, now, c.ctx.Err())
			c.mu.Unlock()
			return
		}
		defer func() { <-c.slots }()
		s.run()
	}()
}

// newCRLSource returns the source of a CRL, holding what the state
// directory kept of it.
func (c *Checker) newCRLSource(name string) *crlSource {
	s := &crlSource{sourceState: sourceState{name: name}}
	s.run = func() { c.fetchCRL(s) }
	c.loadCRLState(s)
	return s
}

// fetchCRL fetches a CRL source once and, if the CRL is good, holds it.
func (c *Checker) fetchCRL(s *crlSource) {
	data, err := c.fetchTimed(s.name, MaxCRLSize)
	var list *x509.RevocationList
	if err == nil {
		list, err = ParseCRL(data)
	}
	// Indexed and verified off the lock, against the CAs known now.
	now := c.now()
	var held *heldCRL
	if err == nil {
		c.mu.RLock()
		issuers := maps.Clone(s.issuers)
		c.mu.RUnlock()
		held, err = verifyCRL(list, issuers, now)
	}
	c.mu.Lock()
	if err == nil {
		err = s.noRollback(list)
	}
	c.record(&s.sourceState, now, err)
	changed := false
	if err == nil && (s.held == nil || !bytes.Equal(s.held.list.Raw, list.Raw)) {
		s.held, changed = held, true
	}
	c.mu.Unlock()
	c.finish(s.name, "CRL", err, changed, func() {
		if held.trusted.Load() { // else kept once a CA is found to sign it (keepConfigured)
			c.saveCRL(s, list.Raw)
		}
	}, func() []zap.Field {
		return []zap.Field{zap.String("issuer", list.Issuer.String()), zap.Int("revoked", len(held.revoked)), zap.Time("next_update", list.NextUpdate)}
	})
}

// fetchDenylist fetches the denylist once and, if it verifies, holds it.
func (c *Checker) fetchDenylist() {
	s := c.deny
	data, err := c.fetchTimed(s.name, MaxDenylistSize)
	var list *Denylist
	if err == nil {
		list, err = ParseDenylist(data, c.cfg.Signer)
	}
	now := c.now()
	c.mu.Lock()
	c.record(&s.sourceState, now, err)
	changed := false
	if err == nil && !bytes.Equal(s.raw, data) {
		s.held, s.raw, changed = list, data, true
	}
	c.mu.Unlock()
	c.finish(s.name, "denylist", err, changed, func() {
		c.saveState(s.name, data, func() []byte { return s.raw }, nil)
	}, func() []zap.Field { return []zap.Field{zap.Int("entries", list.Len())} })
}

// fetchTimed reads source within the fetch timeout, at most max bytes.
func (c *Checker) fetchTimed(source string, max int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.FetchTimeout)
	defer cancel()
	return c.fetch(ctx, source, max)
}

// finish ends a fetch of what (a CRL, the denylist) from source, the lock
// released: a failure is logged and counted; a change is logged (with
// fields), kept in the state directory (save) and told to Changed.
func (c *Checker) finish(source, what string, err error, changed bool, save func(), fields func() []zap.Field) {
	if err != nil {
		c.failed(source, what, err)
		return
	}
	if !changed {
		return
	}
	c.cfg.Logger.Info(what+" updated", append([]zap.Field{zap.String("source", source)}, fields()...)...)
	save()
	if c.cfg.Changed != nil {
		c.cfg.Changed()
	}
}

// record notes the end of a fetch of s, which failed with err or not; the
// lock is held.
func (c *Checker) record(s *sourceState, now time.Time, err error) {
	s.lastAttempt = now
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr, s.lastSuccess = "", now
	}
	if s.fetching != nil {
		close(s.fetching)
		s.fetching = nil
	}
}

// failed logs and counts a failed fetch; not one that Stop cancelled.
func (c *Checker) failed(source, what string, err error) {
	if c.ctx.Err() != nil {
		return
	}
	c.cfg.Logger.Warn(what+" fetch failed; the last good one stays in force", zap.String("source", source), zap.Error(err))
	if c.cfg.FetchFailed != nil {
		c.cfg.FetchFailed(source)
	}
}

// statePath is the file in the state directory that keeps what source
// last gave; empty if the source is not kept (no directory, or a file).
func (c *Checker) statePath(source string) string {
	if c.cfg.StateDir == "" || !IsURL(source) {
		return ""
	}
	if c.deny != nil && source == c.deny.name {
		return filepath.Join(c.cfg.StateDir, "denylist.jws")
	}
	sum := sha256.Sum256([]byte(source))
	return filepath.Join(c.cfg.StateDir, "crl-"+hex.EncodeToString(sum[:16])+".der")
}

// stateWrites orders the writes to state directories, of every Checker:
// during a reload the old config's and the new one's share one.
var stateWrites sync.Mutex

// saveState writes what source gave to the state directory, unless it no
// longer holds it (held, called under the lock, tells what it holds): two
// fetches that end close together write in the order they were held. If
// newer is set and reports that the file holds something newer (another
// Checker wrote it), the file is left as it is.
func (c *Checker) saveState(source string, data []byte, held func() []byte, newer func(onDisk []byte) bool) {
	path := c.statePath(source)
	if path == "" {
		return
	}
	stateWrites.Lock()
	defer stateWrites.Unlock()
	c.mu.RLock()
	current := bytes.Equal(held(), data)
	c.mu.RUnlock()
	if !current {
		return
	}
	if newer != nil {
		if onDisk, err := readFile(path, MaxCRLSize); err == nil && newer(onDisk) {
			return
		}
	}
	err := os.MkdirAll(c.cfg.StateDir, 0o700)
	if err == nil {
		err = atomicfile.Write(path, data, 0o600)
	}
	if err != nil {
		c.cfg.Logger.Warn("cannot keep the last good copy in the state directory; a restart while the source is down will not have it",
			zap.String("source", source), zap.Error(err))
	}
}

// saveCRL writes the CRL of s to the state directory, unless s no longer
// holds it.
func (c *Checker) saveCRL(s *crlSource, raw []byte) {
	c.saveState(s.name, raw, func() []byte {
		if s.held == nil {
			return nil
		}
		return s.held.list.Raw
	}, func(onDisk []byte) bool {
		return newerCRL(onDisk, raw)
	})
}

// newerCRL reports whether onDisk is a CRL of the same issuer as raw with
// a higher number.
func newerCRL(onDisk, raw []byte) bool {
	disk, err := ParseCRL(onDisk)
	if err != nil || disk.Number == nil {
		return false
	}
	list, err := x509.ParseRevocationList(raw)
	if err != nil || list.Number == nil {
		return false
	}
	return bytes.Equal(disk.RawIssuer, list.RawIssuer) && disk.Number.Cmp(list.Number) > 0
}

// keepConfigured writes to the state directory a configured source's
// issuers and its CRL, now verified by one of them; the lock is not held.
func (c *Checker) keepConfigured(s *crlSource) {
	path := c.issuersPath(s.name)
	if path == "" {
		return
	}
	c.mu.RLock()
	var certs []*x509.Certificate
	for _, cert := range s.issuers {
		certs = append(certs, cert)
	}
	var raw []byte
	if s.held != nil && s.held.trusted.Load() {
		raw = s.held.list.Raw
	}
	c.mu.RUnlock()
	slices.SortFunc(certs, func(a, b *x509.Certificate) int { return bytes.Compare(a.Raw, b.Raw) })
	var data []byte
	for _, cert := range certs {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	stateWrites.Lock()
	err := os.MkdirAll(c.cfg.StateDir, 0o700)
	if err == nil {
		err = atomicfile.Write(path, data, 0o600)
	}
	stateWrites.Unlock()
	if err != nil {
		c.cfg.Logger.Warn("cannot keep the CAs of a CRL source in the state directory; after a restart its first fetch is not verified",
			zap.String("source", s.name), zap.Error(err))
	}
	if raw != nil {
		c.saveCRL(s, raw)
	}
}

// issuersPath is the file in the state directory that keeps the CAs found
// to sign a configured source's CRL; empty if the source is not kept.
func (c *Checker) issuersPath(source string) string {
	path := c.statePath(source)
	if path == "" {
		return ""
	}
	return strings.TrimSuffix(path, ".der") + ".issuers.pem"
}

// loadCRLState reads what the state directory keeps of a CRL source: the
// CAs found to sign a configured source's CRL, and the CRL, which must be
// signed by one of them if any are kept (else its signature is checked
// when a certificate uses it).
func (c *Checker) loadCRLState(s *crlSource) {
	c.loadIssuers(s)
	data, fetched, ok := c.readState(s.name)
	if !ok {
		return
	}
	list, err := ParseCRL(data)
	if err != nil {
		c.cfg.Logger.Warn("state directory CRL unreadable; ignored", zap.String("source", s.name), zap.Error(err))
		return
	}
	held := newHeldCRL(list)
	if len(s.issuers) > 0 && !held.signedByOneOf(s.issuers) {
		c.cfg.Logger.Warn("state directory CRL not signed by the CA of its source; ignored", zap.String("source", s.name))
		return
	}
	s.held, s.lastSuccess = held, fetched
}

// loadIssuers reads the CAs kept for a configured source.
func (c *Checker) loadIssuers(s *crlSource) {
	path := c.issuersPath(s.name)
	if path == "" {
		return
	}
	data, err := readFile(path, 1<<20)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.cfg.Logger.Warn("state directory CAs of a CRL source unreadable; ignored", zap.String("file", path), zap.Error(err))
		}
		return
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if b.Type != "CERTIFICATE" || err != nil {
			c.cfg.Logger.Warn("state directory CAs of a CRL source: a block is not a certificate; ignored", zap.String("file", path))
			continue
		}
		s.addIssuer(cert)
	}
}

// loadDenyState reads what the state directory keeps of the denylist.
func (c *Checker) loadDenyState(s *denySource) {
	data, fetched, ok := c.readState(s.name)
	if !ok {
		return
	}
	list, err := ParseDenylist(data, c.cfg.Signer)
	if err != nil {
		c.cfg.Logger.Warn("state directory denylist does not verify; ignored", zap.String("source", s.name), zap.Error(err))
		return
	}
	s.held, s.raw, s.lastSuccess = list, data, fetched
}

// readState returns the kept copy of source and when it was fetched.
func (c *Checker) readState(source string) ([]byte, time.Time, bool) {
	path := c.statePath(source)
	if path == "" {
		return nil, time.Time{}, false
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, time.Time{}, false
	}
	data, err := readFile(path, max(MaxCRLSize, MaxDenylistSize))
	if err != nil {
		c.cfg.Logger.Warn("state directory copy unreadable; ignored", zap.String("file", path), zap.Error(err))
		return nil, time.Time{}, false
	}
	return data, fi.ModTime(), true
}
