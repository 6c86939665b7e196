package tokenv2

import (
	"crypto/sha256"
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
// replacing the key set forgets every remembered token. A Verifier is safe
// for concurrent use.
type Verifier struct {
	policy    Policy
	cacheSize int
	now       func() time.Time
	state     atomic.Pointer[verifierState]
}

// verifierState is a key set and the tokens verified with it; both are
// replaced together.
type verifierState struct {
	keys *KeySet
	mu   sync.RWMutex
	seen map[[sha256.Size]byte]Grant
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
	v.SetKeys(&KeySet{})
	return v
}

// SetKeys puts ks in force and forgets every verified token.
func (v *Verifier) SetKeys(ks *KeySet) {
	v.state.Store(&verifierState{keys: ks, seen: make(map[[sha256.Size]byte]Grant)})
}

// VerifyFrom decides a request by its Authorization header value and the
// client's address, as Verify does, and then applies the from= option of
// the key that signed the token to client, on every request, remembered
// tokens included. An invalid client address passes no from= option.
func (v *Verifier) VerifyFrom(authorization string, client netip.Addr) (Grant, error) {
	g, err := v.Verify(authorization)
	if err != nil {
		return g, err
	}
	if r := g.Key.Allows(client, v.now()); r != nil {
		return Grant{}, r
	}
	return g, nil
}

// Verify decides a request by its Authorization header value. It returns a
// *Refusal for every request that must not pass. It refuses a token of a
// key past its expiry-time=, but does not know the client's address: use
// VerifyFrom to apply from= options.
func (v *Verifier) Verify(authorization string) (Grant, error) {
	token, err := Credential(authorization)
	if err != nil {
		return Grant{}, err
	}
	now := v.now()
	st := v.state.Load()
	if v.cacheSize < 0 {
		return verifyToken(token, st.keys, v.policy, now)
	}
	sum := sha256.Sum256([]byte(token))
	st.mu.RLock()
	g, ok := st.seen[sum]
	st.mu.RUnlock()
	if ok {
		if now.Truncate(time.Second).Before(g.Expiry.Add(v.policy.Leeway)) && !g.Key.expired(now) {
			g.Cached = true
			return g, nil
		}
		st.mu.Lock()
		delete(st.seen, sum)
		st.mu.Unlock()
	}
	g, err = verifyToken(token, st.keys, v.policy, now)
	if err != nil {
		return Grant{}, err
	}
	st.remember(sum, g, v.cacheSize, now)
	return g, nil
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
