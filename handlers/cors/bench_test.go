package cors

import (
	"net/http"
	"testing"
)

func benchPolicy(b *testing.B) *Policy {
	b.Helper()
	p, err := New(Config{
		Origins:     []string{"https://app.example.org", "https://admin.example.org", "https://*.irma.example.com"},
		Credentials: true,
		Expose:      []string{"Link"},
	})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkAllowsOrigin is the origin check of every request with Origin.
func BenchmarkAllowsOrigin(b *testing.B) {
	p := benchPolicy(b)
	for _, tc := range []struct{ name, origin string }{
		{"exact", "https://admin.example.org"},
		{"wildcard", "https://yivi.irma.example.com"},
		{"refused", "https://evil.example"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.AllowsOrigin(tc.origin)
			}
		})
	}
}

// BenchmarkSimpleRequest is the package's share of an allowed simple
// request: the origin check and the response headers, replacing an
// upstream's.
func BenchmarkSimpleRequest(b *testing.B) {
	p := benchPolicy(b)
	req := http.Header{"Origin": {"https://app.example.org"}}
	h := http.Header{"Content-Type": {"application/json"}, "Access-Control-Allow-Origin": {"*"}}
	b.ReportAllocs()
	for b.Loop() {
		origin, ok := RequestOrigin(req)
		p.SetHeaders(h, origin, ok && p.AllowsOrigin(origin))
	}
}
