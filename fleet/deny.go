package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/internal/atomicfile"
	"github.com/nutsgate/nutsgate/mtlsident"
)

// The shared deny list in Redis, under the client's prefix:
//
//	deny           a hash: entry key -> "<version> <+|-> <entry text>"
//	deny:version   the highest version given out
//	deny:events    the channel on which each change publishes its version
//
// A removed entry stays in the hash, as "-", so that a replica that missed
// its removal cannot bring it back. Versions are microseconds on Redis's
// clock (or one more than the last, if that is higher): an edit made after
// Redis lost everything still wins over what the replicas put back.
const (
	denyHash    = "deny"
	denyVersion = "deny:version"
	denyEvents  = "deny:events"
)

const (
	// editBudget is how long an edit may take to reach Redis: one that
	// Redis runs later, once resumed, does nothing.
	editBudget = time.Second
	// editMargin is how much longer an edit waits for Redis's answer, so
	// that an edit Redis made in time is not reported as failed.
	editMargin = time.Second
	// syncEvery is how often a replica compares its list with the fleet's
	// even without an event.
	syncEvery = 10 * time.Second
	// syncTimeout bounds one comparison.
	syncTimeout = 2 * time.Second
	// maxRecords bounds the entries read from Redis.
	maxRecords = 100000
	// maxRecordLen bounds one entry read from Redis.
	maxRecordLen = 8 << 10
)

// The scripts trust no number Redis holds: a version that is not digits,
// or lies more than a day ahead of Redis's clock (so that adding one would
// not change it, or it would freeze every later edit), counts as none.

// editScript makes one change: KEYS are the hash and the version; ARGV the
// entry key, "+" or "-", the entry text, the deadline (microseconds, Redis
// clock) and the channel. It returns the change's version, -1 if the
// deadline has passed (nothing done), or -2 if Redis has no good version
// (it lost its data, or holds garbage: the replicas must put the list back
// first).
var editScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(ARGV[4]) then return -1 end
local cur = redis.call('GET', KEYS[2])
if not cur or not string.match(cur, '^%d+$') or tonumber(cur) > now + 86400000000 then return -2 end
local v = string.format('%d', math.max(tonumber(cur) + 1, now))
redis.call('SET', KEYS[2], v)
redis.call('HSET', KEYS[1], ARGV[1], v .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
redis.call('PUBLISH', ARGV[5], v)
return tonumber(v)
`)

// mergeScript puts a replica's records into Redis where they are newer
// than Redis's (or Redis's is not a good one): KEYS are the hash and the
// version; ARGV the channel, then four values a record (entry key,
// version, "+" or "-", text). It sets the version to at least the highest
// record's, and publishes if anything changed. It returns 1 if anything
// changed.
var mergeScript = redis.NewScript(`
local t = redis.call('TIME')
local limit = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 86400000000
local function good(s)
  if not s then return nil end
  local v = tonumber(string.match(s, '^(%d+)$') or string.match(s, '^(%d+) '))
  if v and v <= limit then return v end
  return nil
end
local changed = 0
local top = 0
for i = 2, #ARGV, 4 do
  local v = tonumber(ARGV[i + 1])
  if v > (good(redis.call('HGET', KEYS[1], ARGV[i])) or -1) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3])
    changed = 1
  end
  if v > top then top = v end
end
local cur = good(redis.call('GET', KEYS[2]))
if not cur or cur < top then
  redis.call('SET', KEYS[2], string.format('%d', math.max(cur or 0, top)))
  changed = 1
