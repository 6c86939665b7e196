package caddymodule

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/internal/filewatch"
	"github.com/nutsgate/nutsgate/internal/h3conn"
	"github.com/nutsgate/nutsgate/mtlsident"
	"github.com/nutsgate/nutsgate/pki"
)

func init() {
	caddy.RegisterModule(MTLSIdent{})
	httpcaddyfile.RegisterHandlerDirective("mtls_ident", parseMTLSIdent)
}

// defaultForwardHeader is the header a Nuts node reads the client
// certificate from (its tls.certheader).
const defaultForwardHeader = "X-SSL-CERT"

// defaultMaxOpen is how many requests a client may have open at once.
const defaultMaxOpen = 100

// MTLSIdent identifies the client of a request by its verified TLS client
// certificate, refuses denied clients, and forwards the certificate to the
// node in the header the node reads when TLS is offloaded.
//
// The request's own copies of the forwarding header (any letter case, any
// number) are always removed first, so a client can never pose as another.
// A client is its verified leaf certificate: the TLS connection policy must
// ask for and verify client certificates (client_auth with a trust pool,
// mode verify_if_given or require_and_verify). A certificate whose subject
// holds more than one CN is refused (403).
//
// A client holds at most max_open requests open at once (default 100),
// gRPC streams included: counted by its subject (as deny entries match it)
// over all its connections and every mtls_ident handler of the gateway, each
// handler comparing the one count with its own max_open. With the transport
// to the node bounding what it buffers per stream (the nuts_node transport),
// this bounds the memory a client that never reads can pin.
//
// Refusals: no verified certificate while `require` is set, 401; a denied
// client, 403; a client at max_open, 429 with `Retry-After: 1`. gRPC
// requests are refused the gRPC way instead: HTTP 200, trailers-only,
// grpc-status 16 (UNAUTHENTICATED), 7 (PERMISSION_DENIED) or 8
// (RESOURCE_EXHAUSTED). A refused request never reaches the next handler.
//
// Deny entries are subject DNs, matched without regard to letter case or
// white space around separators, in RFC 2253 order, or `sha256:<hex>`
// certificate fingerprints. The handler's own entries, those of its
// deny_file (reloaded when it changes) and the gateway-wide list of the
// `nutsgate` app all apply. Denying a client also ends its open requests,
// gRPC streams included, and closes its connections within a second: idle
// keep-alive and HTTP/2 connections, HTTP/3 (QUIC) connections on which it
// was identified (H3_REQUEST_REJECTED, "client denied"), and connections on
// which it finished the TLS handshake with its certificate but sent no
// request (judged by the deny lists of every mtls_ident of the server).
//
// Placeholders, empty when there is no verified certificate:
//
// Placeholder | Description
// ------------|-------------
// `{mtls.client.subject}` | subject DN, RFC 2253, from the full raw subject
// `{mtls.client.cn}` | subject CN
// `{mtls.client.fingerprint}` | SHA-256 of the certificate, lower-case hex
// `{mtls.client.issuer}` | issuer DN, RFC 2253
type MTLSIdent struct {
	// Refuse requests without a verified client certificate.
	Require bool `json:"require,omitempty"`

	// The header the certificate is forwarded in. Default: X-SSL-CERT.
	// "off" forwards none (X-SSL-CERT is still removed from requests).
	ForwardHeader string `json:"forward_header,omitempty"`

	// How the certificate is written: "pem" (default), the URL-escaped PEM
	// of the leaf, as nginx's $ssl_client_escaped_cert; or "der", the
	// base64 of its DER, as HAProxy's ssl_c_der,base64.
	ForwardFormat string `json:"forward_format,omitempty"`

	// Clients to refuse: subject DNs or sha256:<fingerprint>.
	Deny []string `json:"deny,omitempty"`

	// A file of further entries, one a line, '#' comment lines; reloaded
	// when it changes. A line that does not parse is skipped and logged with
	// file:line, once per change of the file (nutsgate_deny_file_invalid_lines
	// counts them); the other lines are in force.
	DenyFile string `json:"deny_file,omitempty"`

	// The most requests one client may have open at once; more are
	// refused. Default: 100.
	MaxOpen int `json:"max_open,omitempty"`

	format mtlsident.Format
	header string
	inline *mtlsident.DenyList
	file   *mtlsident.Store // the deny_file's entries; an empty store without one
	app    *App             // the config's nutsgate app; nil if it has none
	logger *zap.Logger

	maxOpen int // MaxOpen or its default
}

