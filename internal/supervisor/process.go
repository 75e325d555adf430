package supervisor

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

// reservedEnv are the variables the supervisor sets; Spec.Env may not.
var reservedEnv = []string{
	subservice.EnvSocket, subservice.EnvToken, subservice.EnvNodeID,
	subservice.EnvNodeName, subservice.EnvSubservice, subservice.EnvVersion,
}

// passEnv are the variables copied from the node's environment.
var passEnv = []string{"PATH", "HOME", "LANG"}

const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// plugin is one name's entry: a spec and the manager goroutine that runs
// its instances one after another. Fields marked (mu) are guarded by
// Supervisor.mu.
type plugin struct {
	name string
	sub  string // the subservice it speaks under: spec.Subservice or name
	spec Spec

	state    State      // (mu)
	since    time.Time  // (mu)
	pid      int        // (mu)
	restarts int        // (mu)
	lastExit string     // (mu)
	errMsg   string     // (mu)
	menu     []MenuItem // (mu)
	cur      *instance  // (mu) the live instance, nil between instances
	dropped  atomic.Uint64

	stop     chan struct{} // closed to ask the manager to stop
	stopOnce sync.Once
	done     chan struct{} // closed when the manager has returned
}

func newPlugin(spec Spec) *plugin {
	return &plugin{
		name:  spec.Name,
		sub:   cmp.Or(spec.Subservice, spec.Name),
		spec:  spec,
		state: StateStarting,
		since: time.Now(),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

func (p *plugin) requestStop() { p.stopOnce.Do(func() { close(p.stop) }) }

// active reports whether the manager goroutine still runs.
func (p *plugin) active() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// setState changes the state. Supervisor.mu must be held.
func (p *plugin) setState(st State) {
	p.state = st
	p.since = time.Now()
	if st != StateFailed {
		p.errMsg = ""
	}
}

// fail marks the plugin failed with a reason. Supervisor.mu must be held.
func (p *plugin) fail(reason string) {
	p.setState(StateFailed)
	p.errMsg = reason
	p.pid = 0
}

// status snapshots p. Supervisor.mu must be held.
func (p *plugin) status() Status {
	st := Status{
		Name:     p.name,
		Version:  p.spec.Version,
		State:    p.state,
		PID:      p.pid,
		Restarts: p.restarts,
		Since:    p.since,
		LastExit: p.lastExit,
		Error:    p.errMsg,
		Dropped:  p.dropped.Load(),
	}
	if p.cur != nil && p.cur.conn != nil && !p.cur.gone {
		st.Connected = true
	}
	if len(p.menu) > 0 {
		st.Menu = append([]MenuItem(nil), p.menu...)
	}
	return st
}

// instance is one process of a plugin. Fields marked (mu) are guarded by
// Supervisor.mu.
type instance struct {
	p      *plugin
	token  string // (mu) cleared once used
	pid    int    // (mu) until Start returns, then fixed
	q      *outQueue
	exited chan struct{} // closed when the process has been reaped
	err    error         // the Wait result, read after exited
	logged chan struct{} // closed when its output has been copied to the log
	pipe   *os.File      // read end of its stdout and stderr

	conn  net.Conn // (mu) the welcomed connection
	gone  bool     // (mu) connection closed or process exited
	batch bool     // (mu) its hello asked for batches (subservice.FeatureBatch)
	bin   bool     // (mu) its hello asked for binary messages (subservice.FeatureBin)
}

// resolveCommand finds the executable for spec.Argv[0] and checks that it
// can run.
func resolveCommand(spec Spec) (string, error) {
	arg0 := spec.Argv[0]
	var path string
	switch {
	case filepath.IsAbs(arg0):
		path = arg0
	case strings.Contains(arg0, "/"):
		path = filepath.Join(spec.Dir, arg0)
	default:
		if fi, err := os.Stat(filepath.Join(spec.Dir, arg0)); err == nil && fi.Mode().IsRegular() {
			path = filepath.Join(spec.Dir, arg0)
			break
		}
		lp, err := exec.LookPath(arg0)
		if err != nil {
			return "", fmt.Errorf("%w: %q is neither in %s nor on PATH", ErrCommand, arg0, spec.Dir)
		}
		path = lp
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %s: %v", ErrCommand, path, unwrapPathErr(err))
	case fi.IsDir():
		return "", fmt.Errorf("%w: %s is a directory", ErrCommand, path)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%w: %s is not a regular file", ErrCommand, path)
	case fi.Mode()&0o111 == 0:
		return "", fmt.Errorf("%w: %s is not executable (mode %v)", ErrCommand, path, fi.Mode().Perm())
	}
	if err := syscall.Access(path, 1 /* X_OK */); err != nil {
		return "", fmt.Errorf("%w: %s is not executable: %v", ErrCommand, path, err)
	}
	return path, nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// environ builds a plugin's environment: PATH, HOME and LANG from the node,
// spec.Env, then the NEARBY_ variables.
func (s *Supervisor) environ(spec Spec, token string, self Peer) []string {
	env := make([]string, 0, len(passEnv)+len(spec.Env)+len(reservedEnv))
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		} else if k == "PATH" {
			env = append(env, "PATH="+defaultPath)
		}
	}
	env = append(env, spec.Env...)
	return append(env,
		subservice.EnvSocket+"="+s.cfg.SocketPath,
		subservice.EnvToken+"="+token,
		subservice.EnvNodeID+"="+self.ID,
		subservice.EnvNodeName+"="+self.Name,
		subservice.EnvSubservice+"="+cmp.Or(spec.Subservice, spec.Name),
		subservice.EnvVersion+"="+spec.Version,
	)
}

// spawn starts one process of p. Its token and p.cur are in place before
// the process starts, so its hello can never arrive too early.
func (s *Supervisor) spawn(p *plugin, path string, restart bool) (*instance, error) {
	spec := p.spec
	token := newToken()
	self := s.cfg.Router.Self()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("supervisor: output pipe: %w", err)
	}
	inst := &instance{
		p:      p,
		token:  token,
		q:      newOutQueue(s.cfg.QueueSize, s.cfg.QueueBytes),
		exited: make(chan struct{}),
		logged: make(chan struct{}),
		pipe:   r,
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   spec.Argv,
		Dir:    spec.Dir,
		Env:    s.environ(spec, token, self),
		Stdout: w,
		Stderr: w,
		// Own process group, so Stop reaches the plugin's children; SIGKILL
		// if the node dies (Pdeathsig follows the thread that forked, hence
		// LockOSThread around Start).
		SysProcAttr: sysProcAttr(),
	}
	s.mu.Lock()
	s.tokens[token] = inst
	p.cur = inst
	p.pid = 0
	p.menu = nil
	if restart {
		p.restarts++
	}
	p.setState(StateStarting)
	s.mu.Unlock()

	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	w.Close()
	if err != nil {
		r.Close()
		s.mu.Lock()
		delete(s.tokens, token)
		inst.gone = true
		p.cur = nil
		s.mu.Unlock()
		inst.q.close()
		s.logLine(p.name, "cannot start %s %s: %v", spec.Name, spec.Version, err)
		return nil, fmt.Errorf("%w: %v", ErrCommand, err)
	}
	s.mu.Lock()
	inst.pid = cmd.Process.Pid
	p.pid = inst.pid
	s.emit(p)
	s.mu.Unlock()
	s.logLine(p.name, "started %s %s pid %d", spec.Name, spec.Version, inst.pid)
	s.log.Debug("plugin started", "plugin", p.name, "version", spec.Version, "pid", inst.pid)

	lf := s.logFor(p.name)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		defer close(inst.logged)
		defer r.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 && lf != nil {
				lf.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		inst.err = cmd.Wait()
		close(inst.exited)
	}()
	return inst, nil
}

