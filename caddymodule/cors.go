package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/handlers/cors"
)

func init() {
	caddy.RegisterModule(CORS{})
	httpcaddyfile.RegisterHandlerDirective("cors", parseCORS)
}

// CORS lets the listed browser origins read the node's responses, and
// answers CORS preflights itself.
//
// A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
// never passed on. From an allowed origin, asking for a listed method and
// only listed headers, it is answered 204 with Access-Control-Allow-Origin
// (the origin as sent, or `*` with allow_any_origin), -Allow-Methods,
// -Allow-Headers, -Max-Age (whole seconds) and, with credentials,
// -Allow-Credentials: true. Any other preflight gets 403 without CORS
// headers. Both carry `Vary: Origin, Access-Control-Request-Method,
// Access-Control-Request-Headers`. Since it is ordered before every
// authentication directive, a preflight (which browsers send without
// credentials) is never refused 401.
//
// Every other request is passed on, with `Vary: Origin` on its response.
// When it comes from an allowed origin, the response gets
// Access-Control-Allow-Origin, -Allow-Credentials and -Expose-Headers as
// configured, error responses included. The gateway is the only source of
// CORS headers: for a request with an Origin, any Access-Control-* header
// the upstream (the node, which has CORS settings of its own) sends is
// removed, so the node can neither widen the policy nor make a browser see
// two values.
//
// Origins compare case-insensitively on scheme and host and exactly on
// port, with default ports normalised (https://a.org equals
// https://a.org:443). `https://*.example.com` allows hosts one or more
// labels below example.com, not example.com itself. The `null` origin is
// allowed only when written literally, never through `*`. Methods are
// case-sensitive (configured names are upper-cased) and GET, HEAD and POST
// are not allowed implicitly; header names are case-insensitive.
type CORS struct {
	// Origins allowed to read responses: scheme://host[:port],
	// scheme://*.domain[:port] for every subdomain, `null`, or `*` (with
	// allow_any_origin). Scheme http or https; no path, query or user
	// info. Required.
	Origins []string `json:"origins,omitempty"`

	// Methods a preflight may ask for. Default: GET POST PUT PATCH DELETE.
	Methods []string `json:"methods,omitempty"`

	// Request headers a preflight may ask for. Default: Authorization
	// Content-Type.
	Headers []string `json:"headers,omitempty"`

	// Response headers browser scripts may read besides the safelisted
	// ones (Access-Control-Expose-Headers).
	Expose []string `json:"expose,omitempty"`

	// Accept `*` in origins: every web site may read the responses.
	// Logged as a warning at start.
	AllowAnyOrigin bool `json:"allow_any_origin,omitempty"`

	// Send Access-Control-Allow-Credentials: true, so browsers send
	// cookies and client certificates along. Not with `*`.
	Credentials bool `json:"credentials,omitempty"`

	// How long browsers may cache a preflight answer. Default: 1h. Browsers
	// cap it (Chromium at 2h, Firefox at 24h).
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	policy *cors.Policy
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (CORS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cors",
		New: func() caddy.Module { return new(CORS) },
	}
}

// Provision validates the policy and warns about risky origins.
func (c *CORS) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	p, err := cors.New(c.config())
	if err != nil {
		return err
	}
	c.policy = p
	for _, w := range p.Warnings() {
		c.logger.Warn(w)
	}
	return nil
}

func (c *CORS) config() cors.Config {
	return cors.Config{
		Origins:        c.Origins,
		Methods:        c.Methods,
		Headers:        c.Headers,
		Expose:         c.Expose,
		AllowAnyOrigin: c.AllowAnyOrigin,
		Credentials:    c.Credentials,
		MaxAge:         time.Duration(c.MaxAge),
	}
}

// ServeHTTP answers preflights and passes everything else on.
func (c *CORS) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h := w.Header()
	if cors.IsPreflight(r) {
		h.Add("Vary", cors.VaryPreflight)
		if err := c.policy.CheckPreflight(r.Header); err != nil {
			if ce, sup := corsRefusalLog.Check(c.logger, zapcore.DebugLevel, corsReason, "cors preflight refused"); ce != nil {
				ce.Write(zap.String("reason", corsReason), zap.String("detail", err.Error()), zap.String("remote_ip", clientIP(r)), zap.String("uri", r.RequestURI), sup)
			}
			return caddyhttp.Error(http.StatusForbidden, err)
		}
		origin, _ := cors.RequestOrigin(r.Header)
		c.policy.SetPreflightHeaders(h, origin)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h.Add("Vary", cors.VaryOrigin)
	if len(r.Header["Origin"]) == 0 {
		return next.ServeHTTP(w, r)
	}
	origin, ok := cors.RequestOrigin(r.Header)
	cw := &corsWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, policy: c.policy, origin: origin, allowed: ok && c.policy.AllowsOrigin(origin)}
	cw.fix() // now too, for error responses, which Caddy writes to w
	return next.ServeHTTP(cw, r)
}

