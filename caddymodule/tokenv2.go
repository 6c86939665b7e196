package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/handlers/tokenv2"
	"github.com/nutsgate/nutsgate/internal/filewatch"
	"github.com/nutsgate/nutsgate/ratelimit"
)

func init() {
	caddy.RegisterModule(TokenV2{})
	httpcaddyfile.RegisterHandlerDirective("token_v2", parseTokenV2)
}

// TokenV2 authenticates requests with the Nuts node's token_v2 rules: an
// `Authorization: Bearer <jwt>` header carrying a JWT signed by one of the
// keys of an SSH authorized_keys file, whose `iss` is the user name that the
// file gives for that key. docs/token_v2.md lists every rule, numbered.
//
// It is a provider of Caddy's `authentication` handler. The Caddyfile
// directive `token_v2` also answers every refusal with status 401, body
// `Unauthorized` and `WWW-Authenticate: Bearer`; the reason of a refusal goes
// to the log (at most 10 lines a second per reason) and the metrics only.
//
// The authorized_keys file is watched: when its content changes the new key
// set is in force within a second, without a config reload. A version that
// does not parse is logged with its file and line, and the last good key set
// stays in force. A token that verified once is not verified again until it
// expires; a change of the key set forgets every verified token.
//
// The `from="..."` and `expiry-time="..."` options of a key's line are
// enforced as sshd(8) enforces them, on every request, against the client IP
// address Caddy determined (honouring `trusted_proxies`); a refusal for them
// is logged and counted with reason `key_from` or `key_expired`. Set
// `key_options ignore` for the node's behaviour, which ignores them.
//
// A flood of forged tokens costs little: the cheap checks (form, `kid`,
// claims) come before the signature, a token whose signature failed is
// refused from memory when sent again, and each client IP (as Caddy
// determines it, honouring `trusted_proxies`) may have at most `failures`
// signature checks fail; over that budget its requests are answered 429 with
// `Retry-After`, without a signature check, except those with a token
// verified before. At most one signature check per CPU but one runs at once,
// and a token verified before never waits for one.
//
// Placeholders set on success, by the authentication handler:
//
// Placeholder | Description
// ------------|-------------
// `{http.auth.user.id}` | the user name of the key that signed the token
// `{http.auth.user.sub}` | the token's `sub` claim
// `{http.auth.user.jti}` | the token's `jti` claim
type TokenV2 struct {
	// The SSH authorized_keys file holding the keys that may sign tokens,
	// each with its user name as comment. Required. Placeholders such as
	// {env.*} are expanded once, at provision time.
	AuthorizedKeys string `json:"authorized_keys,omitempty"`

	// The audience a token's `aud` claim must hold. Default: the host name
	// of this machine, as the node does.
	Audience string `json:"audience,omitempty"`

	// Clock skew allowed when checking `exp`, `nbf` and `iat`. Default: 0.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// What to do with the `from="..."` and `expiry-time="..."` options of
	// authorized_keys lines: `enforce` (the default) refuses a token whose
	// key's from= patterns do not match the client IP address (as Caddy
	// determines it, honouring trusted_proxies) or whose key is past its
	// expiry-time, on every request, remembered tokens included; an option
	// that cannot be read makes its line invalid. `ignore` accepts and
	// ignores every option, as the node does. Other options are always
	// ignored.
	KeyOptions string `json:"key_options,omitempty"`

	// Failed signature checks allowed per client IP, as `<n>/<duration>`
	// (a token bucket of n, refilled at n per duration). Over it: 429 with
	// `Retry-After`, and no signature is checked. Default: 100/1m.
	Failures string `json:"failures,omitempty"`

	verifier *tokenv2.Verifier
	poolKey  string
	logger   *zap.Logger
}

// keySets shares one verifier and file watcher among every token_v2
// instance with the same file and policy, across config reloads, so that a
// reload neither re-reads the file nor forgets verified tokens.
var keySets = caddy.NewUsagePool()

// sharedKeys is a keySets entry.
type sharedKeys struct {
	verifier *tokenv2.Verifier
	stop     context.CancelFunc
}

// Destruct stops watching the file.
func (s *sharedKeys) Destruct() error {
	s.stop()
	return nil
}

// refusedVar marks a request that token_v2 refused, so that the error route
// of the directive answers it and nothing else: "1" with 401, "429" with 429
// (over the failure budget).
const refusedVar = "nutsgate_token_v2_refused"

