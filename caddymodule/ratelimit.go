package caddymodule

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/fleet"
	"github.com/nutsgate/nutsgate/ratelimit"
)

func init() {
	caddy.RegisterModule(ClientRateLimit{})
	httpcaddyfile.RegisterHandlerDirective("client_rate_limit", parseClientRateLimit)
}

// defaultRateKey limits each client by its certificate subject.
const defaultRateKey = "{mtls.client.subject}"

// ClientRateLimit limits requests per client with a token bucket per key:
// by default the client's certificate subject as `mtls_ident` finds it, so
// it belongs after `mtls_ident`. A request whose key is empty (no verified
// certificate) is limited by its client IP, never by a shared bucket.
//
// Over the limit: 429 with `Retry-After` (whole seconds, rounded up); gRPC
// requests get HTTP 200, trailers-only, grpc-status 8 (RESOURCE_EXHAUSTED).
// A refused request never reaches the next handler, and is logged with the
// client's key (at most 10 lines a second; every one is counted in
// nutsgate_rate_limit_refusals_total).
//
// Memory is bounded by `max_keys` whatever the traffic: buckets are only
// dropped once they have refilled completely, and when every tracked key
// is active, new keys share one overflow bucket. Buckets survive config
// reloads. Each zone has its own buckets; in a Caddyfile every block is its
// own zone unless blocks name the same `zone`.
type ClientRateLimit struct {
	// The key to limit by, a placeholder. Default: {mtls.client.subject}.
	Key string `json:"key,omitempty"`

	// The refill rate, "<n>/<duration>", e.g. "50/1s" or "3000/24h". Required.
	Rate string `json:"rate,omitempty"`

	// The bucket size. Default: n of the rate.
	Burst int `json:"burst,omitempty"`

	// The most clients tracked at once. Default: 100000.
	MaxKeys int `json:"max_keys,omitempty"`

	// Blocks with the same zone share buckets. Default: a zone of its own
	// for each Caddyfile block, client_rate_limit#<n> for the n-th block of
	// the file; in JSON, the settings above.
	Zone string `json:"zone,omitempty"`

	// Keep the buckets in the Redis of the nutsgate app's redis block: one
	// bucket per key for every replica of the fleet with the same prefix,
	// zone and rate, so that the limit holds across the fleet (a zone is
	// required; give it a name of its own, the same on every replica). When Redis cannot
	// answer within its timeout, this replica's own buckets decide
	// (nutsgate_rate_limit_fallback_total counts it).
	Distributed bool `json:"distributed,omitempty"`

	limiter *ratelimit.Limiter
	shared  *fleet.Limiter // nil unless distributed
	poolKey string
	logger  *zap.Logger
}

// limiters keeps buckets across config reloads, by zone and settings.
var limiters = caddy.NewUsagePool()

// sharedLimiter is a limiters entry.
type sharedLimiter struct{ *ratelimit.Limiter }

// Destruct lets the buckets go.
func (sharedLimiter) Destruct() error { return nil }

// CaddyModule returns the Caddy module information.
func (ClientRateLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.client_rate_limit",
		New: func() caddy.Module { return new(ClientRateLimit) },
	}
}

// Provision sets up the limiter, or finds the one of the same zone.
func (rl *ClientRateLimit) Provision(ctx caddy.Context) error {
	rl.logger = ctx.Logger()
	if err := registerMetrics(ctx); err != nil {
		return err
	}
	if rl.Key == "" {
		rl.Key = defaultRateKey
	}
	events, per, err := ratelimit.ParseRate(rl.Rate)
	if err != nil {
		return err
	}
	cfg := ratelimit.Config{Events: events, Per: per, Burst: rl.Burst, MaxKeys: rl.MaxKeys}
	rl.poolKey = fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00%d", rl.Zone, rl.Key, rl.Rate, rl.Burst, rl.MaxKeys)
	val, _, err := limiters.LoadOrNew(rl.poolKey, func() (caddy.Destructor, error) {
		l, err := ratelimit.New(cfg)
		return sharedLimiter{l}, err
	})
	if err != nil {
		return err
	}
	rl.limiter = val.(sharedLimiter).Limiter
	if rl.Distributed {
		if rl.Zone == "" {
			return errors.New("distributed: a zone is required: the replicas of a fleet share the buckets of a zone by its name")
		}
		app, err := ctx.App("nutsgate")
		if err != nil {
			return err
		}
		client, err := app.(*App).fleetClient()
		if err != nil {
			return fmt.Errorf("distributed: %v", err)
		}
		rl.shared = fleet.NewLimiter(client, rl.Zone, events, per, cmp.Or(rl.Burst, events), cmp.Or(rl.MaxKeys, ratelimit.DefaultMaxKeys))
	}
	return nil
}