end
if changed == 1 then redis.call('PUBLISH', ARGV[1], redis.call('GET', KEYS[2])) end
return changed
`)

// readScript returns the version (nil if none) and the hash, as one read;
// or, if the hash holds more than ARGV[1] entries, the version and their
// number, read no further.
var readScript = redis.NewScript(`
local n = redis.call('HLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return {redis.call('GET', KEYS[2]), n} end
return {redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[1])}
`)

// ErrUnavailable is returned by Edit when Redis cannot take the edit: it
// was not made, and never will be.
var ErrUnavailable = errors.New("redis is unavailable; the edit was not made")

// record is one entry of the shared list, as a replica knows it.
type record struct {
	Version int64  `json:"version"`
	Removed bool   `json:"removed,omitempty"`
	Text    string `json:"text"`
}

// maxAhead is how far past Redis's clock a version may lie and still be
// believed.
const maxAhead = 24 * time.Hour

// syncGap is the least time between two comparisons, however often the
// channel says something changed.
const syncGap = 100 * time.Millisecond

// DenySync keeps a replica's copy of the gateway-wide deny list (an
// mtlsident.Store, the deny_file) in step with the fleet's in Redis: edits
// go to Redis first, then to the copy; changes made elsewhere arrive by
// Pub/Sub within a second, and a full comparison runs every syncEvery and
// whenever Redis comes back. The versions of the entries, removed ones
// included, are kept next to the deny file (<deny_file>.fleet.json), so
// that a replica restarted without Redis knows them, and can give them
// back to a Redis that lost its data. While Redis is away, the copy is
// kept as the fleet's list last known: a hand edit of the deny file is put
// back.
//
// One DenySync serves a deny file across config reloads: Start attaches
// the Store of the config in force (the first call also starts the
// syncing).
type DenySync struct {
	c      *Client
	path   string // the versions file
	logger *zap.Logger

	mu      sync.Mutex // serialises edits and syncs; guards what follows
	store   *mtlsident.Store
	records map[string]record
	synced  bool // the last comparison succeeded

	start  sync.Once
	kick   chan struct{}
	stop   context.CancelFunc
	unhook func()
	done   sync.WaitGroup
}

// NewDenySync returns the sync of the deny file at denyFile with the
// fleet's list.
func NewDenySync(c *Client, denyFile string, logger *zap.Logger) *DenySync {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &DenySync{c: c, path: denyFile + ".fleet.json", logger: logger, kick: make(chan struct{}, 1)}
}

// Start puts the fleet's list in force in store (the Store of the deny
// file, of the config now in force). The first call reads the versions
// file (the deny file's entries count as the oldest if there is none, or
// if it does not parse), and keeps the list in step with the fleet's until
// Stop.
func (d *DenySync) Start(store *mtlsident.Store) error {
	d.mu.Lock()
	d.store = store
	d.mu.Unlock()
	var err error
	d.start.Do(func() {
		if err = d.load(); err != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		d.stop = cancel
		d.done.Add(2)
		go d.subscribe(ctx)
		go d.loop(ctx)
		d.unhook = d.c.OnUp(d.Kick)
	})
	d.Kick()
	return err
}

// Stop ends the syncing.
func (d *DenySync) Stop() {
	d.start.Do(func() {}) // never starts once stopped
	if d.stop != nil {
		d.unhook()
		d.stop()
		d.done.Wait()
	}
}

// Kick asks for a comparison with the fleet's list soon.
func (d *DenySync) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// load reads the versions file, or makes the records of the deny file's
// entries (version 0: any change the fleet made wins over them).
func (d *DenySync) load() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records = make(map[string]record)
	data, err := os.ReadFile(d.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %v", d.path, err)
	}
	var stored map[string]record
	if err == nil {
		if err := json.Unmarshal(data, &stored); err != nil {
			d.logger.Error("deny list: the versions file does not parse; starting from the deny file, whose entries the fleet's changes replace",
				zap.String("file", d.path), zap.Error(err))
			stored = nil
		}
	}
	if stored == nil {
		for _, e := range d.store.List().Entries() {
			d.records[e.Key()] = record{Text: e.Text}
		}
		return nil
	}
	for _, r := range stored {
		if e, err := mtlsident.ParseEntry(r.Text); err == nil && r.Version >= 0 {
			d.records[e.Key()] = r
		}
	}
	_, err = d.apply(false)
	return err
}

// subscribe asks for a comparison on every change published and every
// (re)subscription, until ctx ends.
func (d *DenySync) subscribe(ctx context.Context) {
	defer d.done.Done()
	defer d.recovered("subscription")
	ps := d.c.rdb.Subscribe(ctx, d.c.Key(denyEvents))
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			d.Kick()
		}
	}
}

// recovered turns a panic in go-redis, on an answer no Redis sends, into
// an error line: what Redis sends must not stop the gateway.
func (d *DenySync) recovered(what string) {
	if r := recover(); r != nil {
		d.logger.Error("deny list: "+what+" stopped on an answer from Redis that cannot be read; the list in force stays", zap.Any("panic", r))
	}
}

// loop compares the list with the fleet's when kicked and every syncEvery,
// at most once every syncGap. While Redis is not usable it puts the list
// last known back in force (a hand edit of the deny file does not hold).
func (d *DenySync) loop(ctx context.Context) {
	defer d.done.Done()
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
		d.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(syncGap):
		}
	}
}

// once runs one comparison, or, while Redis is not usable, puts the list
// last known back in force.
func (d *DenySync) once(ctx context.Context) {
	defer d.recovered("a comparison")
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.c.usable() {
		if _, err := d.apply(false); err != nil {
			d.logger.Error("deny list: writing the deny file", zap.Error(err))
		}
		return
	}
	err := d.sync(ctx)
	if err != nil && d.synced {
		d.logger.Warn("deny list: comparing with the fleet's list failed; retrying", zap.Error(err))
	}
	d.synced = err == nil
}

// sync compares the records with Redis's: those newer in Redis are taken,
// those newer here are given to Redis (all of them if Redis lost its
// data), and the list in force follows. d.mu is held.
func (d *DenySync) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	keys := []string{d.c.Key(denyHash), d.c.Key(denyVersion)}
	res, err := readScript.Run(ctx, d.c.rdb, keys, maxRecords).Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("read script answered %d values", len(res))
	}
	if err != nil {
		d.c.failed(ctx, "deny_sync", err)
		return err
	}
	d.c.succeeded()
	if n, ok := res[1].(int64); ok {
		return fmt.Errorf("the shared deny list holds %d entries, more than the %d a replica reads", n, maxRecords)
	}
	limit := d.c.now() + maxAhead.Microseconds()
	remote, bad := parseRecords(res[1], limit)
	if bad > 0 {
		d.logger.Warn("deny list: Redis holds entries that do not parse; ignored", zap.Int("entries", bad))
	}
	var push []any
	for k, r := range d.records {
		if rr, ok := remote[k]; (!ok || rr.Version < r.Version) && r.Version <= limit {
			push = append(push, k, strconv.FormatInt(r.Version, 10), op(r), r.Text)
		}
	}
	taken := false
	for k, r := range remote {
		if lr, ok := d.records[k]; !ok || lr.Version < r.Version {
			d.records[k] = r
			taken = true
		}
	}
	version, _ := res[0].(string)
	if _, ok := goodVersion(version, limit); !ok || len(push) > 0 {
		args := append([]any{d.c.Key(denyEvents)}, push...)
		if err := mergeScript.Run(ctx, d.c.rdb, keys, args...).Err(); err != nil {
			d.c.failed(ctx, "deny_sync", err)
			return err
		}
		if !ok {
			d.logger.Warn("deny list: Redis had no good version (restarted without its data?); this replica's list given back", zap.Int("entries", len(d.records)))
		}
	}
	changed, err := d.apply(taken)
	if changed {
		d.logger.Info("deny list updated from the fleet's", zap.Int("entries", len(d.store.List().Entries())))
	}
	return err
}

func op(r record) string {
	if r.Removed {
		return "-"
	}
	return "+"
}

// goodVersion reads a version: decimal digits only, at most limit.
func goodVersion(s string, limit int64) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v <= limit
}

// parseRecords reads Redis's hash: entries that do not parse, whose key is
// not their text's, or whose version is past limit, are counted in bad and
// left out.
func parseRecords(v any, limit int64) (map[string]record, int) {
	flat, _ := v.([]any)
	out := make(map[string]record, min(len(flat)/2, maxRecords))
	bad := 0
	for i := 0; i+1 < len(flat); i += 2 {
		key, _ := flat[i].(string)
		val, _ := flat[i+1].(string)
		if len(val) > maxRecordLen || len(out) >= maxRecords {
			bad++
			continue
		}
		r, ok := parseRecord(val, limit)
		if !ok {
			bad++
			continue
		}
		if e, err := mtlsident.ParseEntry(r.Text); err != nil || e.Key() != key {
			bad++
			continue
		}
		out[key] = r
	}
	return out, bad
}

// parseRecord reads "<version> <+|-> <text>", the version at most limit.
func parseRecord(s string, limit int64) (record, bool) {
	v, rest, ok := strings.Cut(s, " ")
	if !ok {
		return record{}, false
	}
	o, text, ok := strings.Cut(rest, " ")
	ver, good := goodVersion(v, limit)
	if !ok || !good || (o != "+" && o != "-") || text == "" {
		return record{}, false
	}
	return record{Version: ver, Removed: o == "-", Text: text}, true
}

// apply writes the versions file if save is set, and puts the records'
// list in force (the deny file first), reporting whether the list in force
// changed: a deny file edited by hand is put back. d.mu is held.
func (d *DenySync) apply(save bool) (bool, error) {
	if save {
		if err := d.save(); err != nil {
			return false, err
		}
	}
	var entries []mtlsident.Entry
	for _, r := range d.records {
		if r.Removed {
			continue
		}
		if e, err := mtlsident.ParseEntry(r.Text); err == nil {
			entries = append(entries, e)
		}
	}
	slices.SortFunc(entries, func(a, b mtlsident.Entry) int { return strings.Compare(a.Text, b.Text) })
	return d.store.Replace(entries)
}

// save writes the versions file. d.mu is held.
func (d *DenySync) save() error {
	data, err := json.MarshalIndent(d.records, "", "\t")
	if err != nil {
		return err
	}
	return atomicfile.Write(d.path, append(data, '\n'), 0o600)
}

// Edit adds (add) or removes e through Redis, then on this replica, and
// reports whether the list in force here changed. Removing an entry this
// replica does not list changes nothing, and asks nothing of Redis. If
// Redis cannot take the edit in time it returns an error wrapping
// ErrUnavailable: the edit was not made, anywhere, and Redis will not make
// it later (it carries a deadline that Redis checks on its own clock).
func (d *DenySync) Edit(ctx context.Context, e mtlsident.Entry, add bool) (changed bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() {
		if r := recover(); r != nil { // go-redis on an answer no Redis sends
			changed, err = false, fmt.Errorf("%w: reading Redis's answer: %v", ErrUnavailable, r)
		}
	}()
	if r, ok := d.records[e.Key()]; !add && (!ok || r.Removed) {
		return false, nil
	}
	r := record{Removed: !add, Text: e.Text}
	keys := []string{d.c.Key(denyHash), d.c.Key(denyVersion)}
	for range 2 {
		if !d.c.usable() {
			return false, ErrUnavailable
		}
		deadline := d.c.now() + editBudget.Microseconds()
		v, err := d.edit(ctx, keys, e, op(r), deadline)
		switch {
		case err != nil:
			return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
		case v == -1:
			return false, fmt.Errorf("%w: redis took longer than %s", ErrUnavailable, editBudget)
		case v == -2:
			// Redis lost the list, or holds garbage: give it back, then edit.
			if err := d.sync(ctx); err != nil {
				return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			continue
		case v <= 0 || v > d.c.now()+maxAhead.Microseconds():
			return false, fmt.Errorf("%w: redis answered version %d", ErrUnavailable, v)
		}
		r.Version = v
		d.records[e.Key()] = r
		return d.apply(true)
	}
	return false, fmt.Errorf("%w: redis lost the list again", ErrUnavailable)
}

// edit runs the edit script once, with its deadline, waiting editMargin
// longer for the answer.
func (d *DenySync) edit(ctx context.Context, keys []string, e mtlsident.Entry, op string, deadline int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, editBudget+editMargin)
	defer cancel()
	v, err := editScript.Run(ctx, d.c.rdb, keys, e.Key(), op, e.Text, deadline, d.c.Key(denyEvents)).Int64()
	if err != nil {
		d.c.failed(ctx, "deny_edit", err)
		return 0, err
	}
	d.c.succeeded()
	return v, nil
}
