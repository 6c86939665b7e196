package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
	"weak"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/fleet"
	"github.com/nutsgate/nutsgate/internal/atomicfile"
	"github.com/nutsgate/nutsgate/internal/filewatch"
	"github.com/nutsgate/nutsgate/mtlsident"
	"github.com/nutsgate/nutsgate/pki"
)

func init() {
	caddy.RegisterModule(App{})
	httpcaddyfile.RegisterGlobalOption("nutsgate", parseAppOption)
}

// App is the `nutsgate` app: the gateway-wide deny list, and revocation
// checking (`pki`). Every `mtls_ident` handler refuses the clients the deny
// list names, in addition to its own entries.
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
// With `pki`, client certificates are checked for revocation as a Nuts node
// checks its peers': by the CRLs their chains name (and those listed in
// `crl`) and by the Nuts denylist. The `nuts_pki` verifier
// (`tls.client_auth.verifier.nuts_pki`) refuses the TLS handshake of a
// revoked or banned client; every `mtls_ident` refuses its requests (403)
// and, after a refresh that revokes or bans it, or once its certificate
// expires, closes its connections and streams within a second. The last
// good CRLs and denylist are kept in `state_dir`, so that a restart while a
// source is down keeps them in force.
//
// Caddyfile (global options):
//
//	{
//	    nutsgate {
//	        deny_file <file>
//	        state_dir <dir>
//	        pki {
//	            refresh       <duration>
//	            max_stale     <duration>|off
//	            fetch_timeout <duration>
//	            crl           <url|file> ...
//	            denylist {
//	                url            <url|file>|off
//	                trusted_signer <file>
//	            }
//	        }
//	    }
//	}
type App struct {
	// The file holding the gateway-wide deny list. It is created on the
	// first change if it does not exist; its directory must exist and be
	// writable by the gateway (changes replace the file through a
	// temporary file there), or the config is refused. Without it the list
	// is empty and the admin API refuses changes.
	DenyFile string `json:"deny_file,omitempty"`

	// Where the last good CRLs and denylist are kept. Default: the
	// "nutsgate" directory in Caddy's data directory.
	StateDir string `json:"state_dir,omitempty"`

	// Revocation checking. A `nuts_pki` verifier without it uses the
	// defaults.
	PKI *PKIConfig `json:"pki,omitempty"`

	// The Redis the replicas of a fleet share: the deny list (with
	// deny_file, this replica's copy of it) and distributed rate limits.
	Redis *RedisConfig `json:"redis,omitempty"`

	checker     *pki.Checker // nil without pki and without a nuts_pki verifier
	fleet       *fleet.Client
	fleetKey    string
	denySync    *fleet.DenySync // nil without redis or without deny_file
	denySyncKey string
	store       *mtlsident.Store
	reporter    *denyFileReporter
	logger      *zap.Logger
	ctx         caddy.Context // the config's; watching the file ends with it
	stop        context.CancelFunc
	started     chan struct{}     // closed once Start has put everything in force
	prev        weak.Pointer[App] // the app in force before this one started
	stopped     *atomic.Bool      // set by Stop
}

// PKIConfig is the app's revocation checking.
type PKIConfig struct {
	// How often every CRL and the denylist are fetched again. Default: 1h,
	// the Nuts network's rule.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// How far past due a source may be before the clients it decides on
	// are refused: a CRL past its nextUpdate; the denylist (or a CRL
	// without nextUpdate) a refresh plus a minute (at most another refresh)
	// past its last successful fetch. A source never fetched, or a CRL not
	// signed by the client's CA, refuses at once. Unset or 0 ("off"): never
	// refused for that; a client whose status cannot be established passes
	// and a warning is logged, as the node's pki.softfail does. A revoked
	// serial is refused either way.
	MaxStale caddy.Duration `json:"max_stale,omitempty"`

	// How long one fetch may take, body included. Default: 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// Further CRLs, for CAs whose certificates name none: HTTP(S) URLs or
	// files, DER or PEM. Each applies to the certificates of the CA that
	// signed it.
	CRL []string `json:"crl,omitempty"`

	// The Nuts denylist. Default: none.
	Denylist *DenylistConfig `json:"denylist,omitempty"`
}

