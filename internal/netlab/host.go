package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnvRequireIsolation is set to "1" in the environment of every command run
// on a host (see internal/netsafe).
const EnvRequireIsolation = "NEARBY_REQUIRE_ISOLATION"

// Host is one machine on a LAN: a network namespace whose only link, lan0,
// is plugged into the LAN's bridge. Its fields are read-only; its methods
// are safe for concurrent use.
type Host struct {
	// Index is the host's position in the LAN, from 0.
	Index int
	// Name is the hostname programs on the host see: "h<Index+1>".
	Name string
	// NS is the name of the host's network namespace (ip netns).
	NS string
	// IPv4 and IPv6 are lan0's addresses; IPv6 is the zero Addr under
	// WithoutIPv6.
	IPv4, IPv6 netip.Addr
	// Port is the bridge-side end of the host's link, in the bridge
	// namespace.
	Port string

	lan   *LAN
	fault faultState // guarded by lan.faultMu
}

type faultState struct {
	cut, unplugged bool
	loss           int
	rate           string // tc rate, "" when unlimited
}

func (h *Host) chain() string { return "h" + strconv.Itoa(h.Index+1) }

// String returns the host's name.
func (h *Host) String() string { return h.Name }

// hostScript sets the hostname of the fresh UTS namespace and execs the
// program, so that the PID stays that of the program. It writes
// /proc/sys/kernel/hostname (per UTS namespace) instead of running
// hostname(1), which saves a fork.
const hostScript = `printf %s "$0" > /proc/sys/kernel/hostname && exec "$@"`

// Command returns an unstarted command that runs name with args on the
// host: in its network namespace and in a UTS namespace of its own whose
// hostname is h.Name, with EnvRequireIsolation=1 added to this process's
// environment (append to cmd.Env to add more). A name without a slash is
// looked up in PATH here, before the command is built. ip netns exec,
// unshare and sh all exec, so once started, cmd.Process.Pid is the PID of
// the program. The command has Pdeathsig SIGKILL set, which Linux ties to
// the starting OS thread: do not start it from a goroutine that locked its
// thread and then ends (Start and Run use a thread that never ends).
// Close does not stop such commands one by one, but like everything left
// in the host's namespace they are killed when the LAN closes.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return h.command(context.Background(), name, args...)
}

func (h *Host) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if !strings.Contains(name, "/") {
		if p, err := exec.LookPath(name); err == nil {
			name = p
		}
	}
	l := h.lan
	argv := append([]string{"netns", "exec", h.NS, l.tools.unshare, "--uts", "--", "sh", "-c", hostScript, h.Name, name}, args...)
	cmd := exec.CommandContext(ctx, l.tools.ip, argv...)
	cmd.Env = append(os.Environ(), EnvRequireIsolation+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Start starts a long-running program on the host. Its stdout and stderr
// go to files in the LAN's log directory, readable while it runs. Close
// stops it (SIGTERM, then SIGKILL), and it gets SIGKILL if this process
// dies.
func (h *Host) Start(name string, args ...string) (*Proc, error) {
	if !strings.Contains(name, "/") {
		if _, err := exec.LookPath(name); err != nil {
			return nil, fmt.Errorf("netlab: start %s on %s: %w", name, h.Name, err)
		}
	}
	return h.StartCommand(h.Command(name, args...))
}

// StartCommand is Start for a command made by h.Command and then adjusted
// (Env, Dir, Stdin). Stdout and Stderr are captured to files unless already
// set, in which case Proc.Stdout or Proc.Stderr returns "".
func (h *Host) StartCommand(cmd *exec.Cmd) (*Proc, error) {
	l := h.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	seq := len(l.procs) + 1
	base := fmt.Sprintf("%s-%d-%s", h.Name, seq, progName(cmd))
	p := &Proc{host: h, cmd: cmd, name: base, exited: make(chan struct{})}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close() // the child has its own copy
		}
	}()
	if cmd.Stdout == nil {
		p.stdoutPath = filepath.Join(l.dir, base+".stdout")
		f, err := os.Create(p.stdoutPath)
		if err != nil {
			return nil, fmt.Errorf("netlab: start %s on %s: %w", base, h.Name, err)
		}
		files = append(files, f)
		cmd.Stdout = f
	}
	if cmd.Stderr == nil {
		p.stderrPath = filepath.Join(l.dir, base+".stderr")
		f, err := os.Create(p.stderrPath)
		if err != nil {
			return nil, fmt.Errorf("netlab: start %s on %s: %w", base, h.Name, err)
		}
		files = append(files, f)
		cmd.Stderr = f
	}
	if err := startCmd(cmd); err != nil {
		return nil, fmt.Errorf("netlab: start %s on %s: %w", base, h.Name, err)
	}
	l.procs = append(l.procs, p)
	l.log.Debug("netlab: started", "host", h.Name, "proc", base, "pid", cmd.Process.Pid)
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// progName returns the base name of the program a host command runs.
func progName(cmd *exec.Cmd) string {
	// Args: ip netns exec NS unshare --uts -- sh -c SCRIPT NAME PROG ...
	if i := slices.Index(cmd.Args, hostScript); i >= 0 && i+2 < len(cmd.Args) {
		return filepath.Base(cmd.Args[i+2])
	}
	return filepath.Base(cmd.Path)
}

