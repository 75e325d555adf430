//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts a plugin in its own process group. Without Linux's
// parent-death signal, a plugin outlives a node that is killed with
// SIGKILL, unless it exits when its connection to the node ends (as the
// examples do).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