// wait waits for inst to exit or for a stop request; on a stop it sends
// SIGTERM to the process group, then SIGKILL after StopGrace. Either way it
// then kills whatever is left of the group. It reports whether it stopped
// the instance.
func (s *Supervisor) wait(p *plugin, inst *instance) (stopped bool) {
	select {
	case <-inst.exited:
	case <-p.stop:
		stopped = true
		syscall.Kill(-inst.pid, syscall.SIGTERM)
		t := time.NewTimer(s.cfg.StopGrace)
		select {
		case <-inst.exited:
			t.Stop()
		case <-t.C:
			s.log.Debug("plugin ignored SIGTERM, killing", "plugin", p.name, "pid", inst.pid)
			syscall.Kill(-inst.pid, syscall.SIGKILL)
			<-inst.exited
		}
	}
	// The leader is gone; children it left in its group go too.
	syscall.Kill(-inst.pid, syscall.SIGKILL)
	return stopped
}

// finish detaches an exited instance: its token, connection and queue.
func (s *Supervisor) finish(inst *instance) {
	s.mu.Lock()
	delete(s.tokens, inst.token)
	inst.gone = true
	c := inst.conn
	p := inst.p
	if p.cur == inst {
		p.cur = nil
		p.pid = 0
		p.menu = nil
	}
	s.mu.Unlock()
	inst.q.close()
	if c != nil {
		c.Close()
	}
	// Its output pipe ends when the group is gone; a process that escaped
	// the group may hold it open, so do not wait for it for long.
	t := time.NewTimer(time.Second)
	select {
	case <-inst.logged:
		t.Stop()
	case <-t.C:
		inst.pipe.Close()
	}
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// manage runs p's instances until it is stopped, exits cleanly, or fails.
func (s *Supervisor) manage(p *plugin, path string, inst *instance) {
	defer s.wg.Done()
	defer close(p.done)
	var recent []time.Time // restarts within CrashLoopWindow
	for {
		stopped := s.wait(p, inst)
		s.finish(inst)
		exit := describeExit(inst.err)
		s.logLine(p.name, "pid %d: %s", inst.pid, exit)
		s.log.Debug("plugin exited", "plugin", p.name, "pid", inst.pid, "exit", exit, "stopped", stopped)
		now := time.Now()
		s.mu.Lock()
		p.lastExit = exit
		switch {
		case stopped:
			p.setState(StateStopped)
			s.emit(p)
			s.mu.Unlock()
			return
		case inst.err == nil:
			p.setState(StateExited)
			s.emit(p)
			s.mu.Unlock()
			return
		}
		kept := recent[:0]
		for _, t := range recent {
			if now.Sub(t) < s.cfg.CrashLoopWindow {
				kept = append(kept, t)
			}
		}
		recent = kept
		if len(recent) >= s.cfg.CrashLoopCount {
			p.fail(fmt.Sprintf("crash loop: %d restarts within %s, last %s", len(recent), s.cfg.CrashLoopWindow, exit))
			s.emit(p)
			s.mu.Unlock()
			s.logLine(p.name, "crash loop: not restarting")
			return
		}
		delay := s.cfg.BackoffInitial << len(recent)
		if delay > s.cfg.BackoffMax || delay <= 0 {
			delay = s.cfg.BackoffMax
		}
		recent = append(recent, now)
		p.setState(StateBackoff)
		s.emit(p)
		s.mu.Unlock()

		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-p.stop:
			t.Stop()
			s.mu.Lock()
			p.setState(StateStopped)
			s.emit(p)
			s.mu.Unlock()
			return
		}
		next, err := s.spawn(p, path, true)
		if err != nil {
			s.mu.Lock()
			p.fail(err.Error())
			s.emit(p)
			s.mu.Unlock()
			return
		}
		inst = next
	}
}
