// Command nutsgate is Caddy with its standard modules and the nutsgate
// modules: a security gateway to run in front of a Nuts node. Every Caddy
// subcommand works (run, start, stop, reload, validate, adapt, fmt,
// list-modules, version), and so do nutsgate's own: token and deny.
package main

import (
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// the nutsgate modules
	_ "github.com/nutsgate/nutsgate"
)

func main() {
	caddy.CustomBinaryName = "nutsgate"
	caddycmd.Main()
}
