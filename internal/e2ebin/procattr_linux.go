//go:build linux

package e2ebin

import "syscall"

// ProcAttr makes the kernel kill a started nutsgate if the test binary dies (for example on a
// test timeout), so no gateway outlives the test run.
func ProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
