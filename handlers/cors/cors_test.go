package cors

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestCORSParseOrigin(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want origin
		err  string
	}{
		{"https://a.org", origin{"https", "a.org", ""}, ""},
		{"HTTPS://A.Org:443", origin{"https", "a.org", ""}, ""},
		{"http://a.org:80", origin{"http", "a.org", ""}, ""},
		{"http://a.org:443", origin{"http", "a.org", "443"}, ""},
		{"https://a.org:8443", origin{"https", "a.org", "8443"}, ""},
		{"https://10.0.0.1:8443", origin{"https", "10.0.0.1", "8443"}, ""},
		{"https://[0:0::1]:8443", origin{"https", "[::1]", "8443"}, ""},
		{"https://[::1]", origin{"https", "[::1]", ""}, ""},
		{"https://my_host.a.org", origin{"https", "my_host.a.org", ""}, ""},
		{"a.org", origin{}, "not of the form scheme://host[:port]"},
		{"ftp://a.org", origin{}, `scheme "ftp" is not http or https`},
		{"https://a.org/", origin{}, "an origin has no path, not even /"},
		{"https://a.org/x", origin{}, "an origin has no path, not even /"},
		{`https://a.org\x`, origin{}, "an origin has no path, not even /"},
		{"https://a.org?x", origin{}, "an origin has no query"},
		{"https://a.org#x", origin{}, "an origin has no fragment"},
		{"https://u@a.org", origin{}, "an origin has no user info"},
		{"https://", origin{}, `host "" is not a host name or IP address`},
		{"https://a..org", origin{}, `host "a..org" is not a host name or IP address`},
		{"https://a.org.", origin{}, `host "a.org." is not a host name or IP address`},
		{"https://a.org:", origin{}, `port "" is not a number from 1 to 65535 without leading zeros`},
		{"https://a.org:0443", origin{}, `port "0443" is not a number from 1 to 65535 without leading zeros`},
		{"https://a.org:65536", origin{}, `port "65536" is not a number from 1 to 65535 without leading zeros`},
		{"https://a.org:1:2", origin{}, `port "1:2" is not a number from 1 to 65535 without leading zeros`},
		{"https://[::1", origin{}, "unclosed [ in host"},
		{"https://[1.2.3.4]", origin{}, `host "[1.2.3.4]" is not an IPv6 address`},
		{"https://[fe80::1%eth0]", origin{}, `host "[fe80::1%eth0]" is not an IPv6 address`},
		{"https://[::1]x", origin{}, `"[::1]x" is not host[:port]`},
		{"https://ex ample.org", origin{}, `host "ex ample.org" is not a host name or IP address`},
		{"https://bücher.example", origin{}, `host "bücher.example" is not a host name or IP address`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseOrigin(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCORSAllowsOrigin(t *testing.T) {
	list := Config{Origins: []string{"https://app.example.org", "http://localhost:3000", "https://*.example.com", "https://*.b.example.net:8443", "https://[::1]"}}
	anyOrigin := Config{Origins: []string{"*"}, AllowAnyOrigin: true}
	withNull := Config{Origins: []string{"https://a.org", "null"}}
	for _, tc := range []struct {
		name   string
		config Config
		origin string
		want   bool
	}{
		{"exact", list, "https://app.example.org", true},
		{"letter case", list, "HTTPS://App.Example.ORG", true},
		{"default port written", list, "https://app.example.org:443", true},
		{"other port", list, "https://app.example.org:8443", false},
		{"other scheme", list, "http://app.example.org", false},
		{"port kept", list, "http://localhost:3000", true},
		{"port missing", list, "http://localhost", false},
		{"trailing slash", list, "https://app.example.org/", false},
		{"path", list, "https://app.example.org/x", false},
		{"sub-subdomain", list, "https://x.app.example.org", false},
		{"wildcard one label", list, "https://a.example.com", true},
		{"wildcard two labels", list, "https://a.b.example.com", true},
		{"wildcard upper case", list, "https://A.EXAMPLE.COM", true},
		{"wildcard apex", list, "https://example.com", false},
		{"wildcard empty label", list, "https://.example.com", false},
		{"wildcard lookalike", list, "https://evil-example.com", false},
		{"wildcard lookalike subdomain", list, "https://a.evil-example.com", false},
		{"wildcard as prefix", list, "https://example.com.evil.org", false},
		{"wildcard other scheme", list, "http://a.example.com", false},
		{"wildcard other port", list, "https://a.example.com:8443", false},
		{"wildcard with port", list, "https://x.b.example.net:8443", true},
		{"wildcard with port missing", list, "https://x.b.example.net", false},
		{"IPv6 normalised", list, "https://[0:0:0::1]:443", true},
		{"null not listed", list, "null", false},
		{"empty", list, "", false},
		{"garbage", list, "javascript:alert(1)", false},
		{"any", anyOrigin, "https://anything.example", true},
		{"any needs an origin", anyOrigin, "anything.example", false},
		{"any is not null", anyOrigin, "null", false},
		{"null listed", withNull, "null", true},
		{"null is exact", withNull, "NULL", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.AllowsOrigin(tc.origin); got != tc.want {
				t.Fatalf("AllowsOrigin(%q) = %v", tc.origin, got)
			}
		})
	}
}

func TestCORSNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config Config
		err    string
	}{
		{"no origins", Config{}, "origins is required"},
		{"star alone", Config{Origins: []string{"*"}}, `origin "*" needs allow_any_origin`},
		{"star with credentials", Config{Origins: []string{"*"}, AllowAnyOrigin: true, Credentials: true}, `credentials cannot be used with origin "*"`},
		{"allow_any without star", Config{Origins: []string{"https://a.org"}, AllowAnyOrigin: true}, `allow_any_origin is set but origins has no "*"`},
		{"path", Config{Origins: []string{"https://a.org/"}}, `origin "https://a.org/": an origin has no path, not even /`},
		{"user info", Config{Origins: []string{"https://me@a.org"}}, `origin "https://me@a.org": an origin has no user info`},
		{"scheme", Config{Origins: []string{"ws://a.org"}}, `origin "ws://a.org": scheme "ws" is not http or https`},
		{"no scheme", Config{Origins: []string{"a.org"}}, `origin "a.org": not of the form scheme://host[:port]`},
		{"wildcard on a TLD", Config{Origins: []string{"https://*.org"}}, `origin "https://*.org": a wildcard must stand below a domain of two or more labels, as in https://*.example.com`},
		{"wildcard on an IP", Config{Origins: []string{"https://*.10.0.0.1"}}, `origin "https://*.10.0.0.1": a wildcard cannot stand below an IP address`},
		{"wildcard inside a label", Config{Origins: []string{"https://a*.example.com"}}, `origin "https://a*.example.com": host "a*.example.com" is not a host name or IP address`},
		{"wildcard alone", Config{Origins: []string{"https://*"}}, `origin "https://*": host "*" is not a host name or IP address`},
		{"method star", Config{Origins: []string{"https://a.org"}, Methods: []string{"*"}}, `method "*": list the methods instead`},
		{"method", Config{Origins: []string{"https://a.org"}, Methods: []string{"GE T"}}, `method "GE T" is not a method name`},
		{"header", Config{Origins: []string{"https://a.org"}, Headers: []string{"X:Y"}}, `header "X:Y" is not a header name`},
		{"header star", Config{Origins: []string{"https://a.org"}, Headers: []string{"*"}}, `header "*": list the headers instead`},
		{"expose", Config{Origins: []string{"https://a.org"}, Expose: []string{"a b"}}, `expose: header "a b" is not a header name`},
		{"max age", Config{Origins: []string{"https://a.org"}, MaxAge: time.Millisecond}, "max_age 1ms is not at least 1s"},
		{"max age negative", Config{Origins: []string{"https://a.org"}, MaxAge: -time.Second}, "max_age -1s is not at least 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.config)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestCORSWarnings(t *testing.T) {
	p, err := New(Config{Origins: []string{"*", "null"}, AllowAnyOrigin: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings()) != 2 {
		t.Fatalf("warnings %q", p.Warnings())
	}
	p, _ = New(Config{Origins: []string{"https://a.org"}})
	if len(p.Warnings()) != 0 {
		t.Fatalf("warnings %q", p.Warnings())
	}
}

func TestCORSIsPreflight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		want   bool
	}{
		{"preflight", http.MethodOptions, http.Header{"Origin": {"https://a.org"}, "Access-Control-Request-Method": {"PUT"}}, true},
		{"no request method", http.MethodOptions, http.Header{"Origin": {"https://a.org"}}, false},
		{"empty request method", http.MethodOptions, http.Header{"Origin": {"https://a.org"}, "Access-Control-Request-Method": {""}}, false},
		{"no origin", http.MethodOptions, http.Header{"Access-Control-Request-Method": {"PUT"}}, false},
		{"not OPTIONS", http.MethodPost, http.Header{"Origin": {"https://a.org"}, "Access-Control-Request-Method": {"PUT"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest(tc.method, "https://gw/public", nil)
			r.Header = tc.header
			if got := IsPreflight(r); got != tc.want {
				t.Fatalf("IsPreflight = %v", got)
			}
		})
	}
}

func TestCORSCheckPreflight(t *testing.T) {
	p, err := New(Config{Origins: []string{"https://a.org"}, Methods: []string{"get", "PUT"}, Headers: []string{"Authorization", "Content-Type", "X-Request-ID"}})
	if err != nil {
		t.Fatal(err)
	}
	pre := func(kv ...string) http.Header {
		h := http.Header{"Origin": {"https://a.org"}}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		header http.Header
		err    string
	}{
		{"method only", pre("Access-Control-Request-Method", "PUT"), ""},
		{"configured lower case", pre("Access-Control-Request-Method", "GET"), ""},
		{"headers as browsers send them", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "authorization,content-type,x-request-id"), ""},
		{"headers with spaces and case", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", " Authorization ,\tX-REQUEST-ID, ,"), ""},
		{"headers over two lines", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "authorization", "Access-Control-Request-Headers", "content-type"), ""},
		{"empty headers", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", ""), ""},
		{"method case-sensitive", pre("Access-Control-Request-Method", "put"), `method "put" is not allowed`},
		{"method not listed", pre("Access-Control-Request-Method", "DELETE"), `method "DELETE" is not allowed`},
		{"simple method not implied", pre("Access-Control-Request-Method", "POST"), `method "POST" is not allowed`},
		{"two methods", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Method", "PUT"), `method "PUT, PUT" is not allowed`},
		{"header not listed", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "authorization, x-evil"), `header "x-evil" is not allowed`},
		{"header on second line", pre("Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "authorization", "Access-Control-Request-Headers", "cookie"), `header "cookie" is not allowed`},
		{"origin not listed", http.Header{"Origin": {"https://b.org"}, "Access-Control-Request-Method": {"PUT"}}, `origin "https://b.org" is not allowed`},
		{"two origins", http.Header{"Origin": {"https://a.org", "https://a.org"}, "Access-Control-Request-Method": {"PUT"}}, "not exactly one Origin header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.CheckPreflight(tc.header)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestCORSSetHeaders(t *testing.T) {
	upstream := func() http.Header {
		return http.Header{
			"Access-Control-Allow-Origin":      {"*"},
			"Access-Control-Allow-Credentials": {"true"},
			"access-control-expose-headers":    {"X-Secret"},
			"Content-Type":                     {"application/json"},
		}
	}
	cred, _ := New(Config{Origins: []string{"https://a.org"}, Credentials: true, Expose: []string{"X-Request-ID", "Link"}})
	plain, _ := New(Config{Origins: []string{"https://a.org"}})
	anyOrigin, _ := New(Config{Origins: []string{"*"}, AllowAnyOrigin: true, Expose: []string{"Link"}})
	for _, tc := range []struct {
		name    string
		p       *Policy
		allowed bool
		want    http.Header
	}{
		{"credentials and expose", cred, true, http.Header{
			"Access-Control-Allow-Origin":      {"https://a.org"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Expose-Headers":    {"X-Request-ID, Link"},
			"Content-Type":                     {"application/json"},
		}},
		{"plain", plain, true, http.Header{"Access-Control-Allow-Origin": {"https://a.org"}, "Content-Type": {"application/json"}}},
		{"any", anyOrigin, true, http.Header{"Access-Control-Allow-Origin": {"*"}, "Access-Control-Expose-Headers": {"Link"}, "Content-Type": {"application/json"}}},
		{"not allowed: the upstream's removed too", cred, false, http.Header{"Content-Type": {"application/json"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := upstream()
			tc.p.SetHeaders(h, "https://a.org", tc.allowed)
			if !reflect.DeepEqual(h, tc.want) {
				t.Fatalf("headers %v, want %v", h, tc.want)
			}
		})
	}
}

func TestCORSSetPreflightHeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config Config
		want   http.Header
	}{
		{"defaults", Config{Origins: []string{"https://a.org"}}, http.Header{
			"Access-Control-Allow-Origin":  {"https://a.org"},
			"Access-Control-Allow-Methods": {"GET, POST, PUT, PATCH, DELETE"},
			"Access-Control-Allow-Headers": {"Authorization, Content-Type"},
			"Access-Control-Max-Age":       {"3600"},
		}},
		{"configured", Config{Origins: []string{"https://a.org"}, Methods: []string{"get", "GET", "PUT"}, Headers: []string{"X-Request-ID"}, Credentials: true, MaxAge: 90*time.Second + 900*time.Millisecond}, http.Header{
			"Access-Control-Allow-Origin":      {"https://a.org"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Allow-Methods":     {"GET, PUT"},
			"Access-Control-Allow-Headers":     {"X-Request-ID"},
			"Access-Control-Max-Age":           {"90"},
		}},
		{"any", Config{Origins: []string{"*"}, AllowAnyOrigin: true, MaxAge: 24 * time.Hour}, http.Header{
			"Access-Control-Allow-Origin":  {"*"},
			"Access-Control-Allow-Methods": {"GET, POST, PUT, PATCH, DELETE"},
			"Access-Control-Allow-Headers": {"Authorization, Content-Type"},
			"Access-Control-Max-Age":       {"86400"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			p.SetPreflightHeaders(h, "https://a.org")
			if !reflect.DeepEqual(h, tc.want) {
				t.Fatalf("headers %v, want %v", h, tc.want)
			}
		})
	}
}
