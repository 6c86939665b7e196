// Package fleet shares a gateway's state with the other replicas of its
// fleet through Redis: the gateway-wide deny list (DenySync) and rate limits
// that hold across the fleet (Limiter). It never lets Redis stall a
// request: every call has a deadline, a Client that fails marks Redis down
// until its health check passes again, and callers fall back to what they
// hold locally. It has no Caddy import.
package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	DefaultPrefix  = "nutsgate"
	DefaultTimeout = 25 * time.Millisecond
)

const (
	// healthEvery is how often the health check runs.
	healthEvery = 500 * time.Millisecond
	// healthDial bounds a health check, a dial included.
	healthDial = time.Second
	// healthChecksToChange is how many health checks in a row must agree
	// before Redis is marked up or down by them, so that one slow answer
	// does not flip the state.
	healthChecksToChange = 2
	// failuresToDown is how many calls in a row may fail before Redis is
	// marked down (and skipped) until the health check passes.
	failuresToDown = 5
)

// ErrDown is returned while Redis is marked down.
var ErrDown = errors.New("redis is unreachable")

// Config is how to reach Redis.
type Config struct {
	// Address is a redis://, rediss:// or unix:// URL. With SentinelMaster
	// it gives only the database, the credentials and whether to use TLS.
	Address string
	// Username and Password, if set, replace those of the URL.
	Username, Password string
	// CA is a PEM file of the CAs that sign the server's certificate
	// (rediss://). Default: the system's.
	CA string
	// SentinelMaster and SentinelNodes find the master through Sentinel.
	SentinelMaster string
	SentinelNodes  []string
	// Prefix starts every key and channel name: one fleet per prefix.
	Prefix string
	// Timeout bounds every call made for a request. Default 25ms.
	Timeout time.Duration
}

// Client is a connection to Redis, its health, and its clock.
type Client struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
	logger  *zap.Logger

	state    atomic.Int32 // unknown until the first health check, then up or down
	failures atomic.Int64 // calls failed in a row
	streak   int          // health checks in a row that disagree with the state; the health goroutine's
	offset   atomic.Int64 // Redis's clock minus ours, in microseconds

	start  sync.Once
	mu     sync.Mutex
	onUp   map[int]func()
	hooks  int
	stop   context.CancelFunc
	done   chan struct{}
	errors func(op string)
	upHook func(bool)
}

// Options are the hooks of a Client.
type Options struct {
	// Logger logs Redis going down and coming back.
	Logger *zap.Logger
	// Errors is called with the operation of every failed call.
	Errors func(op string)
	// Up is called with the new state whenever Redis is marked up or down.
	Up func(bool)
}

// redisLog routes go-redis's own log lines (dial failures, retries) to
// zap at DEBUG: the health check reports what matters, once per change.
type redisLog struct{ l *zap.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

var setRedisLog sync.Once

// New returns a client for cfg. It connects to nothing until Start.
func New(cfg Config, opts Options) (*Client, error) {
	o, err := clientOptions(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		rdb:     redis.NewUniversalClient(o),
		prefix:  cfg.Prefix,
		timeout: cfg.Timeout,
		logger:  opts.Logger,
		errors:  opts.Errors,
		upHook:  opts.Up,
	}
	if c.prefix == "" {
		c.prefix = DefaultPrefix
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	setRedisLog.Do(func() { redis.SetLogger(redisLog{c.logger.Named("go-redis")}) })
	return c, nil
}

// Start starts the health check, which marks Redis up once it answers; it
// does not wait for Redis, which may be away. Calls after the first do
// nothing.
func (c *Client) Start() {
	c.start.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		c.stop, c.done = cancel, make(chan struct{})
		go c.health(ctx)
	})
}

