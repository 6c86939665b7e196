package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
)

// runTrialCerts runs deploy/trial-certs.sh into dir, as deploy/README.md says.
func runTrialCerts(t *testing.T, root, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "deploy", "trial-certs.sh"), dir)
	// The script's host names come from these; the Caddyfile's defaults are wanted.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NUTS_") && !strings.HasPrefix(kv, "NUTSGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/trial-certs.sh %s: %v\n%s", dir, err, out)
	}
}

// readCert reads the one certificate of a PEM file.
func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cert
}

// TestTrialCerts proves that deploy/trial-certs.sh makes what Caddyfile.example reads: run into
// an empty directory, `nutsgate validate --config Caddyfile.example` with NUTSGATE_TLS pointing
// there succeeds (validation loads every certificate and key, and the trust store), and the
// certificates are what the sites need: each server certificate chains to the trust store for
// its host name, the network certificate is good for client use too (the node's outbound
// calls), and the trial peer's client certificate is accepted by the network trust store.
func TestTrialCerts(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	dir := filepath.Join(t.TempDir(), "tls")
	runTrialCerts(t, root, dir)
	for _, name := range shippedTLSFiles {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("deploy/trial-certs.sh made no %s: %v", name, err)
		}
	}

	e := newShippedEnv(t)
	res := runBinIn(t, cliTimeout, "", e.environ(t, "NUTSGATE_TLS="+dir), "validate", "--config", filepath.Join(root, "Caddyfile.example"))
	if res.code != 0 || errorLogLine.MatchString(res.stderr) {
		t.Fatalf("nutsgate validate --config Caddyfile.example with NUTSGATE_TLS=%s: exit status %d\n%s", dir, res.code, res.stderr)
	}

	trust := x509.NewCertPool()
	trust.AddCert(readCert(t, filepath.Join(dir, "network-truststore.pem")))
	for _, c := range []struct {
		file, host string
		usage      []x509.ExtKeyUsage
	}{
		{"public.pem", "nuts.example.org", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"network.pem", "n2n.example.org", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"network.pem", "", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{"internal.pem", "nuts-internal.example.org", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"internal.pem", "127.0.0.1", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"client.pem", "", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	} {
		cert := readCert(t, filepath.Join(dir, c.file))
		if _, err := cert.Verify(x509.VerifyOptions{Roots: trust, DNSName: c.host, KeyUsages: c.usage}); err != nil {
			t.Errorf("%s for %q %v: %v", c.file, c.host, c.usage, err)
		}
	}
}

// deployReadmeVar matches a row of deploy/README.md's variable table: "| `NAME` | ...".
var deployReadmeVar = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\|")

// TestDeployReadmeVariables proves that deploy/README.md's table of environment variables lists
// exactly the variables the shipped Caddyfiles read ({$NAME}, {$NAME:default}, {env.NAME}), so
// that the documentation cannot drift from the files.
func TestDeployReadmeVariables(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	read := map[string][]string{}
	for _, cfg := range shippedConfigs {
		if cfg.quickStart {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, cfg.name))
		if err != nil {
			t.Fatal(err)
		}
		for name := range caddyfileVars(string(data)) {
			read[name] = append(read[name], cfg.name)
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range deployReadmeVar.FindAllStringSubmatch(string(data), -1) {
		listed = append(listed, m[1])
	}
	for name, files := range read {
		if !slices.Contains(listed, name) {
			t.Errorf("deploy/README.md's variable table does not list %s, which %v read", name, files)
		}
	}
	for _, name := range listed {
		if read[name] == nil {
			t.Errorf("deploy/README.md's variable table lists %s, which no shipped Caddyfile reads", name)
		}
	}
	if len(listed) == 0 {
		t.Error("deploy/README.md has no variable table (rows \"| `NAME` | ...\")")
	}
}

// TestDenyOverUnixSocketAdmin proves the admin endpoint of deploy/README.md on a unix socket, as
// the systemd unit's RuntimeDirectory makes room for (`admin unix//run/nutsgate/admin.sock`):
// the gateway serves its admin API there, and `nutsgate deny add|list|remove --address
// unix//<socket>` edit and show the deny list through it.
func TestDenyOverUnixSocketAdmin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	addr := "unix/" + sock
	port := e2ebin.FreePort(t)
	cfg := filepath.Join(dir, "Caddyfile")
	writeFileAtomic(t, cfg, []byte(`{
	admin `+addr+`
	nutsgate {
		deny_file `+filepath.Join(dir, "deny")+`
	}
}

http://127.0.0.1:`+strconv.Itoa(port)+` {
	respond "up"
}
`))
	e2ebin.Start(t, binPath, cfg, func() bool {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	// The admin endpoint opens before the config's apps start; the deny list is there once
	// the nutsgate app has.
	eventually(t, 10*time.Second, "nutsgate deny list never succeeded over the socket", func() bool {
		return runBin(t, cliTimeout, "deny", "list", "--address", addr).code == 0
	})

	const entry = "CN=unix-socket-denied,O=nutsgate e2e,C=NL"
	if res := runBin(t, cliTimeout, "deny", "add", "--address", addr, entry); res.code != 0 {
		t.Fatalf("nutsgate deny add --address %s: exit status %d\nstderr: %s", addr, res.code, res.stderr)
	}
	res := runBin(t, cliTimeout, "deny", "list", "--address", addr)
	if res.code != 0 || strings.TrimSpace(res.stdout) != entry {
		t.Fatalf("nutsgate deny list --address %s: exit status %d, stdout %q, want %q\nstderr: %s", addr, res.code, res.stdout, entry, res.stderr)
	}
	deny, err := os.ReadFile(filepath.Join(dir, "deny"))
	if err != nil || !strings.Contains(string(deny), entry) {
		t.Errorf("the deny file after deny add over the socket: %q, %v; want it to hold %q", deny, err, entry)
	}
	if res := runBin(t, cliTimeout, "deny", "remove", "--address", addr, entry); res.code != 0 || strings.TrimSpace(res.stdout) != "" {
		t.Errorf("nutsgate deny remove --address %s: exit status %d, stdout %q (want no entries left)\nstderr: %s", addr, res.code, res.stdout, res.stderr)
	}
}

// TestSystemdUnitAdminSocket proves that deploy/nutsgate.service makes the directory of the
// admin socket that deploy/README.md documents (/run/nutsgate, RuntimeDirectory=nutsgate, not
// readable by other users) and allows unix sockets, and that the README names the socket as the
// Caddyfile and `nutsgate deny` take it.
func TestSystemdUnitAdminSocket(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "deploy", "nutsgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(unit), "\n")
	for _, want := range []string{"RuntimeDirectory=nutsgate", "RuntimeDirectoryMode=0750"} {
		if !slices.Contains(lines, want) {
			t.Errorf("deploy/nutsgate.service has no line %q", want)
		}
	}
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.HasPrefix(l, "RestrictAddressFamilies=") && strings.Contains(l, "AF_UNIX")
	}) {
		t.Error("deploy/nutsgate.service: RestrictAddressFamilies does not allow AF_UNIX")
	}
	readme, err := os.ReadFile(filepath.Join(root, "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NUTSGATE_ADMIN=unix//run/nutsgate/admin.sock", "nutsgate deny list --address unix//run/nutsgate/admin.sock"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("deploy/README.md does not say %q", want)
		}
	}
}
