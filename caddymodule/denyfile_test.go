package caddymodule

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
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
