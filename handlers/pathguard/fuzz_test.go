package pathguard

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzCheck: Check never panics, and a path it accepts means the same to
// every reader: decoded (once, or as often as MaxDecodeDepth allows) and
// cleaned, it keeps its segments, and it holds no `..`, backslash or NUL.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"/", "/n2n/x", "/n2n/", "/iam/did:web:example.com%3A8443/x", "/iam/%41",
		"/n2n/%2e%2e/internal", "/n2n/..%2finternal", "/internal%2F..", "/n2n//x",
		"/n2n/./x", "/n2n/x/.", "/n2n\\x", "/n2n/%5c", "/n2n/%00", "/n2n;a=b/x",
		"/n2n/..;/x", "/n2n/%252e", "/n2n/%25%32%65", "*", "http://h/n2n/x?q",
		"h:443", "/%25252e", "/a;/b", "/a/%3b",
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