// CommandContext is Command with a context: the program is killed (SIGKILL)
// when ctx is done, as with exec.CommandContext.
func (h *Host) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return h.command(ctx, name, args...)
}

// Run runs a program on the host to completion and returns its output. The
// program is killed when ctx is done.
func (h *Host) Run(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error) {
	return h.RunCommand(h.command(ctx, name, args...))
}

// RunCommand is Run for a command made by h.Command or h.CommandContext and
// then adjusted (Env, Dir, Stdin). It sets Stdout and Stderr.
func (h *Host) RunCommand(cmd *exec.Cmd) (stdout, stderr []byte, err error) {
	if h.lan.isClosed() {
		return nil, nil, ErrClosed
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 2 * time.Second
	}
	name := progName(cmd)
	if err := startCmd(cmd); err != nil {
		return nil, nil, fmt.Errorf("netlab: run %s on %s: %w", name, h.Name, err)
	}
	if err := cmd.Wait(); err != nil {
		return out.Bytes(), errb.Bytes(), fmt.Errorf("netlab: run %s on %s: %w (stderr: %s)", name, h.Name, err, tail(strings.TrimSpace(errb.String()), 512))
	}
	return out.Bytes(), errb.Bytes(), nil
}

func (l *LAN) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Carrier reports whether the host's lan0 has carrier (false after Unplug).
func (h *Host) Carrier() (bool, error) {
	l := h.lan
	if l.isClosed() {
		return false, ErrClosed
	}
	out, err := exec.Command(l.tools.ip, "-n", h.NS, "-j", "link", "show", "dev", hostIface).Output()
	if err != nil {
		return false, fmt.Errorf("netlab: link state of %s: %w", h.Name, err)
	}
	var links []struct {
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return false, fmt.Errorf("netlab: link state of %s: unexpected output %q", h.Name, out)
	}
	return slices.Contains(links[0].Flags, "LOWER_UP") && !slices.Contains(links[0].Flags, "NO-CARRIER"), nil
}

// Cut silently drops every frame to and from the host at its bridge port;
// the host keeps its carrier and sees nothing wrong, as with a failed
// switch port or a firewall. Heal undoes it.
func (h *Host) Cut() error {
	return h.setFault(func(f *faultState) { f.cut = true })
}

// Unplug takes the host's bridge port down: the host sees NO-CARRIER on
// lan0, as with a pulled cable. Heal undoes it.
func (h *Host) Unplug() error {
	return h.setFault(func(f *faultState) { f.unplugged = true })
}

