package pathguard

import (
	"strings"
	"testing"
)

// BenchmarkCheck measures the check of one request target.
func BenchmarkCheck(b *testing.B) {
	for _, bc := range []struct{ name, target string }{
		{"short", "/n2n/transactions"},
		{"didweb", "/iam/did:web:example.com%3A8443:iam:7f3a5c1e/did.json?x=1"},
		{"nested", "/iam/did:web:example.com%253A8443/did.json"},
		{"absolute", "https://node.example.com/n2n/transactions/list"},
		{"long", "/n2n/" + strings.Repeat("segment/", 64) + "end"},
		{"refused", "/n2n/%2e%2e/internal"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Check(bc.target)
			}
		})
	}
}