// CaddyModule returns the Caddy module information.
func (TokenV2) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.authentication.providers.token_v2",
		New: func() caddy.Module { return new(TokenV2) },
	}
}

// Provision loads the key file and starts watching it.
func (t *TokenV2) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	if err := registerMetrics(ctx); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	t.AuthorizedKeys = repl.ReplaceAll(t.AuthorizedKeys, "")
	t.Audience = repl.ReplaceAll(t.Audience, "")
	if t.AuthorizedKeys == "" {
		return errors.New("authorized_keys is required")
	}
	path, err := filepath.Abs(t.AuthorizedKeys)
	if err != nil {
		return fmt.Errorf("authorized_keys: %v", err)
	}
	if t.Audience == "" {
		if t.Audience, err = os.Hostname(); err != nil {
			return fmt.Errorf("finding the host name for the default audience: %v", err)
		}
	}
	if t.Leeway < 0 {
		return errors.New("leeway must not be negative")
	}
	switch t.KeyOptions {
	case "", "enforce", "ignore":
	default:
		return fmt.Errorf("key_options %q: must be enforce or ignore", t.KeyOptions)
	}
	failures, failuresPer := tokenv2.DefaultFailures, tokenv2.DefaultFailuresPer
	if t.Failures != "" {
		if failures, failuresPer, err = ratelimit.ParseRate(t.Failures); err != nil {
			return fmt.Errorf("failures: %v", err)
		}
	}
	policy := tokenv2.Policy{Audience: t.Audience, Leeway: time.Duration(t.Leeway), IgnoreKeyOptions: t.KeyOptions == "ignore"}
	t.poolKey = fmt.Sprintf("%s\x00%s\x00%d\x00%t\x00%d/%d", path, policy.Audience, policy.Leeway, policy.IgnoreKeyOptions, failures, failuresPer)
	logger := t.logger
	val, _, err := keySets.LoadOrNew(t.poolKey, func() (caddy.Destructor, error) {
		v := tokenv2.NewVerifier(policy, 0, nil)
		if err := v.SetFailureBudget(failures, failuresPer, 0); err != nil {
			return nil, err
		}
		kf, err := tokenv2.LoadKeyFile(path, v, logger)
		if err != nil {
			return nil, err
		}
		watchCtx, stop := context.WithCancel(context.Background())
		go kf.Watch(watchCtx, filewatch.DefaultInterval)
		return &sharedKeys{verifier: v, stop: stop}, nil
	})
	if err != nil {
		return err
	}
	t.verifier = val.(*sharedKeys).verifier
	return nil
}

// Cleanup releases this instance's hold on the shared key set.
func (t *TokenV2) Cleanup() error {
	if t.poolKey != "" {
		_, err := keySets.Delete(t.poolKey)
		return err
	}
	return nil
}