// Loss drops frames to and from the host at random with the given
// probability in percent (0..100), independently per frame and direction.
// Loss(0) removes it.
func (h *Host) Loss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("%w: loss %d%% (want 0..100)", ErrInvalid, percent)
	}
	return h.setFault(func(f *faultState) { f.loss = percent })
}

// Rate limits the host's traffic in each direction to rate with a token
// bucket (tc tbf: 400 ms of queue, the rest is dropped). rate is a number
// with a tc unit: bit, kbit, mbit, gbit (bits per second) or bps, kbps,
// mbps, gbps (bytes per second), e.g. "1mbit"; from 8kbit to 100gbit.
// Traffic to the host is shaped at its bridge port; traffic from it at
// lan0 inside the host (there is no other egress to shape without an ifb
// device).
func (h *Host) Rate(rate string) error {
	bits, err := parseRate(rate)
	if err != nil {
		return err
	}
	return h.setFault(func(f *faultState) { f.rate = strconv.FormatUint(bits, 10) + "bit" })
}

// Heal undoes Cut, Unplug, Loss and Rate.
func (h *Host) Heal() error {
	return h.setFault(func(f *faultState) { *f = faultState{} })
}

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$`)

func parseRate(s string) (uint64, error) {
	m := rateRE.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return 0, fmt.Errorf("%w: rate %q (want e.g. 1mbit, 500kbit, 2mbps)", ErrInvalid, s)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%w: rate %q: %v", ErrInvalid, s, err)
	}
	mult := map[string]float64{
		"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
		"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,
	}[m[2]]
	bits := v * mult
	if bits < 8e3 || bits > 100e9 {
		return 0, fmt.Errorf("%w: rate %q out of range 8kbit..100gbit", ErrInvalid, s)
	}
	return uint64(bits), nil
}

// setFault changes the host's fault state and applies the difference.
func (h *Host) setFault(change func(*faultState)) error {
	l := h.lan
	l.faultMu.Lock()
	defer l.faultMu.Unlock()
	if l.isClosed() {
		return ErrClosed
	}
	old := h.fault
	next := old
	change(&next)

	// nftables: the port's chain holds at most one rule.
	if next.cut != old.cut || next.loss != old.loss {
		script := fmt.Sprintf("flush chain bridge %s %s\n", nftTable, h.chain())
		switch {
		case next.cut || next.loss == 100: // numgen's "< 100" is out of range
			script += fmt.Sprintf("add rule bridge %s %s drop\n", nftTable, h.chain())
		case next.loss > 0:
			script += fmt.Sprintf("add rule bridge %s %s numgen random mod 100 < %d drop\n", nftTable, h.chain(), next.loss)
		}
		if err := l.nft(script); err != nil {
			return err
		}
		h.fault.cut, h.fault.loss = next.cut, next.loss
	}
	if next.unplugged != old.unplugged {
		state := "up"
		if next.unplugged {
			state = "down"
		}
		if err := l.ipBatch(l.brNS, fmt.Sprintf("link set %s %s\n", h.Port, state)); err != nil {
			return err
		}
		h.fault.unplugged = next.unplugged
	}
	if next.rate != old.rate {
		for _, side := range []struct{ ns, dev string }{{l.brNS, h.Port}, {h.NS, hostIface}} {
			var args []string
			if next.rate == "" {
				args = []string{"-n", side.ns, "qdisc", "del", "dev", side.dev, "root"}
			} else {
				bits, _ := strconv.ParseUint(strings.TrimSuffix(next.rate, "bit"), 10, 64)
				// Burst: 20 ms worth, at least 4 KiB (tbf needs a burst of
				// at least rate/HZ and one MTU).
				burst := max(bits/8/50, 4096)
				args = []string{"-n", side.ns, "qdisc", "replace", "dev", side.dev, "root", "tbf",
					"rate", next.rate, "burst", strconv.FormatUint(burst, 10), "latency", "400ms"}
			}
			if err := l.run("", l.tools.tc, args...); err != nil {
				return err
			}
		}
		h.fault.rate = next.rate
	}
	return nil
}
