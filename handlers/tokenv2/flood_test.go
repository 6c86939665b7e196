package tokenv2

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// forged is a token with k's kid and the given claims, and a signature of
// the right length that k never made.
func forged(t *testing.T, k *testKey, claims map[string]any) string {
	t.Helper()
	tok := token(t, k, validHeader(t, k), claims)
	parts := strings.Split(tok, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	for i := range sig {
		sig[i] ^= 0x5a
	}
	return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// freshClaims are valid claims with a new jti, so each token is new.
func freshClaims(k *testKey) map[string]any {
	c := validClaims(k)
	c["jti"] = uuid.NewString()
	return c
}

// A forged token whose claims break a rule is refused for that rule, and no
// signature is checked.
func TestCheapChecksBeforeSignature(t *testing.T) {
	k := testKeys(t)["p521"]
	cases := map[string]struct {
		edit func(map[string]any)
		want Reason
	}{
		"expired":  {set("exp", testNow.Add(-time.Minute).Unix()), ReasonExpired},
		"nbf":      {set("nbf", testNow.Add(time.Minute).Unix()), ReasonNotYetValid},
		"audience": {set("aud", "elsewhere"), ReasonAudience},
		"issuer":   {set("iss", "someone-else"), ReasonIssuer},
		"lifetime": {set("exp", testNow.Add(25*time.Hour).Unix()), ReasonLifetime},
		"no jti":   {del("jti"), ReasonClaims},
		"bad jti":  {set("jti", "x"), ReasonClaims},
		"no sub":   {set("sub", ""), ReasonClaims},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v := testVerifier(t, Policy{})
			c := validClaims(k)
			tc.edit(c)
			check(t, v, "Bearer "+forged(t, k, c), tc.want)
			if n := v.SignatureChecks(); n != 0 {
				t.Fatalf("%d signature checks, want 0: claims come first", n)
			}
		})
	}
}

// A forged token costs one signature check; sent again it is refused from
// memory, until the key set changes or the entry expires.
func TestForgedTokenRefusedFromMemory(t *testing.T) {
	now := testNow
	v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return now })
	ks := testKeySet(t)
	v.SetKeys(ks)
	k := testKeys(t)["p521"]
	tok := "Bearer " + forged(t, k, validClaims(k))
	for i := 0; i < 5; i++ {
		check(t, v, tok, ReasonSignature)
	}
	if n := v.SignatureChecks(); n != 1 {
		t.Fatalf("a forged token sent 5 times: %d signature checks, want 1", n)
	}
	v.SetKeys(ks)
	check(t, v, tok, ReasonSignature)
	if n := v.SignatureChecks(); n != 2 {
		t.Fatalf("after a key set change: %d signature checks, want 2", n)
	}
	now = now.Add(RefusedTTL)
	check(t, v, tok, ReasonSignature)
	if n := v.SignatureChecks(); n != 3 {
		t.Fatalf("after the entry expired: %d signature checks, want 3", n)
	}
	// the cache is bounded
	st := v.state.Load()
	for i := 0; i < DefaultRefusedCacheSize+10; i++ {
		st.refused.add([32]byte{byte(i), byte(i >> 8), byte(i >> 16)}, &Refusal{Reason: ReasonSignature}, now)
	}
	if n := len(st.refused.entries); n > DefaultRefusedCacheSize {
		t.Fatalf("refused cache holds %d tokens, bound is %d", n, DefaultRefusedCacheSize)
	}
}

// verifyFrom runs VerifyFrom for client (Verify, with no client, for "") and
// returns its refusal, nil for a grant.
func verifyFrom(t *testing.T, v *Verifier, ctx context.Context, tok, client string) *Refusal {
	t.Helper()
	var err error
	if client == "" {
		_, err = v.Verify("Bearer " + tok)
	} else {
		_, err = v.VerifyFrom(ctx, "Bearer "+tok, netip.MustParseAddr(client))
	}
	if err == nil {
		return nil
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("error %v, want a refusal", err)
	}
	return r
}

