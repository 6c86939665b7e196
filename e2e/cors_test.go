package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// corsDefaultMethods and corsHeaders are what the site's cors block allows (contract section
// 3: the default methods; the headers it lists).
var (
	corsDefaultMethods = []string{"DELETE", "GET", "PATCH", "POST", "PUT"}
	corsHeaders        = []string{"authorization", "content-type"}
)

// headerList splits every value of a comma-separated header into its trimmed items.
func headerList(h http.Header, name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// sortedFold is items in lower case, sorted.
func sortedFold(items []string) []string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = strings.ToLower(s)
	}
	slices.Sort(out)
	return out
}

// TestCORS proves the cors handler through the running binary (not a browser): a preflight
// from an allowed origin (listed exactly or by subdomain pattern) is answered 204 by the gateway
// with Access-Control-Allow-Origin of that origin, the allowed methods and headers, max-age
// 3600 and Vary: Origin, and never reaches the node; a preflight from an origin not on the
// list, or asking for a method or header not allowed, gets 403 without CORS headers and never
// reaches the node; other requests are forwarded, with Access-Control-Allow-Origin only for an
// allowed origin and Vary: Origin always.
func TestCORS(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, relaxedSiteRate)

	preflight := func(origin, method, headers string) http.Header {
		h := http.Header{"Origin": {origin}, "Access-Control-Request-Method": {method}}
		if headers != "" {
			h["Access-Control-Request-Headers"] = []string{headers}
		}
		return h
	}
	cases := []struct {
		name      string
		method    string
		header    http.Header
		want      int
		forwarded bool
		acao      string // the Access-Control-Allow-Origin wanted; "" none
		preflight bool   // a granted preflight: methods, headers and max-age must be there too
	}{
		{"preflight, allowed origin", http.MethodOptions, preflight(allowedOrigin, "POST", "content-type, authorization"), 204, false, allowedOrigin, true},
		{"preflight, allowed origin, no request headers", http.MethodOptions, preflight(allowedOrigin, "DELETE", ""), 204, false, allowedOrigin, true},
		{"preflight, origin of the subdomain pattern", http.MethodOptions, preflight("https://tenant.example.com", "GET", "Authorization"), 204, false, "https://tenant.example.com", true},
		{"preflight, refused origin", http.MethodOptions, preflight("https://evil.example.org", "POST", "content-type"), 403, false, "", false},
		{"preflight, look-alike origin", http.MethodOptions, preflight("https://app.example.org.evil.net", "GET", ""), 403, false, "", false},
		{"preflight, allowed origin over http", http.MethodOptions, preflight("http://app.example.org", "GET", ""), 403, false, "", false},
		{"preflight, null origin", http.MethodOptions, preflight("null", "GET", ""), 403, false, "", false},
		{"preflight, method not allowed", http.MethodOptions, preflight(allowedOrigin, "PROPFIND", ""), 403, false, "", false},
		{"preflight, header not allowed", http.MethodOptions, preflight(allowedOrigin, "POST", "content-type, x-evil"), 403, false, "", false},
		{"GET, allowed origin", http.MethodGet, http.Header{"Origin": {allowedOrigin}}, 200, true, allowedOrigin, false},
		{"POST, origin of the subdomain pattern", http.MethodPost, http.Header{"Origin": {"https://tenant.example.com"}}, 200, true, "https://tenant.example.com", false},
		{"GET, refused origin", http.MethodGet, http.Header{"Origin": {"https://evil.example.org"}}, 200, true, "", false},
		{"GET, no origin", http.MethodGet, nil, 200, true, "", false},
		{"OPTIONS, allowed origin, not a preflight", http.MethodOptions, http.Header{"Origin": {allowedOrigin}}, 200, true, allowedOrigin, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := "/public/cors/" + uuid.NewString()
			r := g.request(t, nil, tc.method, path, tc.header)
			if r.err != nil {
				t.Fatalf("%s %s: %v", tc.method, path, r.err)
			}
			if r.status != tc.want {
				t.Errorf("%s %s: status %d, want %d", tc.method, path, r.status, tc.want)
			}

			seen := g.node.Requests()
			seen = slices.DeleteFunc(seen, func(n testnode.Request) bool { return n.Path != path })
			switch {
			case !tc.forwarded && len(seen) != 0:
				t.Errorf("the node received %d request(s) for %s (%s), want none", len(seen), path, seen[0].Method)
			case tc.forwarded && (len(seen) != 1 || seen[0].Method != tc.method):
				t.Errorf("the node received %d request(s) for %s, want exactly the %s", len(seen), path, tc.method)
			}

			if got := r.header.Values("Access-Control-Allow-Origin"); tc.acao == "" && len(got) != 0 || tc.acao != "" && !slices.Equal(got, []string{tc.acao}) {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tc.acao)
			}
			if !slices.ContainsFunc(headerList(r.header, "Vary"), func(v string) bool { return strings.EqualFold(v, "Origin") }) {
				t.Errorf("Vary %q, want Origin among them", r.header.Values("Vary"))
			}
			if got := r.header.Values("Access-Control-Allow-Credentials"); len(got) != 0 {
				t.Errorf("Access-Control-Allow-Credentials %q, want none (credentials not configured)", got)
			}
			if tc.acao == "" {
				for k := range r.header {
					if strings.HasPrefix(strings.ToLower(k), "access-control-") {
						t.Errorf("CORS header %s: %q on a response to an origin not allowed", k, r.header.Values(k))
					}
				}
			}
			if !tc.preflight {
				return
			}
			if got := sortedFold(headerList(r.header, "Access-Control-Allow-Methods")); !slices.Equal(got, sortedFold(corsDefaultMethods)) {
				t.Errorf("Access-Control-Allow-Methods %q, want the default methods %q", got, corsDefaultMethods)
			}
			if got := sortedFold(headerList(r.header, "Access-Control-Allow-Headers")); !slices.Equal(got, corsHeaders) {
				t.Errorf("Access-Control-Allow-Headers %q, want %q", got, corsHeaders)
			}
			if got := r.header.Values("Access-Control-Max-Age"); !slices.Equal(got, []string{"3600"}) {
				t.Errorf("Access-Control-Max-Age %q, want [3600] (the default, 1h)", got)
			}
		})
	}
}