// CaddyModule returns the Caddy module information.
func (MTLSIdent) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mtls_ident",
		New: func() caddy.Module { return new(MTLSIdent) },
	}
}

// Provision parses the deny entries, loads the deny file and watches it
// for edits until the config is unloaded.
func (m *MTLSIdent) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	err := registerMetrics(ctx)
	if err != nil {
		return err
	}
	if m.format, err = mtlsident.ParseFormat(cmp.Or(m.ForwardFormat, string(mtlsident.FormatPEM))); err != nil {
		return err
	}
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterConnContext(connTracker(m.deniesID))
	}
	if m.MaxOpen < 0 {
		return fmt.Errorf("max_open %d is not a positive whole number", m.MaxOpen)
	}
	m.maxOpen = cmp.Or(m.MaxOpen, defaultMaxOpen)
	m.header = cmp.Or(m.ForwardHeader, defaultForwardHeader)
	if strings.ContainsAny(m.header, " :\t\r\n") {
		return fmt.Errorf("forward_header %q is not a header name", m.header)
	}
	registerCertHeader(m.header) // path_guard strips client copies on every site
	if app, err := ctx.AppIfConfigured("nutsgate"); err == nil {
		m.app = app.(*App)
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("loading the nutsgate app: %v", err)
	}
	var entries []mtlsident.Entry
	for _, text := range m.Deny {
		e, err := mtlsident.ParseEntry(text)
		if err != nil {
			return fmt.Errorf("deny: %v", err)
		}
		entries = append(entries, e)
	}
	m.inline = mtlsident.NewDenyList(entries)
	if m.DenyFile == "" {
		m.file = mtlsident.NewStore("", nil)
		return nil
	}
	path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(m.DenyFile, ""))
	if err != nil {
		return fmt.Errorf("deny_file: %v", err)
	}
	m.file = mtlsident.NewStore(path, nil)
	reporter := newDenyFileReporter(ctx, path, m.logger)
	if err := m.file.Load(); err != nil {
		return err
	}
	reporter.report(m.file.Skipped())
	m.file.Watch(ctx, filewatch.DefaultInterval, m.logger, func() {
		reporter.report(m.file.Skipped())
		sweepDenied()
		m.logger.Info("deny_file reloaded", zap.String("file", path), zap.Int("entries", len(m.file.List().Entries())), zap.Int("skipped_lines", len(m.file.Skipped())))
	})
	return nil
}

