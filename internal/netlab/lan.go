package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

var (
	// ErrClosed is returned by methods of a LAN (and its hosts) after Close.
	ErrClosed = errors.New("netlab: LAN is closed")
	// ErrInvalid is wrapped by errors about bad arguments and options.
	ErrInvalid = errors.New("netlab: invalid argument")
	// ErrUnavailable is wrapped by errors saying the harness cannot run here
	// (not root, a tool missing).
	ErrUnavailable = errors.New("netlab: harness unavailable")
)

// MaxHosts is the largest number of hosts a LAN can hold; it keeps the
// bridge-side interface names within the kernel's 15 characters.
const MaxHosts = 1000

// Default address plan. Separate LANs are separate namespaces, so they may
// (and by default do) use the same addresses.
var (
	// DefaultIPv4Prefix is the IPv4 subnet of a LAN unless WithIPv4Prefix.
	DefaultIPv4Prefix = netip.MustParsePrefix("10.77.0.0/16")
	// DefaultIPv6Prefix is the IPv6 ULA subnet of a LAN unless WithIPv6Prefix.
	DefaultIPv6Prefix = netip.MustParsePrefix("fd00:6e62::/64")
)

// Names used inside the namespaces.
const (
	bridgeName = "nbr0"
	hostIface  = "lan0"
	nftTable   = "nb"
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/run/netns"

type config struct {
	v4        netip.Prefix
	v6        netip.Prefix
	noIPv6    bool
	logger    *slog.Logger
	logDir    string
	stopGrace time.Duration
}

// Option configures Create and New.
type Option func(*config)

// WithoutIPv6 disables IPv6 in every host: lan0 gets only an IPv4 address
// and Host.IPv6 is the zero Addr.
func WithoutIPv6() Option { return func(c *config) { c.noIPv6 = true } }

// WithIPv4Prefix sets the IPv4 subnet; host i gets its (i+1)-th address.
// It must be an IPv4 prefix with room for every host.
func WithIPv4Prefix(p netip.Prefix) Option { return func(c *config) { c.v4 = p } }

// WithIPv6Prefix sets the IPv6 subnet (a /64 ULA by default); host i gets
// its (i+1)-th address.
func WithIPv6Prefix(p netip.Prefix) Option { return func(c *config) { c.v6 = p } }

// WithLogger sets the logger for the commands the harness runs (at Debug).
// The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithLogDir keeps the captured output of started processes in dir (created
// if needed) instead of a temporary directory that Close removes.
func WithLogDir(dir string) Option { return func(c *config) { c.logDir = dir } }

// WithStopGrace sets how long Close waits after SIGTERM before it sends
// SIGKILL to each process the LAN started. The default is 2 s.
func WithStopGrace(d time.Duration) Option { return func(c *config) { c.stopGrace = d } }

// LAN is a running virtual LAN. Its methods are safe for concurrent use.
type LAN struct {
	rid    string
	cfg    config
	log    *slog.Logger
	tools  tools
	brNS   string
	dir    string
	keep   bool
	lockFD *os.File

	mu     sync.Mutex // guards hosts, procs, closed
	hosts  []*Host
	procs  []*Proc
	closed bool

	faultMu sync.Mutex // serialises fault changes (Host.fault)

	closeOnce    sync.Once
	closeErr     error
	beforeRemove func() // New: dump logs of a failed test before the log dir goes
}

// Create builds a LAN of n hosts (1 <= n <= MaxHosts). Close removes
// everything it created; on error nothing is left behind.
func Create(n int, opts ...Option) (*LAN, error) {
	cfg := config{
		v4:        DefaultIPv4Prefix,
		v6:        DefaultIPv6Prefix,
		logger:    slog.Default(),
		stopGrace: 2 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if n < 1 || n > MaxHosts {
		return nil, fmt.Errorf("%w: %d hosts (want 1..%d)", ErrInvalid, n, MaxHosts)
	}
	if err := cfg.verify(n); err != nil {
		return nil, err
	}
	tl, err := lookTools()
	if err != nil {
		return nil, err
	}
	l := &LAN{cfg: cfg, log: cfg.logger, tools: tl}
	if err := l.reserve(); err != nil {
		return nil, err
	}
	if cfg.logDir != "" {
		if err := os.MkdirAll(cfg.logDir, 0o755); err != nil {
			l.Close()
			return nil, fmt.Errorf("netlab: log dir: %w", err)
		}
		l.dir, l.keep = cfg.logDir, true
	} else {
		dir, err := os.MkdirTemp("", "netlab-"+l.rid+"-")
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("netlab: log dir: %w", err)
		}
		l.dir = dir
	}
	start := time.Now()
	if err := l.setupBridge(); err != nil {
		l.Close()
		return nil, err
	}
	if _, err := l.addHosts(n); err != nil {
		l.Close()
		return nil, err
	}
	l.log.Debug("netlab: LAN up", "lan", l.rid, "hosts", n, "took", time.Since(start))
	return l, nil
}

func (c *config) verify(n int) error {
	if !c.v4.IsValid() || !c.v4.Addr().Is4() {
		return fmt.Errorf("%w: IPv4 prefix %v", ErrInvalid, c.v4)
	}
	if room := 32 - c.v4.Bits(); room < 2 || (room < 31 && 1<<room-2 < n) {
		return fmt.Errorf("%w: IPv4 prefix %v has no room for %d hosts", ErrInvalid, c.v4, n)
	}
	if !c.noIPv6 {
		if !c.v6.IsValid() || !c.v6.Addr().Is6() || c.v6.Addr().Is4In6() {
			return fmt.Errorf("%w: IPv6 prefix %v", ErrInvalid, c.v6)
		}
		if room := 128 - c.v6.Bits(); room < 2 || (room < 31 && 1<<room-2 < n) {
			return fmt.Errorf("%w: IPv6 prefix %v has no room for %d hosts", ErrInvalid, c.v6, n)
		}
	}
	if c.stopGrace < 0 {
		return fmt.Errorf("%w: negative stop grace %v", ErrInvalid, c.stopGrace)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return nil
}

// reserve picks a run id nobody uses and takes its lock (see Sweep).
func (l *LAN) reserve() error {
	for range 20 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("netlab: run id: %w", err)
		}
		rid := hex.EncodeToString(b[:])
		if _, err := os.Stat(filepath.Join(netnsDir, "nb"+rid+"-br")); err == nil {
			continue
		}
		f, err := lockRun(rid)
		if errors.Is(err, errLocked) {
			continue
		}
		if err != nil {
			return err
		}
		l.rid, l.lockFD = rid, f
		l.brNS = "nb" + rid + "-br"
		return nil
	}
	return errors.New("netlab: no free run id after 20 tries")
}

