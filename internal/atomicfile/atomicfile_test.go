package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "deny")
	for _, content := range []string{"first\n", "second, longer\n", ""} {
		if err := Write(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := Write(filepath.Join(dir, "missing", "deny"), nil, 0o600); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

// TestCheckDir proves that a file whose directory is missing, or is not a
// directory, is reported with the reason, and that a writable directory
// passes and is left as it was.
func TestCheckDir(t *testing.T) {
	dir := t.TempDir()
	if err := CheckDir(filepath.Join(dir, "deny")); err != nil {
		t.Fatalf("a writable directory: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the check left %d files behind", len(entries))
	}
	missing := filepath.Join(dir, "missing")
	if err := CheckDir(filepath.Join(missing, "deny")); err == nil || err.Error() != "directory "+missing+" does not exist" {
		t.Errorf("a missing directory: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckDir(filepath.Join(file, "deny")); err == nil || err.Error() != file+" is not a directory" {
		t.Errorf("a file as directory: %v", err)
	}
}