// ServeHTTP identifies the client, refuses it or forwards its certificate.
func (m *MTLSIdent) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	mtlsident.StripHeader(r.Header, defaultForwardHeader)
	if m.header != "off" {
		mtlsident.StripHeader(r.Header, m.header)
	}
	if m.app != nil && !m.app.awaitStart(r.Context()) {
		return refuse(w, r, http.StatusServiceUnavailable, grpcUnavailable, "the gateway is not ready")
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var id mtlsident.Identity // empty until the client is identified
	repl.Map(func(key string) (any, bool) { return clientPlaceholder(&id, key) })
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		if m.Require {
			m.refused("no_certificate", "client refused", r, zap.String("detail", "no verified client certificate"))
			return refuse(w, r, http.StatusUnauthorized, grpcUnauthenticated, "a verified client certificate is required")
		}
		return next.ServeHTTP(w, r)
	}
	client, err := mtlsident.Identify(r.TLS.VerifiedChains[0][0])
	if err != nil {
		reason := "ambiguous_certificate"
		if !errors.Is(err, mtlsident.ErrAmbiguous) {
			reason = "unreadable_certificate"
		}
		m.refused(reason, "client refused", r, zap.String("detail", err.Error()))
		return refuse(w, r, http.StatusForbidden, grpcPermissionDenied, "client certificate not accepted")
	}
	if e, denied := m.denies(client); denied {
		m.refused("denied", "client denied", r, zap.String("client", client.Subject), zap.String("fingerprint", client.Fingerprint), zap.String("entry", e.Text))
		return refuse(w, r, http.StatusForbidden, grpcPermissionDenied, "client denied")
	}
	client.Chains = r.TLS.VerifiedChains
	if err := checkRevocation(r.Context(), client); err != nil {
		var ref *pki.Refusal
		if !errors.As(err, &ref) {
			// Not a verdict (none is expected): refused as not verified.
			ref = &pki.Refusal{Reason: pki.Unverified, Detail: err.Error()}
		}
		pkiRefused(m.logger, "client certificate refused", ref, client.Chains, nil, zap.String("remote_ip", clientIP(r)), zap.String("uri", r.RequestURI))
		return refuse(w, r, http.StatusForbidden, grpcPermissionDenied, revocationMessages[ref.Reason])
	}
	watchExpiry(client.Chains)
	countClient(client.Subject)
	id = client
	if conn, ok := r.Context().Value(connKey{}).(*mtlsident.Conn); ok {
		conn.Identified(m, id, m.deniesID)
	} else if r.ProtoMajor == 3 {
		m.trackQUIC(w, id)
	}
	if m.header != "off" {
		r.Header.Set(m.header, id.Forward(m.format))
	}
	ctx, done, ok := gateway.streams.Open(r.Context(), id, m.maxOpen, m.deniesID)
	if !ok {
		m.refused("too_many_open", "client refused", r, zap.String("detail", "too many open requests"), zap.String("client", id.Subject), zap.Int("max_open", m.maxOpen))
		if !isGRPC(r) {
			w.Header().Set("Retry-After", "1")
		}
		return refuse(w, r, http.StatusTooManyRequests, grpcResourceExhausted, "too many open requests")
	}
	defer done()
	if mtlsident.CutOff(ctx) {
		panic(http.ErrAbortHandler) // denied since the check above
	}
	// Cancelling the context alone does not end a stream whose client is idle:
	// the proxy sits in a read of the request body. Closing the body ends it.
	stop := context.AfterFunc(ctx, func() { _ = r.Body.Close() })
	defer stop()
	err = next.ServeHTTP(w, r.WithContext(ctx))
	if mtlsident.CutOff(ctx) {
		// Denied while the request was open: it gets no answer (the status the
		// proxy gives a cancelled request would read as the node's); the
		// connection is closed, or the stream reset, as `abort` does.
		panic(http.ErrAbortHandler)
	}
	return err
}

// connKey is the context key of a connection's *mtlsident.Conn.
type connKey struct{}

// connTracker returns the ConnContext hook of a handler whose deny check is
// denied: it registers every connection of the handler's server, once, so
// that denying a client can close the connections it holds, and adds the
// handler's check to those that judge the connection while no handler has
// identified a client on it (its TLS handshake's client).
func connTracker(denied func(mtlsident.Identity) bool) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		conn, ok := ctx.Value(connKey{}).(*mtlsident.Conn)
		if !ok { // the first mtls_ident of the server
			conn = gateway.conns.Track(c)
			ctx = context.WithValue(ctx, connKey{}, conn)
		}
		conn.Watch(denied)
		return ctx
	}
}