// ID returns the LAN's random run id, part of every name it creates.
func (l *LAN) ID() string { return l.rid }

// BridgeNS returns the name of the namespace holding the bridge.
func (l *LAN) BridgeNS() string { return l.brNS }

// LogDir returns the directory holding the captured output of started
// processes.
func (l *LAN) LogDir() string { return l.dir }

// Hosts returns the hosts in index order.
func (l *LAN) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Host returns host i (0-based); it panics if i is out of range, like an
// index expression.
func (l *LAN) Host(i int) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 0 || i >= len(l.hosts) {
		panic(fmt.Sprintf("netlab: host %d out of range (LAN has %d)", i, len(l.hosts)))
	}
	return l.hosts[i]
}

// AddHost adds one host to a running LAN.
func (l *LAN) AddHost() (*Host, error) {
	hs, err := l.addHosts(1)
	if err != nil {
		return nil, err
	}
	return hs[0], nil
}

func (l *LAN) setupBridge() error {
	if err := l.ipBatch("", "netns add "+l.brNS+"\n"); err != nil {
		return err
	}
	if err := setSysctls([]string{l.brNS}, bridgeSysctls); err != nil {
		return err
	}
	batch := fmt.Sprintf("link set lo up\nlink add %s type bridge stp_state 0 forward_delay 0 mcast_snooping 0\nlink set %s up\n", bridgeName, bridgeName)
	if err := l.ipBatch(l.brNS, batch); err != nil {
		return err
	}
	// The per-port chains jump from a verdict map keyed by interface name,
	// so adding a host is adding a map element, and a packet pays one
	// lookup per direction however many hosts there are.
	nft := fmt.Sprintf(`table bridge %[1]s {
	map ports { type ifname : verdict; }
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname vmap @ports
		oifname vmap @ports
	}
}
`, nftTable)
	return l.nft(nft)
}