// corsWriter makes the gateway's CORS headers the only ones of a response
// when its header is written, replacing those the upstream copied in.
type corsWriter struct {
	caddyhttp.ResponseWriterWrapper
	policy  *cors.Policy
	origin  string
	allowed bool
	fixed   bool
}

// fix sets the response's CORS headers, once for the final response.
func (cw *corsWriter) fix() {
	if !cw.fixed {
		cw.policy.SetHeaders(cw.ResponseWriter.Header(), cw.origin, cw.allowed)
	}
}

func (cw *corsWriter) WriteHeader(status int) {
	cw.fix()
	if status >= 200 || status == http.StatusSwitchingProtocols {
		cw.fixed = true
	}
	cw.ResponseWriter.WriteHeader(status)
}

func (cw *corsWriter) Write(b []byte) (int, error) {
	if !cw.fixed {
		cw.WriteHeader(http.StatusOK)
	}
	return cw.ResponseWriter.Write(b)
}

func (cw *corsWriter) ReadFrom(r io.Reader) (int64, error) {
	if !cw.fixed {
		cw.WriteHeader(http.StatusOK)
	}
	return cw.ResponseWriterWrapper.ReadFrom(r)
}

// Flush implements http.Flusher, writing the header first if need be.
func (cw *corsWriter) Flush() {
	if !cw.fixed {
		cw.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(cw.ResponseWriter).Flush()
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	cors [<matcher>] {
//	    origins     <origin> ...
//	    methods     <method> ...
//	    headers     <header> ...
//	    expose      <header> ...
//	    allow_any_origin
//	    credentials
//	    max_age     <duration>
//	}
//
// List options may be repeated; their values add up. An error names the
// line of the option it is about.
func (c *CORS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	at := map[string]caddyfile.Token{"cors": d.Token()}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if _, seen := at[opt]; !seen {
			at[opt] = d.Token()
		}
		args := d.RemainingArgs()
		var err error
		switch opt {
		case "origins", "methods", "headers", "expose":
			if len(args) == 0 {
				return d.ArgErr()
			}
		}
		switch opt {
		case "origins":
			err = appendChecked(&c.Origins, args, cors.ValidOrigin)
		case "methods":
			err = appendChecked(&c.Methods, args, cors.ValidMethod)
		case "headers":
			err = appendChecked(&c.Headers, args, cors.ValidHeader)
		case "expose":
			err = appendChecked(&c.Expose, args, cors.ValidHeader)
		case "allow_any_origin", "credentials":
			if len(args) != 0 {
				return d.ArgErr()
			}
			flag := &c.AllowAnyOrigin
			if opt == "credentials" {
				flag = &c.Credentials
			}
			if *flag {
				return d.Errf("%s already specified", opt)
			}
			*flag = true
		case "max_age":
			if len(args) != 1 {
				return d.ArgErr()
			}
			if c.MaxAge != 0 {
				return d.Err("max_age already specified")
			}
			dur, perr := caddy.ParseDuration(args[0])
			if perr != nil {
				return d.Errf("max_age %q: %v", args[0], perr)
			}
			if dur < time.Second {
				return d.Errf("max_age %q is not at least 1s", args[0])
			}
			c.MaxAge = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
		if err != nil {
			return d.WrapErr(err) // names the value
		}
	}
	if _, err := cors.New(c.config()); err != nil {
		// What is left are conflicts between options: name the line of
		// the one to change.
		opt := "cors"
		switch {
		case errors.Is(err, cors.ErrAnyWithCredentials):
			opt = "credentials"
		case errors.Is(err, cors.ErrAllowAnyWithoutAny):
			opt = "allow_any_origin"
		case errors.Is(err, cors.ErrAnyWithoutAllowAny):
			opt = "origins"
		}
		tok := caddyfile.NewDispenser([]caddyfile.Token{at[opt]})
		tok.Next()
		return tok.WrapErr(err)
	}
	return nil
}

func parseCORS(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(CORS)
	err := c.UnmarshalCaddyfile(h.Dispenser)
	return c, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CORS)(nil)
	_ caddyhttp.MiddlewareHandler = (*CORS)(nil)
	_ caddyfile.Unmarshaler       = (*CORS)(nil)
	_ http.Flusher                = (*corsWriter)(nil)
	_ io.ReaderFrom               = (*corsWriter)(nil)
)
