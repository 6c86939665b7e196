package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/handlers/pathguard"
)

func init() {
	caddy.RegisterModule(PathGuard{})
	httpcaddyfile.RegisterDirective("path_guard", parsePathGuard)
	// "tracing" is the first directive of Caddy's standard order, so
	// path_guard runs before every directive of a site, handle and route
	// blocks included.
	httpcaddyfile.RegisterDirectiveOrder("path_guard", httpcaddyfile.Before, "tracing")
}

// gRPC status of a refused path.
const grpcInvalidArgument = 3

// PathGuard refuses, before anything else of the site runs, every request
// whose path as sent is ambiguous: read one way by Caddy's matchers (which
// decode and clean the path) and another by the node (to which
// `reverse_proxy` forwards the raw path). It refuses with 400 a request
// target whose path holds:
//
//   - an encoded slash, backslash or dot: `%2f`, `%5c`, `%2e` (any case);
//   - a backslash, or a NUL (raw or `%00`);
//   - a `.` or `..` segment, also with path parameters (`..;x`, `..%3bx`);
//   - an empty segment (`//`, or parameters only: `/;x/`); one trailing
//     slash is no empty segment;
//   - one of the above encoded more than once (`%252e`, `%25%32%65`);
//   - `%c0` or `%c1` (overlong UTF-8 forms of `.`, `/`, `\`);
//   - a malformed escape (`%` without two hex digits).
//
// Other escapes pass: `%3A` in did:web identifiers, `%40`, `%20`, and `%25`
// that hides none of the above (`%253A`). So do `;` inside a segment name
// (`/n2n;a=b/x`) and letter case (`/N2N`): routing decides those, and
// default deny refuses what no route takes.
//
// The query is not checked. Targets other than a path (`/…`) or an http(s)
// absolute URL are refused as well: `*` (Go answers `OPTIONS *` itself,
// 200 and empty, before any handler runs) and the authority form of
// CONNECT (the gateway is no forward proxy). Go's server bounds the length
// of the request line; the check is linear in it.
//
// gRPC requests are refused the gRPC way: HTTP 200, trailers-only,
// grpc-status 3 (INVALID_ARGUMENT). Every refusal is counted by reason in
// nutsgate_path_refusals_total and logged at INFO with the client's IP and
// the request target, at most 10 lines a second per reason.
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

// ServeHTTP passes the request on if its path is unambiguous, or refuses it.
func (pg *PathGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	target := r.RequestURI
	if target == "" { // a request not read from a client
		target = r.URL.RequestURI()
	}
	err := pathguard.Check(target)
	if err == nil {
		return next.ServeHTTP(w, r)
	}
	reason := pathReason(err)
	pathRefusals.WithLabelValues(reason).Inc()
	if c, sup := pathRefusalLog.Check(pg.logger, zapcore.InfoLevel, reason, "path refused"); c != nil {
		c.Write(zap.String("reason", err.Error()), zap.String("remote_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", target), sup)
	}
	return refuse(w, r, http.StatusBadRequest, grpcInvalidArgument, err.Error())
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
		return d.Err("path_guard takes no block")
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