// addHosts creates k more hosts: their namespaces, veth pairs, addresses
// and nftables chains, with a fixed number of forks per batch.
func (l *LAN) addHosts(k int) ([]*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	first := len(l.hosts)
	if first+k > MaxHosts {
		return nil, fmt.Errorf("%w: LAN would have %d hosts (max %d)", ErrInvalid, first+k, MaxHosts)
	}
	hs := make([]*Host, k)
	var nsAdd strings.Builder
	names := make([]string, k)
	for j := range hs {
		i := first + j
		h := &Host{
			Index: i,
			Name:  fmt.Sprintf("h%d", i+1),
			NS:    fmt.Sprintf("nb%s-h%d", l.rid, i+1),
			Port:  fmt.Sprintf("nbv%sh%d", l.rid, i+1),
			lan:   l,
		}
		var ok bool
		if h.IPv4, ok = nthAddr(l.cfg.v4, i+1); !ok {
			return nil, fmt.Errorf("%w: IPv4 prefix %v has no room for host %d", ErrInvalid, l.cfg.v4, i+1)
		}
		if !l.cfg.noIPv6 {
			if h.IPv6, ok = nthAddr(l.cfg.v6, i+1); !ok {
				return nil, fmt.Errorf("%w: IPv6 prefix %v has no room for host %d", ErrInvalid, l.cfg.v6, i+1)
			}
		}
		hs[j] = h
		names[j] = h.NS
		fmt.Fprintf(&nsAdd, "netns add %s\n", h.NS)
	}
	if err := l.setupHosts(hs, names, nsAdd.String()); err != nil {
		// Undo the half-built hosts so that the LAN stays consistent (and
		// a later AddHost can reuse the names).
		_ = l.deleteNamespaces(names)
		var undo strings.Builder
		for _, h := range hs {
			fmt.Fprintf(&undo, "delete element bridge %s ports { %q }\n", nftTable, h.Port)
			fmt.Fprintf(&undo, "delete chain bridge %s %s\n", nftTable, h.chain())
		}
		_ = l.nft(undo.String())
		return nil, err
	}
	l.hosts = append(l.hosts, hs...)
	return hs, nil
}

func (l *LAN) setupHosts(hs []*Host, names []string, nsAdd string) error {
	if err := l.ipBatch("", nsAdd); err != nil {
		return err
	}
	sysctls := hostSysctls
	if l.cfg.noIPv6 {
		sysctls = hostSysctlsNoIPv6
	}
	if err := setSysctls(names, sysctls); err != nil {
		return err
	}
	var br strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&br, "link add %s type veth peer name %s netns %s\n", h.Port, hostIface, h.NS)
		fmt.Fprintf(&br, "link set %s master %s up\n", h.Port, bridgeName)
	}
	if err := l.ipBatch(l.brNS, br.String()); err != nil {
		return err
	}
	var nft strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&nft, "add chain bridge %s %s\n", nftTable, h.chain())
		fmt.Fprintf(&nft, "add element bridge %s ports { %q : jump %s }\n", nftTable, h.Port, h.chain())
	}
	errc := make(chan error, 1)
	go func() { errc <- l.nft(nft.String()) }()
	err := parallel(len(hs), 4, func(j int) error {
		h := hs[j]
		b := "link set lo up\n"
		b += fmt.Sprintf("addr add %s/%d dev %s\n", h.IPv4, l.cfg.v4.Bits(), hostIface)
		if h.IPv6.IsValid() {
			b += fmt.Sprintf("addr add %s/%d dev %s nodad\n", h.IPv6, l.cfg.v6.Bits(), hostIface)
		}
		b += fmt.Sprintf("link set %s up\n", hostIface)
		b += fmt.Sprintf("route replace 224.0.0.0/4 dev %s\n", hostIface)
		return l.ipBatch(h.NS, b)
	})
	if nerr := <-errc; err == nil {
		err = nerr
	}
	return err
}

