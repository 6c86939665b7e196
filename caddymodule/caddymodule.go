// Package caddymodule plugs nutsgate into Caddy: one file per module, each
// registering itself when the package is imported. The request logic lives
// in Caddy-free packages (handlers/..., mtlsident, ratelimit).
package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	// Where nutsgate's directives run among Caddy's, in one place, in the
	// order a request meets them (each "before basic_auth" lands just ahead
	// of basic_auth, so after the ones registered before it):
	//   - path_guard before tracing, the first of Caddy's standard order, so
	//     it runs before every directive of a site, handle and route blocks
	//     included;
	//   - cors next: preflights carry no credentials and must be answered
	//     before any authentication;
	//   - mtls_ident, then client_rate_limit, keyed by the identity it sets;
	//   - token_v2 after basic_auth.
	httpcaddyfile.RegisterDirectiveOrder("path_guard", httpcaddyfile.Before, "tracing")
	httpcaddyfile.RegisterDirectiveOrder("cors", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("mtls_ident", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("client_rate_limit", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("token_v2", httpcaddyfile.After, "basic_auth")
}

// clientIP is the client address Caddy determined, honouring its
// trusted_proxies setting.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		return ip
	}
	return r.RemoteAddr
}

// clientAddr is the client IP address Caddy determined, honouring its
// trusted_proxies setting; the invalid address if there is none.
func clientAddr(r *http.Request) netip.Addr {
	s := clientIP(r)
	if a, err := netip.ParseAddr(s); err == nil {
		return a
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr()
	}
	return netip.Addr{}
}

// setOnce sets a string option that may be given once.
// checkOptionName returns an error naming the option at d, with its file
// and line, unless it is one of names. Blocks call it before they count the
// option's values, so that a misspelled name is reported as unknown and
// not as a wrong number of values. block qualifies the message for a nested
// block ("redis" gives "unrecognized redis subdirective").
func checkOptionName(d *caddyfile.Dispenser, block string, names ...string) error {
	if slices.Contains(names, d.Val()) {
		return nil
	}
	if block != "" {
		block += " "
	}
	return d.Errf("unrecognized %ssubdirective %q", block, d.Val())
}

func setOnce(field *string, val string) error {
	if *field != "" {
		return errors.New("already specified")
	}
	*field = val
	return nil
}

// setCount sets a positive whole-number option that may be given once.
func setCount(field *int, val string) error {
	if *field != 0 {
		return errors.New("already specified")
	}
	n, err := strconv.Atoi(val)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a positive whole number", val)
	}
	*field = n
	return nil
}

// appendChecked adds vals to list, each after check.
func appendChecked(list *[]string, vals []string, check func(string) error) error {
	for _, v := range vals {
		if err := check(v); err != nil {
			return err
		}
	}
	*list = append(*list, vals...)
	return nil
}
