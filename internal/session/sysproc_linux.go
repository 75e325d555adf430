package session

import "syscall"

// sysProcAttr puts a session's program in its own process group and kills
// it with SIGKILL when the thread that started it dies (the caller locks
// that thread around Start).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
