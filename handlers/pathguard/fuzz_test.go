package pathguard

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzCheck: Check never panics, and a path it accepts means the same to
// every reader: decoded (once, or as often as MaxDecodeDepth allows) and
// cleaned, it keeps its segments, and it holds no `..`, backslash or NUL;
// and no escape in it, at any of those depths, stands for an unreserved
// character (a reader that decodes those and one that does not would see
// different names).
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"/", "/n2n/x", "/n2n/", "/iam/did:web:example.com%3A8443/x", "/iam/%41",
		"/n2n/%2e%2e/internal", "/n2n/..%2finternal", "/internal%2F..", "/n2n//x",
		"/n2n/./x", "/n2n/x/.", "/n2n\\x", "/n2n/%5c", "/n2n/%00", "/n2n;a=b/x",
		"/n2n/..;/x", "/n2n/%252e", "/n2n/%25%32%65", "*", "http://h/n2n/x?q",
		"h:443", "/%25252e", "/a;/b", "/a/%3b", "/%69nternal/x", "/n2n/%2561",
		"/x%7E", "/x%5f%2D", "/%3A%40%20", "/%253A",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		err := Check(target)
		if err != nil {
			return
		}
		p, perr := targetPath(target)
		if perr != nil {
			t.Fatalf("Check(%q) accepted a target without a path: %v", target, perr)
		}
		if p == "" {
			p = "/"
		}
		if e := unreservedEscape(p); e != "" {
			t.Fatalf("Check(%q) accepted %q, which encodes an unreserved character: %s", target, p, e)
		}
		d := p
		for depth := 1; depth <= MaxDecodeDepth; depth++ {
			next, uerr := url.PathUnescape(d)
			if uerr != nil {
				if depth == 1 {
					t.Fatalf("Check(%q) accepted a malformed path: %v", target, uerr)
				}
				break
			}
			if next == d && depth > 1 {
				break
			}
			d = next
			if e := unreservedEscape(d); e != "" && depth < MaxDecodeDepth {
				t.Fatalf("Check(%q) accepted %q, decoded %d times to %q, which encodes an unreserved character: %s", target, p, depth, d, e)
			}
			if strings.ContainsAny(d, "\\\x00") {
				t.Fatalf("Check(%q) accepted %q, decoded %d times to %q", target, p, depth, d)
			}
			want := strings.Count(p, "/")
			if strings.HasSuffix(d, "/") && d != "/" {
				want-- // path.Clean drops a trailing slash
			}
			c := path.Clean(d)
			if got := strings.Count(c, "/"); got != want || c != strings.TrimSuffix(d, "/") && d != "/" {
				t.Fatalf("Check(%q) accepted %q, decoded %d times to %q, cleaned to %q", target, p, depth, d, c)
			}
			for seg := range strings.SplitSeq(d, "/") {
				name, _, _ := strings.Cut(seg, ";")
				if name == ".." || name == "." {
					t.Fatalf("Check(%q) accepted %q, decoded %d times to %q with a dot segment", target, p, depth, d)
				}
			}
		}
	})
}

// unreservedEscape returns the first escape in s of an unreserved character
// (RFC 3986: ALPHA DIGIT - . _ ~), or "".
func unreservedEscape(s string) string {
	for i := 0; i+2 < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		b, err := url.PathUnescape(s[i : i+3])
		if err != nil || len(b) != 1 {
			continue
		}
		if c := b[0]; 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			return s[i : i+3]
		}
	}
	return ""
}
