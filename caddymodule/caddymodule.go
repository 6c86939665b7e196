// Package caddymodule plugs nutsgate into Caddy: one file per module, each
// registering itself when the package is imported. The request logic lives
// in Caddy-free packages (handlers/..., mtlsident, ratelimit).
package caddymodule

import "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

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
