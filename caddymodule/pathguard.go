package caddymodule

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/handlers/pathguard"
	"github.com/nutsgate/nutsgate/mtlsident"
)

func init() {
	caddy.RegisterModule(PathGuard{})
	httpcaddyfile.RegisterDirective("path_guard", parsePathGuard)
}

// PathGuard is a site's request hygiene at the edge. It runs before
// everything else of the site and makes sure that what the site's routes
// see, and what the node gets, is what the client unambiguously sent.
//
// Paths. It refuses with 400 every request whose path as sent is
// ambiguous: read one way by Caddy's matchers (which decode and clean the
// path) and another by the node (to which `reverse_proxy` forwards the raw
// path). That is a request target whose path holds:
//
//   - an encoded slash, backslash or dot: `%2f`, `%5c`, `%2e` (any case);
//   - an encoded unreserved character (`ALPHA DIGIT - . _ ~`, any case):
//     `/%69nternal/x` routes as `/internal/x` but the node reads `%69nternal`;
//   - a backslash, or a NUL (raw or `%00`);
//   - a `.` or `..` segment, also with path parameters (`..;x`, `..%3bx`);
//   - an empty segment (`//`, or parameters only: `/;x/`); one trailing
//     slash is no empty segment;
//   - one of the above encoded more than once (`%252e`, `%2569`);
//   - `%c0` or `%c1` (overlong UTF-8 forms of `.`, `/`, `\`);
//   - a malformed escape (`%` without two hex digits).
//
// Other escapes pass byte for byte: `%3A` in did:web identifiers, `%40`,
// `%20`, `%2B`, UTF-8, and `%25` that hides none of the above (`%253A`).
// So do `;` inside a segment name (`/n2n;a=b/x`) and letter case (`/N2N`):
// routing decides those, and default deny refuses what no route takes.
//
// The query is not checked. Targets other than a path (`/…`) or an http(s)
// absolute URL are refused as well: `*` (Go answers `OPTIONS *` itself,
// 200 and empty, before any handler runs) and the authority form of
// CONNECT (the gateway is no forward proxy). Go's server bounds the length
// of the request line; the check is linear in it.
//
// Early data. A request whose TLS handshake is not complete, one sent as
// TLS 1.3 early data (0-RTT, HTTP/3 only in Caddy), can be replayed by
// anyone who recorded it. It is answered 425 Too Early (RFC 8470), gRPC
// UNAVAILABLE (14), so that the client retries it after the handshake, and
// never passed on, whatever the server's `0rtt` setting.
//
// Request trailers. Every request trailer (an HTTP/1.1 chunked trailer, an
// HTTP/2 or HTTP/3 trailing HEADERS frame), declared or not, is dropped
// silently, as nginx does, together with the `Trailer` header that
// announces it: the request passed on carries none, so `reverse_proxy`
// never sends one to the node. gRPC clients send none and the node's HTTP
// APIs read none, while one reaching the node's grpc-go server makes it
// close the gateway's shared HTTP/2 connection, ending every other peer's
// streams.
// The request itself, its body included, goes on unchanged.
//
// Certificate header. Every client copy of `X-SSL-CERT`, and of every
// header that an `mtls_ident` of the running gateway forwards
// (`forward_header`), is removed: any letter case, any number of copies,
// `_` for `-` (`x_ssl_cert`). Routes with `mtls_ident`, which runs after
// path_guard, still get the verified certificate it sets; every other route
// reaches the node without the header. A header name stays on the list
// until the process ends, also after a reload that drops the mtls_ident
// forwarding it.
//
// Refusals are answered 400 (425 for early data), gRPC requests the gRPC
// way: HTTP 200, trailers-only, grpc-status 3 (INVALID_ARGUMENT) or 14.
// Every refusal is counted by reason in nutsgate_path_refusals_total and
// logged at INFO with the client's IP and the request target, at most 10
// lines a second per reason.
//
// In a Caddyfile the directive is ordered before every other one (before
// `tracing`, the first of Caddy's standard order), so a site that writes
// it once is guarded on every route, whatever `handle`, `handle_path` or
// `route` blocks follow. Written inside a block, it guards that block only.
type PathGuard struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (PathGuard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.path_guard",
		New: func() caddy.Module { return new(PathGuard) },
	}
}

