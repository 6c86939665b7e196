package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/fleet"
)

// RedisConfig is how the replicas of a fleet reach the Redis they share:
// the gateway-wide deny list (with deny_file: every replica's copy) and the
// buckets of `client_rate_limit { distributed }`.
type RedisConfig struct {
	// A redis://, rediss:// (TLS) or unix:// URL, with the database:
	// redis://host:6379/0. Placeholders such as {env.NAME} work.
	Address string `json:"address,omitempty"`

	// Credentials (Redis ACL user, or the password alone); they replace
	// those of the URL. Placeholders such as {env.NAME} work.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// A PEM file of the CAs that sign Redis's certificate (rediss://).
	// Default: the system's.
	CA string `json:"ca,omitempty"`

	// Find the master through Redis Sentinel: its name, and the Sentinels'
	// host:port addresses.
	SentinelMaster string   `json:"sentinel_master,omitempty"`
	SentinelNodes  []string `json:"sentinel_nodes,omitempty"`

	// Starts every key: one fleet (or tenant) per prefix. Default: nutsgate.
	Prefix string `json:"prefix,omitempty"`

	// The longest a request waits for Redis. Default: 25ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// fleetClients keeps the Redis clients across config reloads, by
// connection settings, so that a reload neither reconnects nor loses the
// deny list's subscription for long.
var fleetClients = caddy.NewUsagePool()

type pooledClient struct{ *fleet.Client }

func (p pooledClient) Destruct() error { return p.Close() }

// denySyncs keeps the sync of each deny file across config reloads, by
// connection settings and file: the config in force has its Store
// attached, and no two syncs write one file.
var denySyncs = caddy.NewUsagePool()

type pooledDenySync struct{ *fleet.DenySync }

func (p pooledDenySync) Destruct() error {
	p.Stop()
	return nil
}

// provisionFleet connects the app to Redis (or shares the connection of
// the config it replaces) and, with a deny file, sets up the sync of the
// deny list.
func (a *App) provisionFleet() error {
	repl := caddy.NewReplacer()
	cfg := fleet.Config{
		Address:        repl.ReplaceAll(a.Redis.Address, ""),
		Username:       repl.ReplaceAll(a.Redis.Username, ""),
		Password:       repl.ReplaceAll(a.Redis.Password, ""),
		SentinelMaster: a.Redis.SentinelMaster,
		SentinelNodes:  a.Redis.SentinelNodes,
		Prefix:         a.Redis.Prefix,
		Timeout:        time.Duration(a.Redis.Timeout),
	}
	if a.Redis.CA != "" {
		ca, err := filepath.Abs(repl.ReplaceAll(a.Redis.CA, ""))
		if err != nil {
			return fmt.Errorf("ca: %v", err)
		}
		cfg.CA = ca
	}
	if cfg.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	key, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	logger := a.logger.Named("redis")
	val, _, err := fleetClients.LoadOrNew(string(key), func() (caddy.Destructor, error) {
		c, err := fleet.New(cfg, fleet.Options{
			Logger: logger,
			Errors: func(op string) { redisErrors.WithLabelValues(op).Inc() },
			Up: func(up bool) {
				if up {
					redisUp.Set(1)
				} else {
					redisUp.Set(0)
				}
			},
		})
		return pooledClient{c}, err
	})
	if err != nil {
		return err
	}
	a.fleetKey, a.fleet = string(key), val.(pooledClient).Client
	if a.store == nil {
		return nil
	}
	a.denySyncKey = a.fleetKey + "\x00" + a.store.Path()
	val, _, err = denySyncs.LoadOrNew(a.denySyncKey, func() (caddy.Destructor, error) {
		return pooledDenySync{fleet.NewDenySync(a.fleet, a.store.Path(), logger.Named("deny"))}, nil
	})
	if err != nil {
		return err
	}
	a.denySync = val.(pooledDenySync).DenySync
	return nil
}

// startFleet puts the fleet's deny list in force and keeps it in step.
func (a *App) startFleet() error {
	if a.denySync == nil {
		return nil
	}
	if err := a.denySync.Start(a.store); err != nil {
		return err
	}
	a.logger.Info("deny list shared through redis", zap.String("file", a.store.Path()))
	return nil
}

// Cleanup releases the app's hold on its deny list's sync and its Redis
// connection: they end once no config uses them.
func (a *App) Cleanup() error {
	var errs []error
	if a.denySyncKey != "" {
		_, err := denySyncs.Delete(a.denySyncKey)
		errs = append(errs, err)
	}
	if a.fleetKey != "" {
		_, err := fleetClients.Delete(a.fleetKey)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fleetClient is the app's Redis client, for `client_rate_limit {
// distributed }`.
func (a *App) fleetClient() (*fleet.Client, error) {
	if a.fleet == nil {
		return nil, errors.New("the nutsgate global option has no redis block")
	}
	return a.fleet, nil
}

// unmarshalCaddyfile reads the redis block.
func (r *RedisConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := checkOptionName(d, "redis", "sentinel_nodes", "address", "username", "password", "ca", "sentinel_master", "prefix", "timeout"); err != nil {
			return err
		}
		args := d.RemainingArgs()
		if opt == "sentinel_nodes" {
			if len(args) == 0 {
				return d.ArgErr()
			}
			r.SentinelNodes = append(r.SentinelNodes, args...)
			continue
		}
		if len(args) != 1 {
			return d.ArgErr()
		}
		var err error
		switch opt {
		case "address":
			err = setOnce(&r.Address, args[0])
		case "username":
			err = setOnce(&r.Username, args[0])
		case "password":
			err = setOnce(&r.Password, args[0])
		case "ca":
			err = setOnce(&r.CA, args[0])
		case "sentinel_master":
			err = setOnce(&r.SentinelMaster, args[0])
		case "prefix":
			err = setOnce(&r.Prefix, args[0])
		case "timeout":
			var dur time.Duration
			if dur, err = caddy.ParseDuration(args[0]); err == nil && dur <= 0 {
				err = fmt.Errorf("%q is not a positive duration", args[0])
			}
			r.Timeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized redis subdirective %q", opt)
		}
		if err != nil {
			return d.Errf("redis %s: %v", opt, err)
		}
	}
	if r.Address == "" && r.SentinelMaster == "" {
		return d.Err("redis: address is required")
	}
	if r.SentinelMaster != "" && len(r.SentinelNodes) == 0 {
		return d.Err("redis: sentinel_master needs sentinel_nodes")
	}
	return nil
}
