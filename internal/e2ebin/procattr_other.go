//go:build !linux

package e2ebin

import "syscall"

// ProcAttr returns nil: only Linux can tie a child's life to its parent's.
func ProcAttr() *syscall.SysProcAttr {
	return nil
}