// Authenticate decides the request. A refused request gets
// `WWW-Authenticate: Bearer` and is reported as not authenticated, never as
// an error.
func (t *TokenV2) Authenticate(w http.ResponseWriter, r *http.Request) (caddyauth.User, bool, error) {
	g, err := t.verifier.VerifyFrom(r.Context(), r.Header.Get("Authorization"), clientAddr(r))
	if err != nil {
		var refusal *tokenv2.Refusal
		if !errors.As(err, &refusal) {
			return caddyauth.User{}, false, err
		}
		if refusal.Reason == tokenv2.ReasonFailureBudget {
			w.Header().Set("Retry-After", strconv.Itoa(ratelimit.RetryAfterSeconds(refusal.RetryAfter)))
			caddyhttp.SetVar(r.Context(), refusedVar, "429")
		} else {
			w.Header().Set("WWW-Authenticate", "Bearer")
			caddyhttp.SetVar(r.Context(), refusedVar, "1")
		}
		reason := string(refusal.Reason)
		authDecisions.WithLabelValues("denied", reason).Inc()
		if c, sup := tokenRefusalLog.Check(t.logger, zapcore.InfoLevel, reason, "access denied"); c != nil {
			c.Write(zap.String("reason", reason), zap.String("detail", refusal.Detail), zap.String("remote_ip", clientIP(r)), sup)
		}
		return caddyauth.User{}, false, nil
	}
	authDecisions.WithLabelValues("granted", "").Inc()
	if c := t.logger.Check(zapcore.InfoLevel, "access granted"); c != nil {
		c.Write(zap.String("user", g.User), zap.String("sub", g.Subject), zap.String("jti", g.JTI), zap.Bool("cached", g.Cached))
	}
	return caddyauth.User{ID: g.User, Metadata: map[string]string{"sub": g.Subject, "jti": g.JTI}}, true, nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	token_v2 [<matcher>] {
//	    authorized_keys <file>
//	    audience        <aud>
//	    leeway          <duration>
//	    key_options     enforce|ignore
//	    failures        <n>/<duration>
//	}
func (t *TokenV2) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if err := checkOptionName(d, "", "authorized_keys", "audience", "leeway", "key_options", "failures"); err != nil {
			return err
		}
		var val string
		if !d.AllArgs(&val) {
			return d.ArgErr()
		}
		switch opt {
		case "authorized_keys":
			if t.AuthorizedKeys != "" {
				return d.Err("authorized_keys already specified")
			}
			t.AuthorizedKeys = val
		case "audience":
			if t.Audience != "" {
				return d.Err("audience already specified")
			}
			t.Audience = val
		case "leeway":
			if t.Leeway != 0 {
				return d.Err("leeway already specified")
			}
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("leeway %q: %v", val, err)
			}
			if dur < 0 {
				return d.Errf("leeway %q must not be negative", val)
			}
			t.Leeway = caddy.Duration(dur)
		case "key_options":
			if t.KeyOptions != "" {
				return d.Err("key_options already specified")
			}
			if val != "enforce" && val != "ignore" {
				return d.Errf("key_options %q: must be enforce or ignore", val)
			}
			t.KeyOptions = val
		case "failures":
			if t.Failures != "" {
				return d.Err("failures already specified")
			}
			if _, _, err := ratelimit.ParseRate(val); err != nil {
				return d.Errf("failures: %v", err)
			}
			t.Failures = val
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
	}
	if t.AuthorizedKeys == "" {
		return d.Err("authorized_keys is required")
	}
	return nil
}

// parseTokenV2 builds the handler of the token_v2 directive: Caddy's
// authentication handler with the token_v2 provider, in a subroute whose
// error route answers the provider's refusals with 401 `Unauthorized` (429
// `Too Many Requests` over the failure budget) and passes every other error
// on unchanged in status and message.
func parseTokenV2(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var t TokenV2
	if err := t.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	auth := caddyauth.Authentication{ProvidersRaw: caddy.ModuleMap{"token_v2": caddyconfig.JSON(t, nil)}}
	unauthorized := caddyhttp.StaticResponse{
		StatusCode: caddyhttp.WeakString(strconv.Itoa(http.StatusUnauthorized)),
		Headers:    http.Header{"Content-Type": []string{"text/plain; charset=utf-8"}},
		Body:       "Unauthorized",
	}
	tooMany := caddyhttp.StaticResponse{
		StatusCode: caddyhttp.WeakString(strconv.Itoa(http.StatusTooManyRequests)),
		Headers:    http.Header{"Content-Type": []string{"text/plain; charset=utf-8"}},
		Body:       "Too Many Requests",
	}
	passOn := caddyhttp.StaticError{StatusCode: "{http.error.status_code}", Error: "{http.error.message}"}
	return &caddyhttp.Subroute{
		Routes: caddyhttp.RouteList{{
			HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(auth, "handler", "authentication", nil)},
		}},
		Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{
			{
				MatcherSetsRaw: caddyhttp.RawMatcherSets{caddy.ModuleMap{"vars": caddyconfig.JSON(caddyhttp.VarsMatcher{refusedVar: {"1"}}, nil)}},
				HandlersRaw:    []json.RawMessage{caddyconfig.JSONModuleObject(unauthorized, "handler", "static_response", nil)},
			},
			{
				MatcherSetsRaw: caddyhttp.RawMatcherSets{caddy.ModuleMap{"vars": caddyconfig.JSON(caddyhttp.VarsMatcher{refusedVar: {"429"}}, nil)}},
				HandlersRaw:    []json.RawMessage{caddyconfig.JSONModuleObject(tooMany, "handler", "static_response", nil)},
			},
			{HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(passOn, "handler", "error", nil)}},
		}},
	}, nil
}

// Interface guards
var (
	_ caddy.Provisioner       = (*TokenV2)(nil)
	_ caddy.CleanerUpper      = (*TokenV2)(nil)
	_ caddyauth.Authenticator = (*TokenV2)(nil)
	_ caddyfile.Unmarshaler   = (*TokenV2)(nil)
)
