package netlab

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tools are the absolute paths of the programs the harness runs.
type tools struct {
	ip, tc, nft, unshare string
}

// lookTools finds the tools and checks privileges; the error wraps
// ErrUnavailable and says what to install.
func lookTools() (tools, error) {
	if os.Geteuid() != 0 {
		return tools{}, fmt.Errorf("%w: needs root (run the tests with `make test` as root, or scripts/isolated.sh)", ErrUnavailable)
	}
	var t tools
	var missing []string
	for _, x := range []struct {
		dst *string
		bin string
		pkg string
	}{
		{&t.ip, "ip", "iproute2"},
		{&t.tc, "tc", "iproute2"},
		{&t.nft, "nft", "nftables"},
		{&t.unshare, "unshare", "util-linux"},
	} {
		p, err := lookPath(x.bin)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%s)", x.bin, x.pkg))
			continue
		}
		*x.dst = p
	}
	if len(missing) > 0 {
		return tools{}, fmt.Errorf("%w: missing %s: apt-get install -y iproute2 nftables util-linux", ErrUnavailable, strings.Join(missing, ", "))
	}
	return t, nil
}

// lookPath is exec.LookPath that also tries the sbin directories, which a
// non-login PATH may lack.
func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, bin)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("netlab: %s not found", bin)
}

// Available reports why the harness cannot run here (not root, a tool
// missing), or nil if it can.
func Available() error {
	_, err := lookTools()
	return err
}

type sysctl struct{ key, val string }

var (
	hostSysctls = []sysctl{
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	}
	hostSysctlsNoIPv6 = []sysctl{
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	}
	// The bridge namespace is a pure layer-2 switch: no IPv6 on its ports,
	// so it sends nothing of its own (router solicitations, MLD reports).
	bridgeSysctls = []sysctl{
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
	}
)

// setSysctls writes kv into /proc/sys of each named namespace without a
// fork: a goroutine locks its OS thread, enters each namespace with setns
// and writes the files (/proc/sys/net follows the calling thread's
// namespace). The thread is never unlocked, so the runtime discards it
// when the goroutine ends instead of reusing a thread in a foreign
// namespace.
func setSysctls(namespaces []string, kv []sysctl) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			for _, ns := range namespaces {
				if err := setns(filepath.Join(netnsDir, ns)); err != nil {
					return err
				}
				for _, s := range kv {
					if err := os.WriteFile("/proc/sys/"+s.key, []byte(s.val), 0); err != nil {
						return fmt.Errorf("netlab: sysctl %s=%s in %s: %w", s.key, s.val, ns, err)
					}
				}
			}
			return nil
		}()
	}()
	return <-errc
}

func setns(path string) error {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netlab: setns %s: %w", path, err)
	}
	return nil
}

// The spawner starts every child from one OS thread that never exits.
// Pdeathsig fires when the *thread* that forked a child dies, not the
// process: starting from an arbitrary thread could kill the child whenever
// the runtime retires that thread.
var (
	spawnOnce sync.Once
	spawnCh   chan func()
)

func spawn(f func()) {
	spawnOnce.Do(func() {
		spawnCh = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range spawnCh {
				f()
			}
		}()
	})
	done := make(chan struct{})
	spawnCh <- func() { defer close(done); f() }
	<-done
}

// startCmd starts cmd from the spawner thread with Pdeathsig SIGKILL.
func startCmd(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	var err error
	spawn(func() { err = cmd.Start() })
	return err
}

// nsID identifies a network namespace by the device and inode of its nsfs
// file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// pidsIn lists the processes whose network namespace is one of ids (what
// `ip netns pids` does), except this process.
func pidsIn(ids map[nsID]bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if id, err := statNS(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && ids[id] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNamespaces sends SIGKILL to every process left in the named
// namespaces and waits (bounded) until they are gone. Each process is
// signalled through a pidfd and only after its namespace is checked again,
// so a recycled PID is never hit.
func killNamespaces(names []string, log *slog.Logger) error {
	ids := make(map[nsID]bool)
	for _, ns := range names {
		if id, err := statNS(filepath.Join(netnsDir, ns)); err == nil {
			ids[id] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := pidsIn(ids)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netlab: processes %v still alive in namespaces %v after SIGKILL", pids, names)
		}
		for _, pid := range pids {
			p, err := os.FindProcess(pid)
			if err != nil {
				continue
			}
			if id, err := statNS(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && ids[id] {
				log.Debug("netlab: killing leftover process", "pid", pid)
				_ = p.Signal(syscall.SIGKILL)
			}
			_ = p.Release()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Run locks. Each LAN holds an exclusive flock on <lockDir>/<rid>.lock for
// its lifetime; the kernel drops it when the process dies, which is how
// Sweep tells a crashed run from a live one.
var errLocked = errors.New("netlab: run id in use")

func lockDir() string { return filepath.Join(os.TempDir(), "nearby-netlab") }

func lockRun(rid string) (*os.File, error) {
	dir := lockDir()
	if err := os.MkdirAll(dir, 0o1777); err != nil {
		return nil, fmt.Errorf("netlab: lock dir: %w", err)
	}
	_ = os.Chmod(dir, 0o1777|os.ModeSticky)
	f, err := os.OpenFile(filepath.Join(dir, rid+".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("netlab: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("netlab: lock: %w", err)
	}
	return f, nil
}

func unlockRun(rid string, f *os.File) {
	_ = os.Remove(filepath.Join(lockDir(), rid+".lock"))
	_ = f.Close()
}

var nsNameRE = regexp.MustCompile(`^nb([0-9a-f]{6})-(br|h[0-9]+)$`)

// Sweep removes what crashed runs left behind: namespaces named like a
// LAN's (nb<rid>-br, nb<rid>-h<i>) whose run no longer holds its lock, the
// processes inside them, and stale lock files. It never touches a LAN that
// is still open, in this process or another. It returns the namespaces it
// deleted. Their temporary log directories go too. Call it
// before building a LAN (so should `nearby demo`).
func Sweep() ([]string, error) {
	tl, err := lookTools()
	if err != nil {
		return nil, err
	}
	byRun := make(map[string][]string)
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if m := nsNameRE.FindStringSubmatch(e.Name()); m != nil {
				byRun[m[1]] = append(byRun[m[1]], e.Name())
			}
		}
	}
	if ents, err := os.ReadDir(lockDir()); err == nil {
		for _, e := range ents {
			if rid, ok := strings.CutSuffix(e.Name(), ".lock"); ok && len(rid) == 6 {
				if _, seen := byRun[rid]; !seen {
					byRun[rid] = nil
				}
			}
		}
	}
	var removed []string
	var errs []error
	for rid, names := range byRun {
		f, err := lockRun(rid)
		if err != nil {
			continue // alive (or unlockable): leave it
		}
		l := &LAN{rid: rid, log: slog.New(slog.DiscardHandler), tools: tl}
		if err := killNamespaces(names, l.log); err != nil {
			errs = append(errs, err)
		}
		if err := l.deleteNamespaces(names); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, names...)
		}
		// The run's temporary log directory (see Create).
		if dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "netlab-"+rid+"-*")); err == nil {
			for _, d := range dirs {
				_ = os.RemoveAll(d)
			}
		}
		unlockRun(rid, f)
	}
	return removed, errors.Join(errs...)
}
