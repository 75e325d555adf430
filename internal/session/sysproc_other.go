//go:build unix && !linux

package session

import "syscall"

// sysProcAttr puts a session's program in its own process group. Only Linux
// has a parent-death signal; elsewhere the node's shutdown stops programs.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