// nthAddr returns the n-th address after p's network address, or false if
// it falls outside p (or is the IPv4 broadcast address).
func nthAddr(p netip.Prefix, n int) (netip.Addr, bool) {
	p = p.Masked()
	b := p.Addr().As16()
	carry := uint64(n)
	for i := 15; i >= 0 && carry > 0; i-- {
		s := uint64(b[i]) + carry
		b[i] = byte(s)
		carry = s >> 8
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	if carry > 0 || !p.Contains(a) {
		return netip.Addr{}, false
	}
	if a.Is4() && p.Bits() < 31 {
		bc := a.As4()
		host := ^uint32(0) >> p.Bits()
		if (uint32(bc[0])<<24|uint32(bc[1])<<16|uint32(bc[2])<<8|uint32(bc[3]))&host == host {
			return netip.Addr{}, false
		}
	}
	return a, true
}

// Close stops every process the LAN started (SIGTERM, then SIGKILL after
// the stop grace), kills whatever else still runs in its namespaces,
// deletes the namespaces and, unless WithLogDir, the log directory. Calling
// Close again returns the first result.
func (l *LAN) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *LAN) close() error {
	l.mu.Lock()
	l.closed = true
	procs := append([]*Proc(nil), l.procs...)
	hosts := append([]*Host(nil), l.hosts...)
	l.mu.Unlock()

	stopErrs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { stopErrs[i] = p.Stop(l.cfg.stopGrace) })
	}
	wg.Wait()
	errs := []error{errors.Join(stopErrs...)}

	var namespaces []string
	if l.brNS != "" {
		namespaces = append(namespaces, l.brNS)
	}
	for _, h := range hosts {
		namespaces = append(namespaces, h.NS)
	}
	if err := killNamespaces(namespaces, l.log); err != nil {
		errs = append(errs, err)
	}
	if l.beforeRemove != nil {
		l.beforeRemove()
	}
	if err := l.deleteNamespaces(namespaces); err != nil {
		errs = append(errs, err)
	}
	if l.dir != "" && !l.keep {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("netlab: remove log dir: %w", err))
		}
	}
	if l.lockFD != nil {
		unlockRun(l.rid, l.lockFD)
	}
	l.log.Debug("netlab: LAN closed", "lan", l.rid, "err", errors.Join(errs...))
	return errors.Join(errs...)
}

// deleteNamespaces deletes those of names that exist, in one batch.
func (l *LAN) deleteNamespaces(names []string) error {
	var b strings.Builder
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			fmt.Fprintf(&b, "netns del %s\n", ns)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return l.ipBatch("", b.String())
}

// ipBatch runs `ip [-n ns] -batch -` with batch on stdin.
func (l *LAN) ipBatch(ns, batch string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return l.run(batch, l.tools.ip, args...)
}

// nft runs an nftables script in the bridge namespace.
func (l *LAN) nft(script string) error {
	return l.run(script, l.tools.ip, "netns", "exec", l.brNS, l.tools.nft, "-f", "-")
}

// run runs a setup command to completion (bounded) with stdin.
func (l *LAN) run(stdin, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	l.log.Debug("netlab: ran", "lan", l.rid, "cmd", cmd.String(), "took", time.Since(start), "err", err)
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if stdin != "" {
			msg += "\ninput:\n" + stdin
		}
		return fmt.Errorf("netlab: %s: %w: %s", strings.Join(cmd.Args, " "), err, msg)
	}
	return nil
}

// parallel runs f(0..n-1) with at most width at once and returns the
// first error.
func parallel(n, width int, f func(int) error) error {
	sem := make(chan struct{}, width)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