// Each client may have 100 signatures fail a minute; the 101st forged token
// is refused without a signature check, and a token verified before still
// passes.
func TestFailureBudget(t *testing.T) {
	now := testNow
	v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return now })
	v.SetKeys(testKeySet(t))
	if err := v.SetFailureBudget(DefaultFailures, DefaultFailuresPer, 0); err != nil {
		t.Fatal(err)
	}
	k := testKeys(t)["p521"]
	ctx := context.Background()
	const client = "192.0.2.1"
	valid := validToken(t, k)
	if r := verifyFrom(t, v, ctx, valid, client); r != nil {
		t.Fatalf("valid token refused: %v", r)
	}
	first := forged(t, k, freshClaims(k))
	for i := 0; i < DefaultFailures; i++ {
		tok := first
		if i > 0 {
			tok = forged(t, k, freshClaims(k))
		}
		if r := verifyFrom(t, v, ctx, tok, client); r == nil || r.Reason != ReasonSignature {
			t.Fatalf("forgery %d: %v, want %s", i+1, r, ReasonSignature)
		}
	}
	before := v.SignatureChecks()
	r := verifyFrom(t, v, ctx, forged(t, k, freshClaims(k)), client)
	if r == nil || r.Reason != ReasonFailureBudget || r.RetryAfter != 600*time.Millisecond {
		t.Fatalf("forgery 101: %+v, want %s with RetryAfter 600ms", r, ReasonFailureBudget)
	}
	// a new valid token is refused too: its signature is not checked
	if r := verifyFrom(t, v, ctx, token(t, k, validHeader(t, k), freshClaims(k)), client); r == nil || r.Reason != ReasonFailureBudget {
		t.Fatalf("new valid token over the budget: %+v, want %s", r, ReasonFailureBudget)
	}
	if n := v.SignatureChecks(); n != before {
		t.Fatalf("over the budget: %d signature checks made, want none", n-before)
	}
	// a token verified before passes, from the same client
	if r := verifyFrom(t, v, ctx, valid, client); r != nil {
		t.Fatalf("cached token over the budget: %v, want granted", r)
	}
	// a forgery refused before is refused from memory, for what it is
	if r := verifyFrom(t, v, ctx, first, client); r == nil || r.Reason != ReasonSignature {
		t.Fatalf("first forgery again: %+v, want %s from memory", r, ReasonSignature)
	}
	// other clients have their own budget; no client means no budget
	for _, c := range []string{"192.0.2.2", ""} {
		if r := verifyFrom(t, v, ctx, forged(t, k, freshClaims(k)), c); r == nil || r.Reason != ReasonSignature {
			t.Fatalf("client %q: %+v, want %s", c, r, ReasonSignature)
		}
	}
	// the budget refills: one check per 600ms
	now = now.Add(600 * time.Millisecond)
	if r := verifyFrom(t, v, ctx, forged(t, k, freshClaims(k)), client); r == nil || r.Reason != ReasonSignature {
		t.Fatalf("after 600ms: %+v, want %s", r, ReasonSignature)
	}
	if r := verifyFrom(t, v, ctx, forged(t, k, freshClaims(k)), client); r == nil || r.Reason != ReasonFailureBudget {
		t.Fatalf("second after 600ms: %+v, want %s", r, ReasonFailureBudget)
	}
}

// Signature checks wait while every slot is taken; a token verified before
// needs none and passes.
func TestCachedGrantWhileSignatureChecksBusy(t *testing.T) {
	v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return testNow })
	v.SetKeys(testKeySet(t))
	k := testKeys(t)["p521"]
	ctx := context.Background()
	valid := validToken(t, k)
	if r := verifyFrom(t, v, ctx, valid, "192.0.2.1"); r != nil {
		t.Fatal(r)
	}
	for i := 0; i < cap(v.flood.slots); i++ {
		v.flood.slots <- struct{}{}
	}
	if r := verifyFrom(t, v, ctx, valid, "192.0.2.1"); r != nil {
		t.Fatalf("cached token with every slot taken: %v, want granted", r)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := v.VerifyFrom(short, "Bearer "+token(t, k, validHeader(t, k), freshClaims(k)), netip.MustParseAddr("192.0.2.1"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("new token with every slot taken: %v, want a wait that ends with the request", err)
	}
	if n := v.SignatureChecks(); n != 1 {
		t.Fatalf("%d signature checks, want 1", n)
	}
	<-v.flood.slots
	if r := verifyFrom(t, v, ctx, token(t, k, validHeader(t, k), freshClaims(k)), "192.0.2.1"); r != nil {
		t.Fatalf("new token with a free slot: %v", r)
	}
}

// Forgeries of one client that wait for a slot together cost no more
// signature checks than its budget allows.
func TestFailureBudgetConcurrent(t *testing.T) {
	v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return testNow })
	v.SetKeys(testKeySet(t))
	if err := v.SetFailureBudget(2, time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	v.flood.slots = make(chan struct{}, 1)
	v.flood.slots <- struct{}{} // held, so every forgery below waits
	k := testKeys(t)["p521"]
	const n = 10
	toks := make([]string, n)
	for i := range toks {
		toks[i] = forged(t, k, freshClaims(k))
	}
	reasons := make(chan Reason, n)
	for _, tok := range toks {
		go func() {
			_, err := v.VerifyFrom(context.Background(), "Bearer "+tok, netip.MustParseAddr("192.0.2.1"))
			var r *Refusal
			if errors.As(err, &r) {
				reasons <- r.Reason
			} else {
				reasons <- Reason("unexpected: " + fmt.Sprint(err))
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them all reach the slot
	<-v.flood.slots
	got := map[Reason]int{}
	for i := 0; i < n; i++ {
		got[<-reasons]++
	}
	if v.SignatureChecks() != 2 || got[ReasonSignature] != 2 || got[ReasonFailureBudget] != n-2 {
		t.Fatalf("%d signature checks, refusals %v; want 2 checks, 2 %s and %d %s", v.SignatureChecks(), got, ReasonSignature, n-2, ReasonFailureBudget)
	}
}

// A failed signature check keeps its slot for failedCheckRest times as long
// again, without making its caller wait; a check that passes frees its slot
// at once.
func TestFailedCheckRests(t *testing.T) {
	k := testKeys(t)["p521"]
	v := testVerifier(t, Policy{})
	var rested []time.Duration
	var release []func()
	v.flood.rest = func(d time.Duration, r func()) { rested, release = append(rested, d), append(release, r) }
	check(t, v, "Bearer "+validToken(t, k), "")
	if n := len(v.flood.slots); n != 0 || len(rested) != 0 {
		t.Fatalf("after a check that passed: %d slots taken, %d rests; want none", n, len(rested))
	}
	check(t, v, "Bearer "+forged(t, k, freshClaims(k)), ReasonSignature)
	if n := len(v.flood.slots); n != 1 || len(rested) != 1 || rested[0] <= 0 {
		t.Fatalf("after a failed check: %d slots taken, rests %v; want its slot kept for a rest", n, rested)
	}
	release[0]()
	if n := len(v.flood.slots); n != 0 {
		t.Fatalf("after the rest: %d slots taken, want 0", n)
	}
}
