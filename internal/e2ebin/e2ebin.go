// Package e2ebin builds the nutsgate binary for the black-box tests, which
// run it as an operator would.
package e2ebin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ModuleRoot returns the directory holding go.mod, found from the working
// directory upwards.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Build builds ./cmd/nutsgate into a new temporary directory, with the race
// detector when NUTSGATE_E2E_RACE is set. It returns the binary's path and a
// function that removes the directory.
func Build() (bin string, cleanup func(), err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "nutsgate-e2e-bin-")
	if err != nil {
		return "", nil, fmt.Errorf("temp dir: %v", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "nutsgate")
	args := []string{"build", "-o", bin}
	if os.Getenv("NUTSGATE_E2E_RACE") != "" {
		args = append(args, "-race") // the gateway itself under the race detector
	}
	build := exec.Command("go", append(args, "./cmd/nutsgate")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("go build ./cmd/nutsgate: %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

// Main builds the binary into *bin, runs the package's tests and removes the binary; a test
// package's TestMain is os.Exit(e2ebin.Main(m, &binPath)). A build failure fails the package:
// the tests are never skipped.
func Main(m *testing.M, bin *string) int {
	path, cleanup, err := Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building nutsgate: %v\n", err)
		return 1
	}
	defer cleanup()
	*bin = path
	return m.Run()
}
