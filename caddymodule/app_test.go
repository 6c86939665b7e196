package caddymodule

import (
	"context"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/nutsgate/nutsgate/mtlsident"
)

// provisionedApp provisions an app with a deny file holding entries, as a config's load
// would, and returns it with the function that ends its config.
func provisionedApp(t testing.TB, entries string) (*App, context.CancelFunc) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "deny")
	if err := os.WriteFile(path, []byte(entries), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, end := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(end)
	a := &App{DenyFile: path, StateDir: t.TempDir(), PKI: &PKIConfig{}}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return a, end
}

// startedApp is provisionedApp, started.
func startedApp(t testing.TB, entries string) (*App, context.CancelFunc) {
	t.Helper()
	a, end := provisionedApp(t, entries)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	return a, end
}

// A reload whose other apps fail to start stops the new config's app while the old config
// goes on serving: the old config's deny list and revocation checker must stay in force, not
// none. Once the old config ends, none is left in force.
func TestAppFailedReloadKeepsTheRunningList(t *testing.T) {
	withStore(t, nil)
	id, err := mtlsident.FromCertificate(clientCert(t, pkix.Name{CommonName: "denied"}))
	if err != nil {
		t.Fatal(err)
	}
	denied := func() bool { _, ok := globalDeny().List().Denies(id); return ok }

	running, _ := startedApp(t, "CN=denied\n")
	if !denied() {
		t.Fatal("the running config's list is not in force")
	}
	failed, end := startedApp(t, "CN=someone-else\n")
	if denied() {
		t.Fatal("the new config's list is not in force once its app started")
	}
	// Caddy stops the apps that started when another fails, then ends the config.
	if err := failed.Stop(); err != nil {
		t.Fatal(err)
	}
	end()
	if !denied() {
		t.Fatal("after a reload that failed to start, the running config's deny list is no longer in force")
	}
	if pkiInForce() != running.checker {
		t.Fatal("after a reload that failed to start, the running config's revocation checker is not in force")
	}

	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	if globalDeny() != noStore || pkiInForce() != nil {
		t.Fatal("a list or a checker is left in force after the last config stopped")
	}
}
