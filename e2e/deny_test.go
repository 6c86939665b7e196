package e2e

import (
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// denyWithin is how soon an edit of a deny_file by hand must take effect.
const denyWithin = 1500 * time.Millisecond

// access sends one /n2n request as c and returns the outcome, failing the test if a request
// refused with a status reached the node.
//
// A request whose connection is closed before any answer is made again, at most twice, and is
// not held against the gateway: the deny of a parallel subtest sweeps the connections of every
// denied client, a fresh one included whose request has not reached mtls_ident yet, and a deny
// that takes effect while a request it let through is at the node ends that request unanswered.
func (g *mtlsGateway) access(t *testing.T, c *leafCert) httpsResult {
	t.Helper()
	var r httpsResult
	for range 3 {
		path := n2nPath("access")
		if r = g.get(t, c, path, nil); r.err == nil {
			if r.status != http.StatusOK && g.node.SawPath(path) {
				t.Errorf("the gateway answered %s to %s, which the node received: it should have refused it unseen", r, path)
			}
			break
		}
	}
	return r
}

// expectAccess asserts one /n2n request of each client in cs gets want (and, if refused, never
// reaches the node).
func (g *mtlsGateway) expectAccess(t *testing.T, what string, want int, cs ...*leafCert) {
	t.Helper()
	for _, c := range cs {
		if r := g.access(t, c); r.statusOr() != want {
			t.Errorf("%s: %s got %s, want %d", what, c.subject(), r, want)
		}
	}
}

// eventuallyAccess polls until a request of c gets want, for at most denyWithin.
func (g *mtlsGateway) eventuallyAccess(t *testing.T, what string, want int, c *leafCert) {
	t.Helper()
	deadline := time.Now().Add(denyWithin)
	for {
		r := g.access(t, c)
		if r.statusOr() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d within %s, last got %s", what, want, denyWithin, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDenyList proves every way of denying a client on /n2n, each refusal a 403 that never
// reaches the node: an edit of the site's deny_file by hand (in force within 1.5 s, and lifted
// as fast); the admin API with a subject DN written in other letter case and spacing than the
// certificates' (two certificates whose subjects differ in case are both denied; the entry is
// persisted in the deny file, listed by GET, and lifted by DELETE); the admin API with a
// sha256 fingerprint (only that certificate, not another with the same subject); the admin
// API's 400 for bad bodies; and the `nutsgate deny add|list|remove` subcommand.
func TestDenyList(t *testing.T) {
	t.Parallel()
	// Relaxed rate limits: the polling below must not run into them.
	g := startMTLSGateway(t, relaxedRate, relaxedRate)

	t.Run("site deny_file edited by hand", func(t *testing.T) {
		t.Parallel()
		c, other := g.pki.client(t, "file-denied"), g.pki.client(t, "file-other")
		g.expectAccess(t, "before", http.StatusOK, c, other)
		siteFile := filepath.Join(g.Dir, "site-deny.txt")
		writeFileAtomic(t, siteFile, []byte("# denied by hand\n"+c.subject()+"\n"))
		g.eventuallyAccess(t, "denied by the site deny_file", http.StatusForbidden, c)
		g.expectAccess(t, "another client", http.StatusOK, other)
		writeFileAtomic(t, siteFile, []byte("# nobody\n"))
		g.eventuallyAccess(t, "denial lifted from the site deny_file", http.StatusOK, c)
	})

	t.Run("admin API, subject in other case and spacing", func(t *testing.T) {
		t.Parallel()
		upper := g.pki.clientNamed(t, pkix.Name{CommonName: "Case Node", Organization: []string{"Test Org"}})
		lower := g.pki.clientNamed(t, pkix.Name{CommonName: "CASE NODE", Organization: []string{"TEST ORG"}})
		other := g.pki.client(t, "case-other")
		g.expectAccess(t, "before", http.StatusOK, upper, lower, other)

		const entry = "cn = case node ,  o=test ORG"
		if got := g.changeDeny(t, http.MethodPost, entry); !slices.Contains(got, entry) {
			t.Errorf("POST answer %q does not list %q", got, entry)
		}
		g.expectAccess(t, "after POST", http.StatusForbidden, upper, lower)
		g.expectAccess(t, "after POST, another client", http.StatusOK, other)
		if lines := g.denyFileLines(t); !slices.Contains(lines, entry) {
			t.Errorf("deny file lines %q, want %q among them", lines, entry)
		}
		if got := g.denyEntries(t); !slices.Contains(got, entry) {
			t.Errorf("GET lists %q, want %q among them", got, entry)
		}

		if got := g.changeDeny(t, http.MethodDelete, entry); slices.Contains(got, entry) {
			t.Errorf("DELETE answer %q still lists %q", got, entry)
		}
		g.expectAccess(t, "after DELETE", http.StatusOK, upper, lower)
		if lines := g.denyFileLines(t); slices.Contains(lines, entry) {
			t.Errorf("deny file lines %q still hold %q after DELETE", lines, entry)
		}
		if got := g.denyEntries(t); slices.Contains(got, entry) {
			t.Errorf("GET lists %q after DELETE", got)
		}
	})

	t.Run("admin API, fingerprint", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "fp-denied")
		twin := g.pki.issue(t, clientTemplate(testName("fp-denied"))) // same subject, other key
		entry := "sha256:" + c.fingerprint()
		g.changeDeny(t, http.MethodPost, entry)
		g.expectAccess(t, "denied by fingerprint", http.StatusForbidden, c)
		g.expectAccess(t, "same subject, other certificate", http.StatusOK, twin)
		if lines := g.denyFileLines(t); !slices.Contains(lines, entry) {
			t.Errorf("deny file lines %q, want %q among them", lines, entry)
		}
		g.changeDeny(t, http.MethodDelete, entry)
		g.expectAccess(t, "fingerprint lifted", http.StatusOK, c)
	})

	t.Run("admin API, bad bodies", func(t *testing.T) {
		t.Parallel()
		bodies := []string{``, `{`, `not json`, `["CN=x"]`, `{}`, `{"entry":""}`, `{"entry":"   "}`, `{"entry":42}`, `{"entry":"not a DN"}`}
		for _, method := range []string{http.MethodPost, http.MethodDelete} {
			for _, body := range bodies {
				if status, msg := g.adminDeny(t, method, body); status != http.StatusBadRequest || strings.TrimSpace(msg) == "" {
					t.Errorf("%s %q: status %d, body %q; want 400 with a message", method, body, status, msg)
				}
			}
		}
	})

	t.Run("deny subcommand", func(t *testing.T) {
		t.Parallel()
		c := g.pki.client(t, "cli-denied")
		entry := c.subject()
		deny := func(args ...string) result {
			return runBin(t, cliTimeout, append(append([]string{"deny"}, args...), "--address", g.addr(g.Admin))...)
		}
		listed := func(res result) bool {
			if res.code != 0 {
				t.Fatalf("exit status %d, stderr %q", res.code, res.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n")
			if res.stdout != "" && slices.Contains(lines, "") {
				t.Errorf("stdout %q holds an empty line, want one entry a line", res.stdout)
			}
			return slices.Contains(lines, entry)
		}

		if !listed(deny("add", entry)) {
			t.Errorf("deny add: output does not list %q", entry)
		}
		g.expectAccess(t, "after deny add", http.StatusForbidden, c)
		if !listed(deny("list")) {
			t.Errorf("deny list: output does not list %q", entry)
		}
		if lines := g.denyFileLines(t); !slices.Contains(lines, entry) {
			t.Errorf("deny file lines %q, want %q among them", lines, entry)
		}
		if res := deny("remove", entry); listed(res) {
			t.Errorf("deny remove: output still lists %q", entry)
		}
		g.expectAccess(t, "after deny remove", http.StatusOK, c)
		if listed(deny("list")) {
			t.Errorf("deny list after remove: output still lists %q", entry)
		}

		// Removing an entry that is not listed is an error; adding one already listed is not,
		// but says so. Either way the list stays as it was.
		assertCLIErrorLine(t, deny("remove", entry), "Error: "+entry+" is not in the deny list")
		if !listed(deny("add", entry)) {
			t.Errorf("deny add again: output does not list %q", entry)
		}
		res := deny("add", entry)
		if !listed(res) || res.stderr != entry+" is already listed\n" {
			t.Errorf("deny add of a listed entry: stdout %q, stderr %q; want the entries and %q", res.stdout, res.stderr, entry+" is already listed")
		}
		if res := deny("remove", entry); listed(res) || res.stderr != "" {
			t.Errorf("deny remove: stdout %q stderr %q, want the entries without %q and nothing on stderr", res.stdout, res.stderr, entry)
		}
		// The admin API answers a DELETE of an absent entry as before: 200, the entries in force.
		if status, body := g.adminDeny(t, http.MethodDelete, `{"entry":"CN=never-listed"}`); status != http.StatusOK {
			t.Errorf("DELETE of an absent entry: status %d, body %q; want 200", status, body)
		}

		for _, bad := range []string{"not a DN", "", "sha256:abc"} {
			t.Run("bad entry "+bad, func(t *testing.T) {
				assertCLIError(t, deny("add", bad))
			})
		}
	})
}

// TestDenyPersistsAcrossRestart proves that a client denied through the admin API is still
// denied after the gateway is killed and started again from the same configuration.
func TestDenyPersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, n2nRate, grpcRate)
	c, other := g.pki.client(t, "restart-denied"), g.pki.client(t, "restart-other")
	g.changeDeny(t, http.MethodPost, c.subject())
	g.expectAccess(t, "before restart", http.StatusForbidden, c)

	g.restart(t)
	g.expectAccess(t, "after restart", http.StatusForbidden, c)
	g.expectAccess(t, "after restart, another client", http.StatusOK, other)
	if got := g.denyEntries(t); !slices.Contains(got, c.subject()) {
		t.Errorf("after restart GET lists %q, want %q among them", got, c.subject())
	}
}

// TestDenySurvivesFailedReload proves that a reload that fails to start (its new site's port is
// taken) leaves the running configuration's gateway-wide deny list in force: the denied client
// is still refused and the list is still served and editable. Caddy starts a config's apps in
// no set order, so the reload is tried several times: the nutsgate app starts before the http
// app fails in about half of them.
func TestDenySurvivesFailedReload(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, relaxedRate, relaxedRate)
	c, later := g.pki.client(t, "failed-reload-denied"), g.pki.client(t, "failed-reload-later")
	g.changeDeny(t, http.MethodPost, c.subject())
	g.expectAccess(t, "before the reloads", http.StatusForbidden, c)

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	failing := filepath.Join(t.TempDir(), "Caddyfile")
	writeFileAtomic(t, failing, []byte(string(cfg)+"\nhttp://"+busy.Addr().String()+" {\n\trespond \"never\"\n}\n"))
	for i := range 6 {
		res := runBin(t, cliTimeout, "reload", "--config", failing, "--adapter", "caddyfile", "--address", g.addr(g.Admin))
		if res.code == 0 {
			t.Fatalf("reload %d onto a taken port succeeded; the test proves nothing", i+1)
		}
		what := fmt.Sprintf("after failed reload %d", i+1)
		g.expectAccess(t, what, http.StatusForbidden, c)
		if got := g.denyEntries(t); !slices.Contains(got, c.subject()) {
			t.Fatalf("%s: GET /nutsgate/deny lists %q, want %q among them", what, got, c.subject())
		}
	}
	g.changeDeny(t, http.MethodPost, later.subject())
	g.expectAccess(t, "denied after the failed reloads", http.StatusForbidden, later)
}