// clientOptions turns cfg into go-redis options that never make a request
// wait: one dial attempt, no retries, the caller's deadline in force.
func clientOptions(cfg Config) (*redis.UniversalOptions, error) {
	if cfg.Address == "" && cfg.SentinelMaster == "" {
		return nil, errors.New("address is required")
	}
	u := &redis.Options{}
	if cfg.Address != "" {
		var err error
		if u, err = redis.ParseURL(cfg.Address); err != nil {
			return nil, fmt.Errorf("address: %v", err)
		}
	}
	o := &redis.UniversalOptions{
		Addrs:                 []string{u.Addr},
		DB:                    u.DB,
		Username:              u.Username,
		Password:              u.Password,
		TLSConfig:             u.TLSConfig,
		Dialer:                u.Dialer,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
		MaxRetries:            -1,
		DialTimeout:           time.Second,
		ReadTimeout:           5 * time.Second, // calls carry shorter deadlines of their own
		WriteTimeout:          5 * time.Second,
		PoolTimeout:           time.Second,
		PoolSize:              64,
		DisableIdentity:       true,
	}
	if u.Network == "unix" {
		addr := u.Addr
		o.Dialer = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
	}
	if cfg.Username != "" {
		o.Username = cfg.Username
	}
	if cfg.Password != "" {
		o.Password = cfg.Password
	}
	if cfg.SentinelMaster != "" {
		if len(cfg.SentinelNodes) == 0 {
			return nil, errors.New("sentinel_master needs sentinel_nodes")
		}
		o.MasterName, o.Addrs = cfg.SentinelMaster, cfg.SentinelNodes
	}
	if cfg.CA != "" {
		pem, err := os.ReadFile(cfg.CA)
		if err != nil {
			return nil, fmt.Errorf("ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no PEM certificate in it", cfg.CA)
		}
		if o.TLSConfig == nil {
			if !strings.HasPrefix(cfg.Address, "rediss://") {
				return nil, errors.New("ca is set but the address is not rediss://")
			}
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.TLSConfig.RootCAs = pool
	}
	return o, nil
}

// Close stops the health check and closes the connections.
func (c *Client) Close() error {
	c.start.Do(func() {}) // no health check once closed
	if c.stop != nil {
		c.stop()
		<-c.done
	}
	return c.rdb.Close()
}

// Up reports whether Redis is usable: its last health check passed and
// calls have not failed since.
func (c *Client) Up() bool { return c.state.Load() == stateUp }

// usable reports whether calls to Redis are worth making: it is up, or its
// first health check has not ended yet (a replica that just started).
func (c *Client) usable() bool { return c.state.Load() != stateDown }

// The states of a Client.
const (
	stateUnknown int32 = iota
	stateUp
	stateDown
)

// Key is name under the client's prefix.
func (c *Client) Key(name string) string { return c.prefix + ":" + name }

// OnUp calls f, in a goroutine of its own, every time Redis comes back,
// until the function it returns is called.
func (c *Client) OnUp(f func()) (remove func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.onUp == nil {
		c.onUp = make(map[int]func())
	}
	c.hooks++
	id := c.hooks
	c.onUp[id] = f
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.onUp, id)
	}
}

// requestContext is ctx bounded by the request timeout.
func (c *Client) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// failed records a failed call of op, made in the caller's ctx. Counted in
// the errors metric; after failuresToDown in a row that say nothing of the
// caller (its own context ended) nor of the call (an error reply from
// Redis, such as a script error), Redis is marked down until the health
// check passes.
func (c *Client) failed(ctx context.Context, op string, err error) {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return // the client went away
	}
	if c.errors != nil {
		c.errors(op)
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		return // Redis answered: it is up
	}
	if c.failures.Add(1) >= failuresToDown {
		c.setUp(false, err)
	}
}

// succeeded records a call that worked.
func (c *Client) succeeded() { c.failures.Store(0) }

// now is the time on Redis's clock, as last measured, in microseconds.
func (c *Client) now() int64 { return time.Now().UnixMicro() + c.offset.Load() }

// health checks Redis every healthEvery until ctx ends: a TIME call, which
// also measures Redis's clock against ours.
func (c *Client) health(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		c.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs one health check: Redis must answer, and, on a connection
// already made (the first call may have to dial), within the request
// timeout, since a Redis slower than that serves no request. The state
// changes once healthChecksToChange checks in a row say so (the first
// check decides at once), and a check that passes does not undo failing
// calls until the state is down.
func (c *Client) check(ctx context.Context) {
	callCtx, cancel := context.WithTimeout(ctx, healthDial)
	defer cancel()
	_, err := c.rdb.Time(callCtx).Result()
	if err == nil {
		before := time.Now()
		var t time.Time
		t, err = c.rdb.Time(callCtx).Result()
		rtt := time.Since(before)
		switch {
		case err == nil && rtt > c.timeout:
			err = fmt.Errorf("redis answered in %s, slower than the timeout of %s", rtt.Round(time.Millisecond), c.timeout)
		case err == nil:
			c.offset.Store(t.UnixMicro() - before.Add(rtt/2).UnixMicro())
		}
	}
	if ctx.Err() != nil {
		return // stopping
	}
	up := err == nil
	if !up && c.errors != nil {
		c.errors("health")
	}
	state := c.state.Load()
	if (state == stateUp) == up && state != stateUnknown {
		c.streak = 0
		return
	}
	if c.streak++; c.streak < healthChecksToChange && state != stateUnknown {
		return
	}
	c.streak = 0
	if up {
		c.failures.Store(0)
	}
	c.setUp(up, err)
}

// setUp marks Redis up or down, logging and calling the hooks on a change.
func (c *Client) setUp(up bool, err error) {
	next := stateDown
	if up {
		next = stateUp
	}
	if c.state.Swap(next) == next {
		return
	}
	if c.upHook != nil {
		c.upHook(up)
	}
	if !up {
		c.logger.Error("redis unusable (unreachable, too slow, or refusing this replica's credentials); the deny list in force stays, rate limits use this replica's buckets, deny-list edits are refused", zap.Error(err))
		return
	}
	c.logger.Info("redis reachable")
	c.mu.Lock()
	hooks := slices.Collect(maps.Values(c.onUp))
	c.mu.Unlock()
	for _, f := range hooks {
		go f()
	}
}
