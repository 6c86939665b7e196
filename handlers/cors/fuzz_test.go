package cors

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzOrigin: parsing and matching never panic, and an origin the policy
// allows is one its origins entry allows by an independent reading (net/url):
// same scheme and host up to letter case, same port once default ports are
// filled in, the host strictly below the domain for a wildcard, and nothing
// but scheme, host and port.
func FuzzOrigin(f *testing.F) {
	for _, seed := range [][2]string{
		{"https://a.org", "https://a.org"},
		{"https://a.org", "HTTPS://A.ORG:443"},
		{"https://a.org:8443", "https://a.org:8443/"},
		{"https://*.example.com", "https://x.y.example.com"},
		{"https://*.example.com", "https://example.com"},
		{"https://*.example.com", "https://evil-example.com"},
		{"https://*.example.com", "https://example.com.evil.org"},
		{"http://[::1]:80", "http://[0::1]"},
		{"null", "null"},
		{"*", "https://a.org"},
		{"*", "null"},
		{"https://a.org", "https://u@a.org"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, entry, requested string) {
		_ = ValidOrigin(entry)
		_, _ = parseOrigin(requested)
		p, err := New(Config{Origins: []string{entry}, AllowAnyOrigin: entry == "*"})
		if err != nil {
			return
		}
		if !p.AllowsOrigin(requested) {
			return
		}
		if entry == "null" || requested == "null" {
			if entry != requested {
				t.Fatalf("%q allowed by %q", requested, entry)
			}
			return
		}
		got := readOrigin(t, requested)
		if entry == "*" {
			return
		}
		wildcard := strings.Contains(entry, "://*.")
		want := readOrigin(t, strings.Replace(entry, "://*.", "://", 1))
		if got.scheme != want.scheme || got.port != want.port {
			t.Fatalf("%q allowed by %q: scheme or port differ", requested, entry)
		}
		if wildcard {
			if !strings.HasSuffix(got.host, "."+want.host) || strings.HasPrefix(got.host, ".") {
				t.Fatalf("%q allowed by %q: not below the domain", requested, entry)
			}
			return
		}
		if got.host != want.host {
			t.Fatalf("%q allowed by %q: hosts differ", requested, entry)
		}
	})
}

// readOrigin reads an allowed origin with net/url; it must be nothing but
// http(s)://host[:port].
func readOrigin(t *testing.T, s string) origin {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "#?") || u.Host == "" {
		t.Fatalf("allowed %q is not a bare origin (%v)", s, err)
	}
	o := origin{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: u.Port()}
	if o.scheme != "http" && o.scheme != "https" {
		t.Fatalf("allowed %q has scheme %q", s, o.scheme)
	}
	if o.port == "" || o.scheme == "http" && o.port == "80" || o.scheme == "https" && o.port == "443" {
		o.port = ""
	}
	if addr, err := netip.ParseAddr(o.host); err == nil {
		o.host = addr.String()
	}
	return o
}