// DenylistConfig is where the Nuts denylist comes from.
type DenylistConfig struct {
	// An HTTP(S) URL or a file; empty: no denylist. The network's list is
	// https://cdn.jsdelivr.net/gh/nuts-foundation/denylist@main/denylist/denylist.jws
	URL string `json:"url,omitempty"`

	// A PEM file with the Ed25519 public key the list must be signed with.
	// Default: the key the Nuts node trusts by default.
	TrustedSigner string `json:"trusted_signer,omitempty"`
}

// gateway is the state every module shares, across config reloads: the
// nutsgate app in force (its deny list store, revocation checker and deny
// list sync), and the open requests and connections of identified clients.
var gateway struct {
	app     atomic.Pointer[App] // nil: no app, an empty list and no revocation checking
	streams mtlsident.Streams
	conns   mtlsident.Conns
}

// noStore is the gateway-wide deny list while no nutsgate app with a deny
// file is in force.
var noStore = mtlsident.NewStore("", nil)

// globalDeny returns the gateway-wide deny list store in force.
func globalDeny() *mtlsident.Store {
	if a := gateway.app.Load(); a != nil && a.store != nil {
		return a.store
	}
	return noStore
}

// pkiInForce returns the revocation checker in force, nil if none.
func pkiInForce() *pki.Checker {
	if a := gateway.app.Load(); a != nil {
		return a.checker
	}
	return nil
}

// denySyncInForce returns the fleet's deny list sync in force, nil if the
// deny list is this replica's own.
func denySyncInForce() *fleet.DenySync {
	if a := gateway.app.Load(); a != nil {
		return a.denySync
	}
	return nil
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "nutsgate",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision reads the deny file and sets up revocation checking. A deny
// file that cannot be read, or whose directory does not exist or is not
// writable by the gateway, fails it; lines that do not parse are skipped
// and logged.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger, a.ctx, a.started, a.stopped = ctx.Logger(), ctx, make(chan struct{}), new(atomic.Bool)
	if err := registerMetrics(ctx); err != nil {
		return err
	}
	if a.PKI != nil {
		if err := a.provisionPKI(); err != nil {
			return fmt.Errorf("pki: %v", err)
		}
	}
	if err := a.provisionDenyFile(); err != nil {
		return err
	}
	if a.Redis != nil { // after the deny file, whose list it shares
		if err := a.provisionFleet(); err != nil {
			return fmt.Errorf("redis: %v", err)
		}
	}
	return nil
}

// provisionDenyFile reads the deny file, if there is one.
func (a *App) provisionDenyFile() error {
	if a.DenyFile == "" {
		return nil
	}
	path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(a.DenyFile, ""))
	if err != nil {
		return fmt.Errorf("deny_file: %v", err)
	}
	a.DenyFile = path
	// Changes replace the file through a temporary file next to it: a
	// directory they cannot write in must fail here, not the first change.
	if err := atomicfile.CheckDir(path); err != nil {
		return fmt.Errorf("deny_file %s: %v", path, err)
	}
	a.store = mtlsident.NewStore(path, sweepDenied)
	a.reporter = newDenyFileReporter(a.ctx, path, a.logger)
	if err := a.store.Load(); err != nil {
		return err
	}
	a.reporter.report(a.store.Skipped())
	return nil
}