// trackQUIC records the client of an HTTP/3 request on its QUIC connection:
// Caddy's HTTP/3 server has no ConnContext hook, so the connection is found
// from the response and tracked once, until it ends.
func (m *MTLSIdent) trackQUIC(w http.ResponseWriter, id mtlsident.Identity) {
	qc, err := h3conn.Of(w)
	if err != nil {
		quicUntracked.Do(func() {
			m.logger.Warn("HTTP/3 connections of denied clients will not be closed", zap.Error(err))
		})
		return
	}
	if qc != nil {
		gateway.conns.TrackOnce(qc.Context(), qc, quicCloser{qc}).Identified(m, id, m.deniesID)
	}
}

func init() {
	gateway.conns.Closed = func(id mtlsident.Identity) {
		caddy.Log().Named("nutsgate").Info("closed a denied client's connection after its handshake",
			zap.String("client", id.Subject), zap.String("fingerprint", id.Fingerprint))
	}
}

// quicUntracked logs once that QUIC connections cannot be found.
var quicUntracked sync.Once

// quicCloser closes a denied client's QUIC connection with
// H3_REQUEST_REJECTED, "client denied".
type quicCloser struct{ c *quic.Conn }

func (q quicCloser) Close() error {
	return q.c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeRequestRejected), "client denied")
}

// clientPlaceholder gives the {mtls.client.*} placeholders of an identity,
// empty while the client is not identified.
func clientPlaceholder(id *mtlsident.Identity, key string) (any, bool) {
	switch key {
	case "mtls.client.subject":
		return id.Subject, true
	case "mtls.client.cn":
		return id.CN, true
	case "mtls.client.fingerprint":
		return id.Fingerprint, true
	case "mtls.client.issuer":
		return id.Issuer, true
	}
	return nil, false
}

// denies finds the entry that refuses id: the handler's own, its file's, or
// the gateway-wide list's.
func (m *MTLSIdent) denies(id mtlsident.Identity) (mtlsident.Entry, bool) {
	for _, list := range []*mtlsident.DenyList{m.inline, m.file.List(), globalDeny().List()} {
		if e, ok := list.Denies(id); ok {
			return e, true
		}
	}
	return mtlsident.Entry{}, false
}

// deniesID reports whether a client must be cut off: denied, or refused
// by revocation checking (expired included) by what it holds now.
func (m *MTLSIdent) deniesID(id mtlsident.Identity) bool {
	if _, denied := m.denies(id); denied {
		return true
	}
	return revoked(id) != nil
}

// revocationMessages are the gRPC messages of mtls_ident's revocation
// refusals.
var revocationMessages = map[pki.Reason]string{
	pki.Revoked:    "client certificate revoked",
	pki.Banned:     "client certificate banned",
	pki.Stale:      "client certificate status unknown",
	pki.Expired:    "client certificate expired",
	pki.Unverified: "client certificate not verified",
}

// checkRevocation is the revocation verdict on a client at a request: with
// revocation checking, that of its chains (expiry included), fetching a CRL
// or the denylist never held, as the nuts_pki verifier does; without, its
// chains' expiry.
func checkRevocation(ctx context.Context, id mtlsident.Identity) error {
	if c := pkiInForce(); c != nil {
		return c.Check(ctx, id.Chains)
	}
	return expired(id)
}

// revoked is the verdict of checkRevocation by what is held now: it never
// fetches or waits, for the sweeps that cut off clients.
func revoked(id mtlsident.Identity) error {
	if c := pkiInForce(); c != nil && len(id.Chains) > 0 {
		return c.Held(id.Chains)
	}
	return expired(id)
}

// expired refuses a client whose certificate, or a CA certificate of its
// verified chains, is past its notAfter.
func expired(id mtlsident.Identity) error {
	now := time.Now()
	if len(id.Chains) == 0 && !id.NotAfter.IsZero() && now.After(id.NotAfter) {
		return &pki.Refusal{Reason: pki.Expired, Detail: "client certificate past its notAfter " + id.NotAfter.UTC().Format(time.RFC3339)}
	}
	for _, chain := range id.Chains {
		for _, cert := range chain {
			if now.After(cert.NotAfter) {
				return &pki.Refusal{Reason: pki.Expired, Cert: cert, Detail: "a certificate of its chain past its notAfter " + cert.NotAfter.UTC().Format(time.RFC3339)}
			}
		}
	}
	return nil
}

