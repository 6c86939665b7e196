package tokenv2

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCacheSize is how many verified tokens a Verifier remembers unless
// told otherwise.
const DefaultCacheSize = 10000

// Verifier decides requests against the token_v2 rules with the key set in
// force. A token that verified once is remembered until it expires, so a
// client that sends the same token again costs a hash and a map look-up;
// so does a token whose signature failed, which is remembered as refused (see
// flood.go for that cache, the failure budget and the cap on concurrent
// signature checks). Replacing the key set forgets every remembered token. A
// Verifier is safe for concurrent use.
type Verifier struct {
	policy    Policy
	cacheSize int
	now       func() time.Time
	state     atomic.Pointer[verifierState]
	flood     floodGuard
}

// verifierState is a key set and the tokens verified with it; both are
// replaced together.
type verifierState struct {
	keys *KeySet
	mu   sync.RWMutex
	seen map[[sha256.Size]byte]Grant
	// refused holds tokens whose signature failed with keys.
	refused refusedCache
}

// NewVerifier returns a Verifier for p that refuses every request until
// SetKeys is called. cacheSize bounds the verified-token cache (0 means
// DefaultCacheSize; negative disables it). now is the clock (nil means
// time.Now).
func NewVerifier(p Policy, cacheSize int, now func() time.Time) *Verifier {
	if cacheSize == 0 {
		cacheSize = DefaultCacheSize
	}
	if now == nil {
		now = time.Now
	}
	v := &Verifier{policy: p, cacheSize: cacheSize, now: now}
	v.flood.init(now)
	v.SetKeys(&KeySet{})
	return v
}

// SetKeys puts ks in force and forgets every verified token.
func (v *Verifier) SetKeys(ks *KeySet) {
	v.state.Store(&verifierState{keys: ks, seen: make(map[[sha256.Size]byte]Grant)})
}

// Verify decides a request by its Authorization header value. It returns a
// *Refusal for every request that must not pass. It refuses a token of a
// key past its expiry-time=, but knows no client: it applies no from=
// option and no failure budget (see VerifyFrom).
func (v *Verifier) Verify(authorization string) (Grant, error) {
	return v.verify(context.Background(), authorization, netip.Addr{}, false)
}

// VerifyFrom decides a request of client (its IP address; the zero Addr if
// unknown) by its Authorization header value, cheapest checks first: a
// token verified before passes from memory, a token whose signature failed
// before is refused from memory, then come the rules on the token's form,
// key and claims, the from= option of its key (on remembered tokens too),
// then the client's failure budget, and the signature last. A signature
// check waits for a free slot while the cap on concurrent checks is
// reached, at most until ctx ends. Clients whose address is unknown share
// one failure budget; an unknown address passes no from= option.
func (v *Verifier) VerifyFrom(ctx context.Context, authorization string, client netip.Addr) (Grant, error) {
	return v.verify(ctx, authorization, client, true)
}

// verify is Verify, and with fromClient VerifyFrom.
func (v *Verifier) verify(ctx context.Context, authorization string, client netip.Addr, fromClient bool) (Grant, error) {
	token, err := Credential(authorization)
	if err != nil {
		return Grant{}, err
	}
	now := v.now()
	st := v.state.Load()
	allowed := func(g Grant) error {
		if r := g.Key.Allows(client, now); fromClient && r != nil {
			return r
		}
		return nil
	}
	cache := v.cacheSize >= 0
	var sum [sha256.Size]byte
	if cache {
		sum = sha256.Sum256([]byte(token))
		st.mu.RLock()
		g, ok := st.seen[sum]
		st.mu.RUnlock()
		if ok {
			if now.Truncate(time.Second).Before(g.Expiry.Add(v.policy.Leeway)) && !g.Key.expired(now) {
				if err := allowed(g); err != nil {
					return Grant{}, err
				}
				g.Cached = true
				return g, nil
			}
			st.mu.Lock()
			delete(st.seen, sum)
			st.mu.Unlock()
		}
		if r := st.refused.lookup(sum, now); r != nil {
			return Grant{}, r
		}
	}
	c, err := precheck(token, st.keys, v.policy, now)
	if err != nil {
		return Grant{}, err
	}
	if err := allowed(c.grant); err != nil {
		return Grant{}, err
	}
	budget := "" // no failure budget
	if fromClient {
		budget = client.String() // "invalid IP" for every unknown client
	}
	if err := v.flood.checkSignature(ctx, c, budget, now); err != nil {
		var r *Refusal
		if cache && errors.As(err, &r) && r.Reason == ReasonSignature {
			st.refused.add(sum, r, now)
		}
		return Grant{}, err
	}
	if cache {
		st.remember(sum, c.grant, v.cacheSize, now)
	}
	return c.grant, nil
}

// remember adds a verified token, making room when the cache is full: first
// by dropping expired tokens, then, if all are live, an arbitrary one.
func (st *verifierState) remember(sum [sha256.Size]byte, g Grant, size int, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.seen) >= size {
		for k, old := range st.seen {
			if !now.Before(old.Expiry) {
				delete(st.seen, k)
			}
		}
		for k := range st.seen {
			if len(st.seen) < size {
				break
			}
			delete(st.seen, k)
		}
	}
	st.seen[sum] = g
}
