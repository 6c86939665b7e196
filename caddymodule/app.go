package caddymodule

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/internal/filewatch"
	"github.com/nutsgate/nutsgate/mtlsident"
)

func init() {
	caddy.RegisterModule(App{})
	httpcaddyfile.RegisterGlobalOption("nutsgate", parseAppOption)
}

// App is the `nutsgate` app: the gateway-wide deny list. Every `mtls_ident`
// handler refuses the clients it lists, in addition to its own entries.
//
// The list lives in `deny_file`, one subject DN or `sha256:<fingerprint>` a
// line. The admin API (`/nutsgate/deny`) and `nutsgate deny` change it:
// each change is written to the file atomically before it takes effect, so
// the list survives a restart. Edits of the file by hand take effect within
// a second. A line that does not parse is skipped, logged with file:line
// (once per change of the file, also when an mtls_ident uses the same file)
// and counted in nutsgate_deny_file_invalid_lines; the other lines are in force,
// the gateway starts, and a change by the admin API keeps the line in the
// file. Denying a client also ends its open requests and gRPC streams, and
// closes its connections (see mtls_ident).
//
// Caddyfile (global options):
//
//	{
//	    nutsgate {
//	        deny_file <file>
//	    }
//	}
type App struct {
	// The file holding the gateway-wide deny list. It is created on the
	// first change if it does not exist. Without it the list is empty and
	// the admin API refuses changes.
	DenyFile string `json:"deny_file,omitempty"`

	store    *mtlsident.Store
	reporter *denyFileReporter
	logger   *zap.Logger
	ctx      caddy.Context // the config's; watching the file ends with it
	stop     context.CancelFunc
}

// gateway is the state every module shares, across config reloads: the
// deny list store and the open requests of identified clients.
var gateway struct {
	store   atomic.Pointer[mtlsident.Store] // nil: no app, an empty list
	streams mtlsident.Streams
	conns   mtlsident.Conns
}

// noStore is the gateway-wide deny list while no nutsgate app is running.
var noStore = mtlsident.NewStore("", nil)

// globalDeny returns the gateway-wide deny list store in force.
func globalDeny() *mtlsident.Store {
	if s := gateway.store.Load(); s != nil {
		return s
	}
	return noStore
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "nutsgate",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision reads the deny file. Only a file that cannot be read fails it;
// lines that do not parse are skipped and logged.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger, a.ctx = ctx.Logger(), ctx
	if a.DenyFile == "" {
		return nil
	}
	if err := registerMetrics(ctx); err != nil {
		return err
	}
	path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(a.DenyFile, ""))
	if err != nil {
		return fmt.Errorf("deny_file: %v", err)
	}
	a.DenyFile = path
	a.store = mtlsident.NewStore(path, sweepDenied)
	a.reporter = newDenyFileReporter(ctx, path, a.logger)
	if err := a.store.Load(); err != nil {
		return err
	}
	a.reporter.report(a.store.Skipped())
	return nil
}

// Start puts the deny list in force and watches its file for edits by hand,
// until Stop or the end of the config.
func (a *App) Start() error {
	if a.store == nil {
		return nil
	}
	gateway.store.Store(a.store)
	var ctx context.Context
	ctx, a.stop = context.WithCancel(a.ctx)
	a.store.Watch(ctx, filewatch.DefaultInterval, a.logger, func() { a.reporter.report(a.store.Skipped()) })
	a.logger.Info("deny list loaded", zap.String("file", a.store.Path()), zap.Int("entries", len(a.store.List().Entries())), zap.Int("skipped_lines", len(a.store.Skipped())))
	return nil
}

// Stop stops watching the deny file and, unless a newer config's app has
// taken over, empties the gateway-wide list.
func (a *App) Stop() error {
	if a.stop != nil {
		a.stop()
	}
	gateway.store.CompareAndSwap(a.store, nil)
	return nil
}

// sweepDenied ends the open requests, and closes the connections, of
// clients that a deny list now refuses.
func sweepDenied() {
	requests, conns := gateway.streams.Sweep(), gateway.conns.Sweep()
	if requests+conns > 0 {
		caddy.Log().Named("nutsgate").Info("cut off denied clients", zap.Int("requests", requests), zap.Int("connections", conns))
	}
}

// parseAppOption sets up the app from the `nutsgate` global option.
func parseAppOption(d *caddyfile.Dispenser, _ any) (any, error) {
	var a App
	d.Next() // consume option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "deny_file":
			if a.DenyFile != "" {
				return nil, d.Err("deny_file already specified")
			}
			if !d.AllArgs(&a.DenyFile) {
				return nil, d.ArgErr()
			}
		default:
			return nil, d.Errf("unrecognized subdirective %q", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "nutsgate", Value: caddyconfig.JSON(a, nil)}, nil
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
