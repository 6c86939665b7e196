package e2e

import (
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// pathCase is one raw request target sent to the site gateway. "{id}" in target is replaced by
// a fresh UUID, so the node's record of the request can be found whatever became of the path;
// "{origin}" by https://localhost:<port>.
type pathCase struct {
	name   string
	target string
	as     credential
	want   int
	// forwarded: the node must receive exactly this request, its raw target intact. Otherwise
	// the node must receive nothing carrying the case's id.
	forwarded bool
	// goRejects: a 400 of Go's HTTP server itself, which refuses the request line before any
	// handler runs (so path_guard never sees it). Every other 400 must be path_guard's, which
	// counts it in nutsgate_path_refusals_total (and logs "path refused", sampled per reason).
	goRejects bool
}

// credential is what a path case's request carries.
type credential int

const (
	anonymous    credential = iota
	withToken               // a valid token_v2 bearer token
	withCert                // a valid client certificate
	withDenied              // the client certificate the /n2n route denies
	withTokenAnd            // a token and a client certificate
)

// pathCases: contract sections 1 and 3 (path_guard), through the running binary.
var pathCases = []pathCase{
	// Encoded slashes, backslashes and dots, every letter case: 400.
	{name: "encoded slash", target: "/internal%2fvdr/{id}", want: 400},
	{name: "encoded slash upper", target: "/internal%2Fvdr/{id}", want: 400},
	{name: "encoded slashes around dots", target: "/iam%2f..%2finternal/vdr/{id}", want: 400},
	{name: "encoded backslash", target: "/internal%5cvdr/{id}", want: 400},
	{name: "encoded backslash upper", target: "/internal%5Cvdr/{id}", want: 400},
	{name: "encoded dot-dot", target: "/iam/%2e%2e/internal/vdr/{id}", want: 400},
	{name: "encoded dot-dot upper", target: "/iam/%2E%2E/internal/vdr/{id}", want: 400},
	{name: "half-encoded dot-dot", target: "/iam/.%2e/internal/vdr/{id}", want: 400},
	{name: "encoded dot segment", target: "/internal/%2e/vdr/{id}", want: 400},
	{name: "encoded dot in a name", target: "/iam/a%2ejson/{id}", want: 400},
	// Dot and empty segments, backslashes, NUL: 400.
	{name: "dot-dot segment", target: "/iam/../internal/vdr/{id}", want: 400},
	{name: "dot-dot out of n2n", target: "/n2n/../iam/{id}", want: 400},
	{name: "dot-dot back into internal", target: "/internal/vdr/../../iam/{id}", want: 400},
	{name: "dot segment", target: "/iam/./x/{id}", want: 400},
	{name: "trailing dot-dot", target: "/iam/x/{id}/..", want: 400},
	{name: "trailing dot", target: "/iam/x/{id}/.", want: 400},
	{name: "leading double slash", target: "//internal/vdr/{id}", want: 400},
	{name: "double slash inside", target: "/iam//internal/vdr/{id}", want: 400},
	{name: "double slash in internal", target: "/internal//vdr/{id}", want: 400},
	{name: "backslashes", target: `/iam\..\internal\vdr/{id}`, want: 400},
	{name: "double backslash", target: `/iam\\internal/vdr/{id}`, want: 400},
	{name: "encoded NUL", target: "/iam/x%00/{id}", want: 400},
	{name: "encoded NUL in internal", target: "/internal/vdr%00/{id}", want: 400},
	{name: "raw NUL", target: "/iam/x\x00/{id}", want: 400, goRejects: true},
	// Encoded more than once, overlong UTF-8, malformed escapes: 400.
	{name: "double-encoded dot-dot", target: "/iam/%252e%252e/internal/vdr/{id}", want: 400},
	{name: "double-encoded slash", target: "/internal%252fvdr/{id}", want: 400},
	{name: "double-encoded dots digit by digit", target: "/iam/%25%32%65%25%32%65/internal/{id}", want: 400},
	{name: "overlong UTF-8 dots", target: "/iam/%c0%ae%c0%ae/internal/{id}", want: 400},
	{name: "malformed escape", target: "/iam/%zz/{id}", want: 400, goRejects: true},
	// Encoded unreserved characters (letters, digits, - . _ ~), any case, also encoded twice:
	// Caddy's matchers decode them, the node's router does not, so /%69nternal/x would be
	// authorized as /internal/x and reach the node as a path it reads differently. 400, with or
	// without credentials.
	{name: "internal encoded letter", target: "/%69nternal/vdr/{id}", want: 400},
	{name: "internal encoded letter upper", target: "/%49NTERNAL/vdr/{id}", want: 400},
	{name: "token, internal encoded letter", target: "/%69nternal/vdr/{id}", as: withToken, want: 400},
	{name: "token, encoded letter inside internal", target: "/internal/%76dr/{id}", as: withToken, want: 400},
	{name: "token, internal letter encoded twice", target: "/%2569nternal/vdr/{id}", as: withToken, want: 400},
	{name: "n2n encoded letter without certificate", target: "/%6e2n/x/{id}", want: 400},
	{name: "certificate, n2n encoded letter", target: "/%6E2n/x/{id}", as: withCert, want: 400},
	{name: "certificate, encoded letter in n2n", target: "/n2n/%61/{id}", as: withCert, want: 400},
	{name: "certificate, encoded digit in n2n", target: "/n%32n/x/{id}", as: withCert, want: 400},
	{name: "public API encoded letter", target: "/iam/%41/{id}", want: 400},
	{name: "encoded hyphen, underscore, tilde", target: "/iam/a%2Db%5fc%7E/{id}", want: 400},
	{name: "encoded well-known", target: "/.well-%6Bnown/{id}", want: 400},
	// Path parameters.
	{name: "dot-dot with parameter", target: "/iam/..;/internal/vdr/{id}", want: 400},
	{name: "dot-dot with parameter out of n2n", target: "/n2n/..;/internal/vdr/{id}", want: 400},
	{name: "dot-dot with named parameter", target: "/iam/..;x=1/internal/{id}", want: 400},
	{name: "parameter on internal", target: "/internal;x=1/vdr/{id}", want: 404},
	{name: "parameter on n2n", target: "/n2n;a/x/{id}", want: 404},
	// Mixed.
	{name: "public API then encoded escape", target: "/iam/..%2finternal/vdr/{id}", want: 400},
	{name: "cors route then encoded dots", target: "/public/%2e%2e/internal/vdr/{id}", want: 400},
	{name: "absolute form with dot-dot", target: "{origin}/iam/../internal/vdr/{id}", want: 400},
	// Protected routes, unauthenticated: letter case routes like the plain path (Caddy's matcher
	// ignores case), so they are refused.
	{name: "internal", target: "/internal/vdr/{id}", want: 401},
	{name: "internal upper case", target: "/INTERNAL/vdr/{id}", want: 401},
	{name: "internal mixed case", target: "/Internal/vdr/{id}", want: 401},
	{name: "internal, escapes in the query", target: "/internal/vdr/{id}?x=%2e%2e%2f", want: 401},
	{name: "internal absolute form", target: "{origin}/internal/vdr/{id}", want: 401},
	{name: "n2n without certificate", target: "/n2n/x/{id}", want: 401},
	{name: "n2n upper case without certificate", target: "/N2N/x/{id}", want: 401},
	{name: "n2n denied client", target: "/n2n/x/{id}", as: withDenied, want: 403},
	// Default deny.
	{name: "internal without trailing path", target: "/internal?probe={id}", want: 404},
	{name: "internal prefix of a longer name", target: "/internalx/{id}", want: 404},
	{name: "unrouted", target: "/other/{id}", want: 404},
	{name: "root", target: "/{id}", want: 404},
	// The guard comes before authentication: credentials do not let a bad path through.
	{name: "token, encoded slash", target: "/internal%2fvdr/{id}", as: withToken, want: 400},
	{name: "token, public API then encoded escape", target: "/iam/..%2finternal/vdr/{id}", as: withToken, want: 400},
	{name: "certificate, encoded dot-dot", target: "/n2n/%2e%2e/internal/vdr/{id}", as: withCert, want: 400},
	{name: "token and certificate, dot-dot", target: "/n2n/x/../../internal/vdr/{id}", as: withTokenAnd, want: 400},
	// Legitimate requests reach the node with the raw target intact.
	{name: "did:web with encoded port", target: "/iam/did:web:example.com%3A8443/{id}", want: 200, forwarded: true},
	{name: "did:web with encoded port, lower case", target: "/iam/did:web:example.com%3a8443/x/{id}", want: 200, forwarded: true},
	{name: "encoded space and at", target: "/iam/x%20y/user%40host/{id}", want: 200, forwarded: true},
	{name: "encoded reserved characters", target: "/iam/a%2Bb%3Dc%26d%3fe%23f%2C/{id}", want: 200, forwarded: true},
	{name: "encoded UTF-8", target: "/iam/caf%C3%A9/{id}", want: 200, forwarded: true},
	{name: "double-encoded colon", target: "/iam/did:web:example.com%253A8443/{id}", want: 200, forwarded: true},
	{name: "dot-prefixed names", target: "/.well-known/{id}/.x/...", want: 200, forwarded: true},
	{name: "escapes in the query only", target: "/iam/{id}?next=%2e%2e%2f&p=%5c", want: 200, forwarded: true},
	{name: "trailing slash", target: "/iam/{id}/", want: 200, forwarded: true},
	{name: "status", target: "/status?probe={id}", want: 200, forwarded: true},
	{name: "internal with token", target: "/internal/vdr/v2/{id}", as: withToken, want: 200, forwarded: true},
	{name: "n2n with certificate", target: "/n2n/x/{id}", as: withCert, want: 200, forwarded: true},
}

// TestPathHygiene proves, through the running binary on a site shaped like Caddyfile.example,
// that request targets read differently by Caddy's routing and by the node are refused (400)
// before any handler, that unauthenticated requests to /internal and /n2n are refused in any
// letter case or encoding of the route's name (401, 403) and unrouted ones get 404, and that
// none of them reaches the node: neither the request itself (by its id) nor anything under
// /internal or /n2n at all, however the node would decode it, apart from the two authenticated
// controls. Legitimate encodings (did:web's %3A and others) reach the node with the raw target
// unchanged. Targets are written raw over TLS, as Go's HTTP client would clean them.
func TestPathHygiene(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, relaxedSiteRate)
	origin := "https://localhost:" + strconv.Itoa(g.Port)

	var (
		mu       sync.Mutex
		controls = map[string]bool{} // ids of requests allowed under /internal or /n2n
	)
	t.Run("cases", func(t *testing.T) {
		for _, tc := range pathCases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				id := uuid.NewString()
				target := strings.NewReplacer("{id}", id, "{origin}", origin).Replace(tc.target)
				var (
					cert    *leafCert
					headers []string
				)
				switch tc.as {
				case withToken:
					headers = append(headers, "Authorization: "+g.bearer(t))
				case withCert:
					cert = g.pki.client(t, "path-"+id)
				case withDenied:
					cert = g.pki.issue(t, clientTemplate(testName(siteDeniedCN)))
				case withTokenAnd:
					headers = append(headers, "Authorization: "+g.bearer(t))
					cert = g.pki.client(t, "path-"+id)
				}
				if tc.forwarded && tc.as != anonymous {
					mu.Lock()
					controls[id] = true
					mu.Unlock()
				}

				r := g.raw(t, cert, target, headers...)
				if r.err != nil || r.status != tc.want {
					t.Errorf("GET %q: got %s, want %d", target, r, tc.want)
				}
				seen := g.nodeRequestsWith(id)
				if !tc.forwarded {
					if len(seen) != 0 {
						t.Errorf("GET %q: the node received %d request(s) for it, want none: first %q", target, len(seen), seen[0].RequestURI)
					}
					return
				}
				if len(seen) != 1 || seen[0].RequestURI != target {
					var got []string
					for _, s := range seen {
						got = append(got, s.RequestURI)
					}
					t.Errorf("GET %q: the node received %q, want exactly the raw target", target, got)
				}
			})
		}
	})

	// Every 400 but Go's own was path_guard's, counted exactly.
	want := 0
	for _, tc := range pathCases {
		if tc.want == http.StatusBadRequest && !tc.goRejects {
			want++
		}
	}
	got := 0.0
	for s, v := range g.scrapeMetrics(t, metricPath) {
		if strings.HasPrefix(s, metricPath+"{") {
			got += v
		}
	}
	if got != float64(want) {
		t.Errorf("%s counts %v refusals in all, want %d: the cases' 400s other than Go's own", metricPath, got, want)
	}

	// Nothing but the controls ever reached /internal or /n2n of the node, in any spelling.
	for _, r := range g.node.Requests() {
		if !underProtected(r.RequestURI) && !underProtected(r.Path) {
			continue
		}
		mu.Lock()
		ok := false
		for id := range controls {
			ok = ok || strings.Contains(r.RequestURI, id)
		}
		mu.Unlock()
		if !ok {
			t.Errorf("the node received %s %q (path %q), under /internal or /n2n without being an authenticated control", r.Method, r.RequestURI, r.Path)
		}
	}
}

// underProtected reports whether target, decoded as often as it decodes, with backslashes read
// as slashes, cleaned and in lower case, lies under /internal or /n2n.
func underProtected(target string) bool {
	p, _, _ := strings.Cut(target, "?")
	for range 5 {
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			break
		}
		p = d
	}
	p = strings.ToLower(path.Clean("/" + strings.ReplaceAll(p, `\`, "/")))
	for _, prefix := range []string{"/internal", "/n2n"} {
		if p == prefix || strings.HasPrefix(p, prefix+"/") || strings.HasPrefix(p, prefix+";") {
			return true
		}
	}
	return false
}
