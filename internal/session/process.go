package session

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The environment variables a session's program gets, besides PATH, HOME
// and LANG from the node.
const (
	EnvSession       = "NEARBY_SESSION"        // the session id
	EnvPresenterID   = "NEARBY_PRESENTER_ID"   // id of the presenter's node
	EnvPresenterName = "NEARBY_PRESENTER_NAME" // display name of the presenter's node
	EnvNodeID        = "NEARBY_NODE_ID"        // id of the host node
	EnvNodeName      = "NEARBY_NODE_NAME"      // display name of the host node
	EnvPlugin        = "NEARBY_PLUGIN"         // the hosted plugin's name
	EnvVersion       = "NEARBY_VERSION"        // the hosted plugin's version
)

var passEnv = []string{"PATH", "HOME", "LANG"}

const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// resolveCommand finds the executable of argv[0] for a program installed in
// dir: a path with a slash is taken inside dir (or as is when absolute), a
// bare name from dir when such a file exists there, else from PATH.
func resolveCommand(dir string, argv []string) (string, error) {
	if len(argv) == 0 || argv[0] == "" {
		return "", fmt.Errorf("%w: empty command", ErrBadSpec)
	}
	arg0 := argv[0]
	var path string
	switch {
	case filepath.IsAbs(arg0):
		path = arg0
	case strings.Contains(arg0, "/"):
		path = filepath.Join(dir, arg0)
	default:
		if fi, err := os.Stat(filepath.Join(dir, arg0)); err == nil && fi.Mode().IsRegular() {
			path = filepath.Join(dir, arg0)
			break
		}
		lp, err := exec.LookPath(arg0)
		if err != nil {
			return "", fmt.Errorf("%w: %q is neither in %s nor on PATH", ErrBadSpec, arg0, dir)
		}
		path = lp
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %s: %v", ErrBadSpec, path, errors.Unwrap(err))
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%w: %s is not a regular file", ErrBadSpec, path)
	case fi.Mode()&0o111 == 0:
		return "", fmt.Errorf("%w: %s is not executable (mode %v)", ErrBadSpec, path, fi.Mode().Perm())
	}
	return path, nil
}

// proc is one session's running program. Its stdin, stdout and stderr are
// pipes whose other ends the program holds; nothing else of the node's is
// inherited.
type proc struct {
	pid    int
	stdin  *os.File // write end
	stdout *os.File // read end
	stderr *os.File // read end
	exited chan struct{}
	err    error // the Wait result, read after exited is closed
}

// startProc starts argv (argv[0] resolved to path) in dir with env, in a
// process group of its own.
func startProc(path string, argv []string, dir string, env []string) (*proc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("session: stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("session: stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("session: stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        argv,
		Dir:         dir,
		Env:         env,
		Stdin:       inR,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: sysProcAttr(),
	}
	// Pdeathsig follows the thread that forked: keep it for the fork.
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("session: start %s: %w", path, err)
	}
	p := &proc{pid: cmd.Process.Pid, stdin: inW, stdout: outR, stderr: errR, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM to the program's process group and SIGKILL after
// grace if it has not exited; then it kills whatever is left of the group.
// It returns once the program has exited.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.exited:
	default:
		syscall.Kill(-p.pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.exited:
			t.Stop()
		case <-t.C:
			syscall.Kill(-p.pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	p.reapGroup()
}

// reapGroup kills what the program left in its process group once it has
// exited, so nothing holds its pipes open.
func (p *proc) reapGroup() { syscall.Kill(-p.pid, syscall.SIGKILL) }

// describeExit says how the program ended.
func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// environ builds a session program's environment.
func environ(id string, presenter, self Peer, spec Spec) []string {
	env := make([]string, 0, len(passEnv)+7)
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		} else if k == "PATH" {
			env = append(env, "PATH="+defaultPath)
		}
	}
	return append(env,
		EnvSession+"="+id,
		EnvPresenterID+"="+presenter.ID,
		EnvPresenterName+"="+presenter.Name,
		EnvNodeID+"="+self.ID,
		EnvNodeName+"="+self.Name,
		EnvPlugin+"="+spec.Name,
		EnvVersion+"="+spec.Version,
	)
}
