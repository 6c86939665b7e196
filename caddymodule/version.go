package caddymodule

import (
	"runtime/debug"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// modulePath is nutsgate's Go module.
const modulePath = "github.com/nutsgate/nutsgate"

func init() {
	// `nutsgate version`, `--version` and `environ` print Caddy's full
	// version with caddy.CustomVersion in front: nutsgate's own version goes
	// there, so they read "nutsgate <version> / Caddy <version>". Caddy's
	// short version (its User-Agent, metrics, traces) is left alone, and so
	// is a CustomVersion a packager set at build time, which follows
	// "Caddy".
	bi, _ := debug.ReadBuildInfo()
	caddy.CustomVersion = strings.TrimSpace("nutsgate " + moduleVersion(bi) + " / Caddy " + caddy.CustomVersion)
}

// moduleVersion is nutsgate's version in a binary with build info bi: the
// module's version, whether nutsgate is the main module (cmd/nutsgate) or a
// dependency (a Caddy built with xcaddy), followed by its replacement
// directory if it was replaced; for an untagged build of the main module,
// (devel) and the VCS revision, if it was recorded.
func moduleVersion(bi *debug.BuildInfo) string {
	const devel = "(devel)"
	if bi == nil {
		return devel
	}
	var mod *debug.Module
	if bi.Main.Path == modulePath {
		mod = &bi.Main
	}
	for _, dep := range bi.Deps {
		if mod == nil && dep.Path == modulePath {
			mod = dep
		}
	}
	if mod == nil {
		return devel
	}
	v := mod.Version
	if mod.Replace != nil {
		v += " => " + mod.Replace.Path
		if mod.Replace.Version != "" && mod.Replace.Version != devel {
			v += "@" + mod.Replace.Version
		}
		return v
	}
	if v != "" && v != devel {
		return v
	}
	v = devel
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && v != devel {
		v += "+modified"
	}
	return v
}