// Cleanup releases this instance's hold on the buckets.
func (rl *ClientRateLimit) Cleanup() error {
	if rl.poolKey != "" {
		_, err := limiters.Delete(rl.poolKey)
		return err
	}
	return nil
}

// ServeHTTP takes a token of the client's bucket, or refuses the request.
func (rl *ClientRateLimit) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	key := repl.ReplaceAll(rl.Key, "")
	if key == "" {
		key = "ip:" + clientIP(r)
	} else {
		key = "key:" + key
	}
	ok, wait, err := rl.allow(r, key)
	if err != nil {
		rateLimitFallback.Inc()
	}
	if ok {
		return next.ServeHTTP(w, r)
	}
	rateLimitRefusals.Inc()
	retry := ratelimit.RetryAfterSeconds(wait)
	if c, sup := rateLimitRefusalLog.Check(rl.logger, zapcore.InfoLevel, rateLimitReason, "rate limit exceeded"); c != nil {
		c.Write(zap.String("reason", rateLimitReason), zap.String("client", key), zap.String("zone", rl.Zone), zap.Int("retry_after", retry), zap.String("remote_ip", clientIP(r)), zap.String("uri", r.RequestURI), sup)
	}
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	return refuse(w, r, http.StatusTooManyRequests, grpcResourceExhausted, "rate limit exceeded")
}

// allow takes a token of key's bucket: the fleet's if distributed, else, or
// if Redis could not decide (err), this replica's.
func (rl *ClientRateLimit) allow(r *http.Request, key string) (ok bool, wait time.Duration, err error) {
	if rl.shared != nil {
		if ok, wait, err = rl.shared.Allow(r.Context(), key); err == nil {
			return ok, wait, nil
		}
	}
	ok, wait = rl.limiter.Allow(key, time.Now())
	return ok, wait, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	client_rate_limit [<matcher>] {
//	    key      <placeholder>
//	    rate     <n>/<duration>
//	    burst    <n>
//	    max_keys <n>
//	    zone     <name>
//	    distributed
//	}
func (rl *ClientRateLimit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if err := checkOptionName(d, "", "distributed", "key", "rate", "burst", "max_keys", "zone"); err != nil {
			return err
		}
		if opt == "distributed" {
			if d.NextArg() {
				return d.ArgErr()
			}
			rl.Distributed = true
			continue
		}
		var val string
		if !d.AllArgs(&val) {
			return d.ArgErr()
		}
		var err error
		switch opt {
		case "key":
			err = setOnce(&rl.Key, val)
		case "rate":
			if err = setOnce(&rl.Rate, val); err == nil {
				_, _, err = ratelimit.ParseRate(val)
			}
		case "burst":
			err = setCount(&rl.Burst, val)
		case "max_keys":
			err = setCount(&rl.MaxKeys, val)
		case "zone":
			err = setOnce(&rl.Zone, val)
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
		if err != nil {
			return d.Errf("%s: %v", opt, err)
		}
	}
	if rl.Rate == "" {
		return d.Err("rate is required")
	}
	return nil
}

// rateLimitCount is the adaptation state that numbers the
// client_rate_limit blocks of a Caddyfile.
const rateLimitCount = "nutsgate.client_rate_limit.count"

// parseClientRateLimit gives a block without a zone a zone of its own,
// named by its place among the Caddyfile's client_rate_limit blocks: the
// name stays the same, and so the buckets survive a reload, whatever else
// changes in the file.
func parseClientRateLimit(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	rl := new(ClientRateLimit)
	if err := rl.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	n, _ := h.State[rateLimitCount].(int)
	h.State[rateLimitCount] = n + 1
	if rl.Zone == "" {
		rl.Zone = fmt.Sprintf("client_rate_limit#%d", n+1)
	}
	return rl, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ClientRateLimit)(nil)
	_ caddy.CleanerUpper          = (*ClientRateLimit)(nil)
	_ caddyhttp.MiddlewareHandler = (*ClientRateLimit)(nil)
	_ caddyfile.Unmarshaler       = (*ClientRateLimit)(nil)
)
