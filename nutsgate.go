// Package nutsgate is a security gateway for a Nuts node, built as Caddy v2
// modules. Importing it registers every nutsgate module and subcommand with
// Caddy, so that
//
//	xcaddy build --with github.com/nutsgate/nutsgate=.
//
// builds a Caddy that is equivalent to the nutsgate binary of cmd/nutsgate.
package nutsgate

import (
	// the modules, their Caddyfile directives and the subcommands
	_ "github.com/nutsgate/nutsgate/caddymodule"
)
