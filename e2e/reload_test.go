package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// reloadWithin is how soon a change to the authorized_keys file must take effect.
const reloadWithin = 2 * time.Second

// writeInPlace rewrites path in place: truncate, then write, the same inode, as an editor
// without backup files or `cat > file` does.
func writeInPlace(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// grantedNow reports whether auth is granted right now.
func (g *gateway) grantedNow(t *testing.T, auth string) bool {
	t.Helper()
	ok, _ := g.tryGrant(t, auth)
	return ok
}

// refusedNow reports whether auth is refused right now with the uniform refusal, and fails the
// test if the upstream saw the refused request.
func (g *gateway) refusedNow(t *testing.T, auth string) bool {
	t.Helper()
	path := probePath(t)
	r := g.send(t, "GET", path, auth)
	if refusal(r) != "" {
		return false
	}
	g.up.assertSawNothing(t, path)
	return true
}

// TestKeyFileReload proves that the running gateway picks up changes to the authorized_keys
// file within 2 s, both when the file is replaced by a rename and when it is rewritten in place:
// a removed key's token is refused (the very token string that was granted, and so possibly
// cached, before), an added key's token is accepted (the token string that was refused before),
// a rotated key takes effect although the file keeps its size, and keys that stayed keep working.
func TestKeyFileReload(t *testing.T) {
	t.Parallel()
	writes := []struct {
		name  string
		write func(t *testing.T, path string, data []byte)
	}{
		{"rename", writeFileAtomic},
		{"in-place", writeInPlace},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			alice := newKey(t, ed25519Key, "alice")
			bob := newKey(t, p256Key, "bob")
			carol := newKey(t, rsaKey, "carol")
			alice2 := newKey(t, ed25519Key, "alice") // same type and user: a same-size file
			keysFile := writeAuthorizedKeys(t, alice, bob)
			g := startGateway(t, keysFile, newUpstream(t))

			tokens := map[*testKey]string{}
			for _, k := range []*testKey{alice, bob, carol, alice2} {
				tokens[k] = k.newToken().bearer(t)
			}
			// inForce reports whether exactly the expected keys' tokens pass.
			inForce := func(granted, refused []*testKey) bool {
				for _, k := range granted {
					if !g.grantedNow(t, tokens[k]) {
						return false
					}
				}
				for _, k := range refused {
					if !g.refusedNow(t, tokens[k]) {
						return false
					}
				}
				return true
			}
			if !inForce([]*testKey{alice, bob}, []*testKey{carol, alice2}) {
				t.Fatal("initial key set not in force")
			}

			if a, b := authorizedKeysText(alice, carol), authorizedKeysText(alice2, carol); len(a) != len(b) {
				t.Fatalf("rotation step needs files of equal size: %d vs %d", len(a), len(b))
			}
			steps := []struct {
				name             string
				listed           []*testKey
				granted, refused []*testKey
			}{
				{"remove bob", []*testKey{alice}, []*testKey{alice}, []*testKey{bob, carol}},
				{"add carol", []*testKey{alice, carol}, []*testKey{alice, carol}, []*testKey{bob}},
				{"rotate alice, same size", []*testKey{alice2, carol}, []*testKey{alice2, carol}, []*testKey{alice, bob}},
			}
			for _, s := range steps {
				w.write(t, keysFile, []byte(authorizedKeysText(s.listed...)))
				eventually(t, reloadWithin, s.name+": new key set in force", func() bool {
					return inForce(s.granted, s.refused)
				})
			}
		})
	}
}

// TestKeyFileReloadGarbage proves that a reload to a file that does not parse keeps the last
// good key set in force, whole: for 3 s fresh tokens of the old keys still pass (fresh, so no
// cached decision can be what grants them), a key listed only in the bad file is refused, and
// the log names the file and the bad line. A later good file takes effect again.
func TestKeyFileReloadGarbage(t *testing.T) {
	t.Parallel()
	alice := newKey(t, ed25519Key, "alice")
	bob := newKey(t, p384Key, "bob")
	carol := newKey(t, ed25519Key, "carol")
	keysFile := writeAuthorizedKeys(t, alice, bob)
	g := startGateway(t, keysFile, newUpstream(t))
	g.expectGranted(t, alice.newToken().bearer(t))

	const badLine = 4
	garbage := strings.Join([]string{
		"# rotated by the e2e test",
		alice.authorizedLine(),
		"",
		"ssh-ed25519 !!!notbase64 mallory", // line 4
		carol.authorizedLine(),
		"",
	}, "\n")
	writeFileAtomic(t, keysFile, []byte(garbage))

	eventually(t, 3*time.Second, fmt.Sprintf("log names %s and line %d", keysFile, badLine), func() bool {
		return logNamesLine(g.Logs.String(), keysFile, badLine)
	})
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		g.expectGranted(t, alice.newToken().bearer(t))
		g.expectGranted(t, bob.newToken().bearer(t))
		g.expectRefused(t, carol.newToken().bearer(t))
		if t.Failed() {
			t.FailNow()
		}
	}

	// A good file again: carol in, bob out.
	writeFileAtomic(t, keysFile, []byte(authorizedKeysText(alice, carol)))
	eventually(t, reloadWithin, "carol's token granted after a good file", func() bool {
		return g.grantedNow(t, carol.newToken().bearer(t))
	})
	eventually(t, reloadWithin, "bob's token refused after a good file", func() bool {
		return g.refusedNow(t, bob.newToken().bearer(t))
	})
}

// logNamesLine reports whether one line of text mentions the file (by path or base name) and
// line number n, in any of the usual forms: "line 4", `"line":4`, "line=4", "file:4".
func logNamesLine(text, file string, n int) bool {
	lineRef := regexp.MustCompile(fmt.Sprintf(`(?i)(\bline\b\D{0,4}%d\b|%s:%d\b)`,
		n, regexp.QuoteMeta(filepath.Base(file)), n))
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, filepath.Base(file)) && lineRef.MatchString(l) {
			return true
		}
	}
	return false
}
