package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// killWait bounds how long Stop and Kill wait for a process after SIGKILL.
const killWait = 10 * time.Second

// Proc is a program started on a host with Host.Start. Its methods are
// safe for concurrent use.
type Proc struct {
	host       *Host
	cmd        *exec.Cmd
	name       string
	stdoutPath string
	stderrPath string
	exited     chan struct{}
	err        error // set before exited is closed
}

// Host returns the host the process runs on.
func (p *Proc) Host() *Host { return p.host }

// Name returns the process's label: host, sequence number and program,
// e.g. "h1-3-nearby"; its log files are named after it.
func (p *Proc) Name() string { return p.name }

// PID returns the process id of the program.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process. It returns os.ErrProcessDone once the
// process has exited.
func (p *Proc) Signal(sig os.Signal) error {
	select {
	case <-p.exited:
		return os.ErrProcessDone
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("netlab: signal %s: %w", p.name, err)
	}
	return nil
}

// Kill sends SIGKILL and waits (bounded) until the process has exited.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("netlab: %s (pid %d) still running %v after SIGKILL", p.name, p.PID(), killWait)
	}
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then
// kills it. It returns nil once the process has exited, however it ended
// (Wait tells how).
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
	}
	return p.Kill()
}

// Wait waits for the process to exit and returns its exit error (an
// *exec.ExitError unless it exited with status 0).
func (p *Proc) Wait() error {
	<-p.exited
	return p.err
}

// Exited returns a channel closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stdout returns what the process has written to stdout so far.
func (p *Proc) Stdout() string { return readLog(p.stdoutPath) }

// Stderr returns what the process has written to stderr so far.
func (p *Proc) Stderr() string { return readLog(p.stderrPath) }

// StdoutPath returns the file holding stdout ("" if the caller set
// cmd.Stdout itself).
func (p *Proc) StdoutPath() string { return p.stdoutPath }

// StderrPath returns the file holding stderr; see StdoutPath.
func (p *Proc) StderrPath() string { return p.stderrPath }

func readLog(path string) string {
	if path == "" {
		return ""
	}
	b, _ := os.ReadFile(path)
	return string(b)
}