// Provision sets up the logger and the refusal metric.
func (pg *PathGuard) Provision(ctx caddy.Context) error {
	pg.logger = ctx.Logger()
	return registerMetrics(ctx)
}

// ServeHTTP refuses early data and ambiguous paths, and passes every other
// request on without trailers and without client copies of the certificate
// header.
func (pg *PathGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	target := r.RequestURI
	if target == "" { // a request not read from a client
		target = r.URL.RequestURI()
	}
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		pg.log("early data refused", errEarlyData, r, target)
		return refuse(w, r, http.StatusTooEarly, grpcUnavailable, errEarlyData.Error())
	}
	if err := pathguard.Check(target); err != nil {
		pg.log("path refused", err, r, target)
		return refuse(w, r, http.StatusBadRequest, grpcInvalidArgument, err.Error())
	}
	stripCertHeaders(r.Header)
	return next.ServeHTTP(w, withoutTrailers(r))
}

// errEarlyData is the reason of a request refused as early data.
var errEarlyData = errors.New("request sent as TLS early data (0-RTT); send it again after the handshake")

// log counts one refusal and logs it at INFO, sampled per reason.
func (pg *PathGuard) log(msg string, err error, r *http.Request, target string) {
	reason := pathReason(err)
	pathRefusals.WithLabelValues(reason).Inc()
	if c, sup := pathRefusalLog.Check(pg.logger, zapcore.InfoLevel, reason, msg); c != nil {
		c.Write(zap.String("reason", reason), zap.String("detail", err.Error()), zap.String("remote_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", target), sup)
	}
}

// withoutTrailers returns the request to pass on: r itself when it has no
// body (nothing can trail it), else a shallow copy without a trailer map.
// Go's servers fill the trailers in as the body is read to its end: the
// HTTP/1 server into the Trailer field of its own request, or into the map
// that field holds when the trailers were declared; the HTTP/2 server into
// the declared map; quic-go's HTTP/3 server sets the field of its request.
// The copy shares none of these, and reverse_proxy copies the trailers of
// the request it is given, so none reach the upstream. The Trailer header
// (hop-by-hop, reverse_proxy drops it too) is removed so that nothing after
// path_guard sees a declaration.
func withoutTrailers(r *http.Request) *http.Request {
	delete(r.Header, "Trailer")
	if r.Trailer == nil && (r.Body == nil || r.Body == http.NoBody) {
		return r
	}
	r = r.WithContext(r.Context())
	r.Trailer = nil
	return r
}

// certHeaders are the certificate header names path_guard strips: X-SSL-CERT
// and every forward_header an mtls_ident of this process was provisioned
// with. Read on every request without a lock; written (rarely) under
// certHeadersMu, copy on write.
var (
	certHeaders   atomic.Pointer[[]string]
	certHeadersMu sync.Mutex
)

func init() {
	certHeaders.Store(&[]string{defaultForwardHeader})
}

// registerCertHeader adds name, a header mtls_ident forwards the client
// certificate in, to the names path_guard strips; "off" adds none.
func registerCertHeader(name string) {
	if name == "" || strings.EqualFold(name, "off") {
		return
	}
	certHeadersMu.Lock()
	defer certHeadersMu.Unlock()
	names := *certHeaders.Load()
	key := strings.ReplaceAll(name, "_", "-")
	for _, n := range names {
		if strings.EqualFold(strings.ReplaceAll(n, "_", "-"), key) {
			return
		}
	}
	names = append(slices.Clip(names), name)
	certHeaders.Store(&names)
}

// stripCertHeaders removes every copy of every certificate header from h.
func stripCertHeaders(h http.Header) {
	for _, name := range *certHeaders.Load() {
		mtlsident.StripHeader(h, name)
	}
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	path_guard
//
// The directive takes no arguments, no block, and no matcher: it guards
// every request of the site (or of the block it stands in).
func (pg *PathGuard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.Errf("path_guard takes no arguments, not even a matcher: it guards every request, got %q", d.Val())
	}
	if d.NextBlock(0) {
		return d.Errf("unrecognized subdirective %q: path_guard takes no options", d.Val())
	}
	return nil
}

func parsePathGuard(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	pg := new(PathGuard)
	if err := pg.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return h.NewRoute(nil, pg), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*PathGuard)(nil)
	_ caddyhttp.MiddlewareHandler = (*PathGuard)(nil)
	_ caddyfile.Unmarshaler       = (*PathGuard)(nil)
)
