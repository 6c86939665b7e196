package caddymodule

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nutsgate/nutsgate/mtlsident"
)

// TestDenyFileBadLine: an mtls_ident deny_file with a line that does not
// parse provisions, with the other lines in force and the line counted in
// nutsgate_deny_file_invalid_lines; so does the nutsgate app's.
func TestDenyFileBadLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	if err := os.WriteFile(path, []byte("CN=a\nGN=x,CN=b\nC = NL, O = Org, CN = c\nCN=d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := provisioned(t, &MTLSIdent{DenyFile: path})
	if n := len(m.file.List().Entries()); n != 3 {
		t.Errorf("%d entries in force, want 3", n)
	}
	if v := invalidLines(t, path); v != 1 {
		t.Errorf("nutsgate_deny_file_invalid_lines = %v, want 1", v)
	}

	appPath := filepath.Join(t.TempDir(), "deny")
	if err := os.WriteFile(appPath, []byte("not a DN\nnor this\nCN=a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &App{DenyFile: appPath}
	if err := a.Provision(caddy.Context{Context: context.Background()}); err != nil {
		t.Fatalf("the app does not provision with a bad line: %v", err)
	}
	if n := len(a.store.List().Entries()); n != 1 {
		t.Errorf("%d entries in force, want 1", n)
	}
	if v := invalidLines(t, appPath); v != 2 {
		t.Errorf("nutsgate_deny_file_invalid_lines = %v, want 2", v)
	}
}

// TestAppDenyFileDirectory proves that the app's deny_file in a directory
// that does not exist fails provisioning with one line naming the file and
// the problem, rather than the first change through the admin API.
func TestAppDenyFileDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "deny")
	a := &App{DenyFile: path}
	err := a.Provision(caddy.Context{Context: context.Background()})
	want := "deny_file " + path + ": directory " + filepath.Dir(path) + " does not exist"
	if err == nil || err.Error() != want {
		t.Fatalf("provisioning: %v, want %q", err, want)
	}
}

// invalidLines is the value of nutsgate_deny_file_invalid_lines{file}, -1
// if there is no such series.
func invalidLines(t *testing.T, file string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(denyFileInvalidLines)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "file" && l.GetValue() == file {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// TestDenyFileReporter: the skipped lines of a deny file are logged once
// per change of the file, however many modules use it (the app and an
// mtls_ident) and across a config reload (the new config's modules start
// before the old ones go); the file's series of
// nutsgate_deny_file_invalid_lines goes once the last config using it is
// unloaded, and a later config logs the lines again.
func TestDenyFileReporter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	core, logs := observer.New(zap.WarnLevel)
	logger := zap.New(core)
	_, skipped := mtlsident.ParseDenyFile([]byte("CN=a\nnot a DN\n"))
	newConfig := func() context.CancelFunc {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		for range 2 { // the app and an mtls_ident
			newDenyFileReporter(ctx, path, logger).report(skipped)
		}
		return cancel
	}
	unloadOld := newConfig()
	if n := logs.Len(); n != 1 {
		t.Fatalf("one file used by two modules: %d log lines, want 1", n)
	}
	unloadNew := newConfig()
	unloadOld()
	if n := logs.Len(); n != 1 {
		t.Fatalf("after a config reload: %d log lines, want 1 (the file did not change)", n)
	}
	if v := invalidLines(t, path); v != 1 {
		t.Fatalf("after a config reload: nutsgate_deny_file_invalid_lines = %v, want 1", v)
	}
	_, skipped = mtlsident.ParseDenyFile([]byte("not a DN\nCN=a\nnor this\n"))
	unloadEdited := newConfig()
	if n := logs.Len(); n != 3 {
		t.Fatalf("after an edit: %d log lines, want 3 (1 + the two lines now skipped)", n)
	}
	unloadNew()
	unloadEdited()
	deadline := time.Now().Add(5 * time.Second)
	for invalidLines(t, path) != -1 {
		if time.Now().After(deadline) {
			t.Fatal("the series of a file no loaded config uses is still there")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = newConfig()
	if n := logs.Len(); n != 5 {
		t.Fatalf("a config loaded after the file was unused: %d log lines, want 5 (its two lines again)", n)
	}
}