// provisionPKI makes the revocation checker of the PKI config, or of the
// defaults if there is none.
func (a *App) provisionPKI() error {
	p := cmp.Or(a.PKI, new(PKIConfig))
	repl := caddy.NewReplacer()
	abs := func(path string) (string, error) { return filepath.Abs(repl.ReplaceAll(path, "")) }
	stateDir, err := abs(cmp.Or(a.StateDir, filepath.Join(caddy.AppDataDir(), "nutsgate")))
	if err != nil {
		return fmt.Errorf("state_dir: %v", err)
	}
	cfg := pki.Config{
		Refresh:      time.Duration(p.Refresh),
		MaxStale:     time.Duration(p.MaxStale),
		FetchTimeout: time.Duration(p.FetchTimeout),
		StateDir:     stateDir,
		Logger:       a.logger.Named("pki"),
		Changed:      sweepDenied,
		FetchFailed:  func(source string) { pkiFetchErrors.WithLabelValues(source).Inc() },
	}
	if cfg.Refresh < 0 || cfg.MaxStale < 0 || cfg.FetchTimeout < 0 {
		return errors.New("refresh, max_stale and fetch_timeout must not be negative")
	}
	for _, src := range p.CRL {
		if !pki.IsURL(src) {
			if src, err = abs(src); err != nil {
				return fmt.Errorf("crl: %v", err)
			}
		}
		cfg.CRLs = append(cfg.CRLs, src)
	}
	if d := p.Denylist; d != nil && d.URL != "" {
		cfg.Denylist = d.URL
		if !pki.IsURL(d.URL) {
			if cfg.Denylist, err = abs(d.URL); err != nil {
				return fmt.Errorf("denylist url: %v", err)
			}
		}
		if d.TrustedSigner != "" {
			path, err := abs(d.TrustedSigner)
			if err != nil {
				return fmt.Errorf("denylist trusted_signer: %v", err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("denylist trusted_signer: %v", err)
			}
			if cfg.Signer, err = pki.ParseSigner(data); err != nil {
				return fmt.Errorf("denylist %s: %v", path, err)
			}
		}
	}
	a.checker = pki.New(cfg)
	return nil
}

// pkiChecker returns the app's revocation checker, made with the defaults
// if the config has no pki block: a `nuts_pki` verifier needs one.
func (a *App) pkiChecker() (*pki.Checker, error) {
	if a.checker == nil {
		if err := a.provisionPKI(); err != nil {
			return nil, fmt.Errorf("pki: %v", err)
		}
	}
	return a.checker, nil
}

// Start puts the deny list and the revocation checker in force, and
// watches the deny file for edits by hand, until Stop or the end of the
// config.
func (a *App) Start() error {
	prev := gateway.app.Load()
	if err := a.start(prev); err != nil {
		_ = a.Stop() // Caddy stops only the apps that started
		return err
	}
	a.prev = weak.Make(prev)
	gateway.app.Store(a)
	close(a.started)
	return nil
}

// awaitStart waits until the app has started, or until ctx or the config
// ends, and reports whether it started. Caddy starts a config's apps in no
// set order: the http app's listeners may take connections before this app
// has put its config's deny list and revocation checker in force, and a
// request or handshake of that moment must not be judged without them.
func (a *App) awaitStart(ctx context.Context) bool {
	select {
	case <-a.started:
		return true
	default:
	}
	select {
	case <-a.started:
		return true
	case <-ctx.Done():
	case <-a.ctx.Done():
	}
	return false
}

// start starts what Start puts in force; prev is the app in force now.
func (a *App) start(prev *App) error {
	if a.checker != nil {
		if prev != nil {
			a.checker.Adopt(prev.checker) // the previous config's, on a reload
		}
		a.checker.Start()
		cfg := a.checker.Config()
		a.logger.Info("revocation checking started", zap.Duration("refresh", cfg.Refresh), zap.Duration("max_stale", cfg.MaxStale),
			zap.Strings("crl", cfg.CRLs), zap.String("denylist", cfg.Denylist), zap.String("state_dir", cfg.StateDir))
	}
	if a.fleet != nil {
		a.fleet.Start()
	}
	if a.store == nil {
		return nil
	}
	var ctx context.Context
	ctx, a.stop = context.WithCancel(a.ctx)
	a.store.Watch(ctx, filewatch.DefaultInterval, a.logger, func() {
		a.reporter.report(a.store.Skipped())
		if a.denySync != nil {
			a.denySync.Kick() // with redis, the fleet's list replaces edits by hand
		}
	})
	a.logger.Info("deny list loaded", zap.String("file", a.store.Path()), zap.Int("entries", len(a.store.List().Entries())), zap.Int("skipped_lines", len(a.store.Skipped())))
	return a.startFleet()
}

// Stop stops watching the deny file and the revocation checker. Unless a
// newer config's app has taken over, the app in force becomes the one that
// was before this one if it still runs (a reload that failed to start: the
// running config goes on with its list and checker), or none.
func (a *App) Stop() error {
	a.stopped.Store(true)
	if a.stop != nil {
		a.stop()
	}
	back := a.prev.Value()
	if back != nil && back.stopped.Load() {
		back = nil
	}
	if gateway.app.CompareAndSwap(a, back) && back != nil && back.denySync != nil {
		_ = back.denySync.Start(back.store) // the shared sync works on this app's store again
	}
	if a.checker != nil {
		a.checker.Stop()
	}
	return nil
}

// sweepDenied closes the connections, and ends the open requests, of clients
// that a deny list now refuses. Connections go first, so that a client sees
// its connection closed rather than a request ended on it.
func sweepDenied() {
	conns := gateway.conns.Sweep()
	requests := gateway.streams.Sweep()
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
		case "state_dir":
			if a.StateDir != "" {
				return nil, d.Err("state_dir already specified")
			}
			if !d.AllArgs(&a.StateDir) {
				return nil, d.ArgErr()
			}
		case "redis":
			if a.Redis != nil {
				return nil, d.Err("redis already specified")
			}
			a.Redis = new(RedisConfig)
			if err := a.Redis.unmarshalCaddyfile(d); err != nil {
				return nil, err
			}
		case "pki":
			if a.PKI != nil {
				return nil, d.Err("pki already specified")
			}
			a.PKI = new(PKIConfig)
			if err := a.PKI.unmarshalCaddyfile(d); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("unrecognized subdirective %q", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "nutsgate", Value: caddyconfig.JSON(a, nil)}, nil
}

// unmarshalCaddyfile reads the pki block.
func (p *PKIConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	duration := func(dst *caddy.Duration, offOK bool) error {
		name := d.Val()
		var v string
		if !d.AllArgs(&v) {
			return d.ArgErr()
		}
		if *dst != 0 {
			return d.Errf("%s already specified", name)
		}
		if offOK && v == "off" {
			return nil
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return d.Errf("%s: %q is not a positive duration", name, v)
		}
		*dst = caddy.Duration(dur)
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "refresh":
			err = duration(&p.Refresh, false)
		case "max_stale":
			err = duration(&p.MaxStale, true)
		case "fetch_timeout":
			err = duration(&p.FetchTimeout, false)
		case "crl":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			p.CRL = append(p.CRL, args...)
		case "denylist":
			if p.Denylist != nil {
				return d.Err("denylist already specified")
			}
			p.Denylist = new(DenylistConfig)
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				opt := d.Val()
				if err := checkOptionName(d, "denylist", "url", "trusted_signer"); err != nil {
					return err
				}
				var v string
				if !d.AllArgs(&v) {
					return d.ArgErr()
				}
				switch opt {
				case "url":
					if v != "off" {
						err = setOnce(&p.Denylist.URL, v)
					}
				case "trusted_signer":
					err = setOnce(&p.Denylist.TrustedSigner, v)
				default:
					return d.Errf("unrecognized denylist subdirective %q", opt)
				}
				if err != nil {
					return d.Errf("denylist %s: %v", opt, err)
				}
			}
		default:
			return d.Errf("unrecognized pki subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