// maxExpiryWatches bounds the distinct expiry times watched.
const maxExpiryWatches = 100000

// expiryWatches are the expiry times (unix seconds) at which a sweep is set
// to cut off the clients whose certificate expires then.
var expiryWatches struct {
	sync.Map
	n atomic.Int64
}

// watchExpiry sets a sweep for just after the first certificate of a
// client's verified chains expires (its own, or a CA's), so that its
// connections and streams are closed within a second of it; one sweep for
// all clients whose chains expire in the same second.
func watchExpiry(chains [][]*x509.Certificate) {
	var end time.Time
	for _, chain := range chains {
		for _, cert := range chain {
			if end.IsZero() || cert.NotAfter.Before(end) {
				end = cert.NotAfter
			}
		}
	}
	if end.IsZero() {
		return
	}
	at := end.Unix()
	if _, ok := expiryWatches.Load(at); ok {
		return
	}
	if expiryWatches.n.Load() >= maxExpiryWatches {
		return
	}
	if _, loaded := expiryWatches.LoadOrStore(at, struct{}{}); loaded {
		return
	}
	expiryWatches.n.Add(1)
	time.AfterFunc(time.Until(end)+10*time.Millisecond, func() {
		expiryWatches.Delete(at)
		expiryWatches.n.Add(-1)
		sweepDenied()
	})
}

// refused counts a refusal in nutsgate_mtls_refusals_total under reason and
// logs it with that reason, sampled per reason (see refusallog.go).
func (m *MTLSIdent) refused(reason, msg string, r *http.Request, fields ...zap.Field) {
	mtlsRefusals.WithLabelValues(reason).Inc()
	if c, sup := mtlsRefusalLog.Check(m.logger, zapcore.InfoLevel, reason, msg); c != nil {
		c.Write(append(fields, zap.String("reason", reason), zap.String("remote_ip", clientIP(r)), zap.String("uri", r.RequestURI), sup)...)
	}
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mtls_ident [<matcher>] {
//	    require
//	    forward_header <name>|off
//	    forward_format pem|der
//	    deny <entry>
//	    deny_file <file>
//	    max_open <n>
//	}
//
// A deny entry with spaces (a DN written with them) must be quoted.
func (m *MTLSIdent) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if err := checkOptionName(d, "", "require", "forward_header", "forward_format", "deny", "deny_file", "max_open"); err != nil {
			return err
		}
		args := d.RemainingArgs()
		if opt == "require" {
			if len(args) != 0 {
				return d.ArgErr()
			}
			m.Require = true
			continue
		}
		if len(args) != 1 {
			return d.Errf("%s takes one value (quote a DN that holds spaces)", opt)
		}
		var err error
		switch opt {
		case "forward_header":
			err = setOnce(&m.ForwardHeader, args[0])
		case "forward_format":
			if err = setOnce(&m.ForwardFormat, args[0]); err == nil {
				_, err = mtlsident.ParseFormat(args[0])
			}
		case "deny":
			if _, err = mtlsident.ParseEntry(args[0]); err == nil {
				m.Deny = append(m.Deny, args[0])
			}
		case "deny_file":
			err = setOnce(&m.DenyFile, args[0])
		case "max_open":
			err = setCount(&m.MaxOpen, args[0])
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
		if err != nil {
			return d.Errf("%s: %v", opt, err)
		}
	}
	return nil
}

func parseMTLSIdent(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(MTLSIdent)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*MTLSIdent)(nil)
	_ caddyhttp.MiddlewareHandler = (*MTLSIdent)(nil)
	_ caddyfile.Unmarshaler       = (*MTLSIdent)(nil)
)
