package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPing(t *testing.T) {
	lan := New(t, 3)
	for _, h := range lan.Hosts() {
		var dsts []string
		for _, o := range lan.Hosts() {
			if o != h {
				dsts = append(dsts, o.IPv4.String(), o.IPv6.String())
			}
		}
		out := runHelper(t, h, append([]string{"ping"}, dsts...)...)
		if got := strings.Count(out, "reply from"); got != len(dsts) {
			t.Errorf("%s: %d replies, want %d:\n%s", h.Name, got, len(dsts), out)
		}
	}
}

// recordTB records what Require does instead of ending the test.
type recordTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recordTB) Helper()               {}
func (r *recordTB) Skip(...any)           { r.skipped = true }
func (r *recordTB) Skipf(string, ...any)  { r.skipped = true }
func (r *recordTB) Fatal(...any)          { r.failed = true }
func (r *recordTB) Fatalf(string, ...any) { r.failed = true }

func TestRequireFailsInCI(t *testing.T) {
	old := available
	defer func() { available = old }()
	for _, tt := range []struct {
		name       string
		err        error
		ci         string
		skip, fail bool
	}{
		{"available", nil, "true", false, false},
		{"unavailable", fmt.Errorf("%w: test", ErrUnavailable), "", true, false},
		{"unavailable, CI", fmt.Errorf("%w: test", ErrUnavailable), "true", false, true},
		{"unavailable, CI=false", fmt.Errorf("%w: test", ErrUnavailable), "false", true, false},
	} {
		t.Setenv(EnvCI, tt.ci)
		available = func() error { return tt.err }
		r := &recordTB{TB: t}
		Require(r)
		if r.skipped != tt.skip || r.failed != tt.fail {
			t.Errorf("%s: skipped %v failed %v, want %v %v", tt.name, r.skipped, r.failed, tt.skip, tt.fail)
		}
	}
}

// sysctlOf reads a sysctl of the namespace this test runs in.
func sysctlOf(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestAddresses(t *testing.T) {
	// Setting up the LAN changes sysctls only inside its namespaces.
	keys := []string{"net/ipv6/conf/default/accept_dad", "net/ipv6/conf/all/disable_ipv6", "net/ipv4/conf/all/rp_filter"}
	var before []string
	for _, k := range keys {
		before = append(before, sysctlOf(t, k))
	}
	lan := New(t, 3)
	for i, k := range keys {
		if got := sysctlOf(t, k); got != before[i] {
			t.Errorf("%s changed in the caller's namespace: %s -> %s", k, before[i], got)
		}
	}
	for i, h := range lan.Hosts() {
		if h.Index != i || h.Name != fmt.Sprintf("h%d", i+1) {
			t.Errorf("host %d: Index %d Name %q", i, h.Index, h.Name)
		}
		if want := netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)}); h.IPv4 != want {
			t.Errorf("%s: IPv4 %v, want %v", h.Name, h.IPv4, want)
		}
		if want := netip.MustParseAddr(fmt.Sprintf("fd00:6e62::%d", i+1)); h.IPv6 != want {
			t.Errorf("%s: IPv6 %v, want %v", h.Name, h.IPv6, want)
		}
		if lan.Host(i) != h {
			t.Errorf("Host(%d) != Hosts()[%d]", i, i)
		}
		// Only harness interfaces are visible, and the IPv6 address is
		// usable at once (no DAD).
		out, _, err := h.Run(context.Background(), "ip", "-o", "addr", "show")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) < 2 || (f[1] != "lo" && f[1] != "lan0") {
				t.Errorf("%s: unexpected interface: %s", h.Name, line)
			}
			if strings.Contains(line, "tentative") {
				t.Errorf("%s: tentative address: %s", h.Name, line)
			}
		}
		if !strings.Contains(string(out), h.IPv6.String()+"/64") {
			t.Errorf("%s: %v missing:\n%s", h.Name, h.IPv6, out)
		}
	}
}

func TestWithoutIPv6(t *testing.T) {
	lan := New(t, 2, WithoutIPv6(), WithIPv4Prefix(netip.MustParsePrefix("192.168.7.0/24")))
	h := lan.Host(1)
	if h.IPv6.IsValid() {
		t.Errorf("IPv6 = %v, want none", h.IPv6)
	}
	if h.IPv4 != netip.MustParseAddr("192.168.7.2") {
		t.Errorf("IPv4 = %v", h.IPv4)
	}
	out, _, err := h.Run(context.Background(), "ip", "-6", "-o", "addr", "show", "dev", "lan0")
	if err != nil {
		t.Fatal(err)
	}
	if len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("lan0 has IPv6 addresses:\n%s", out)
	}
	runHelper(t, lan.Host(0), "ping", h.IPv4.String())
}

func TestMulticast(t *testing.T) {
	lan := New(t, 3)
	for _, group := range []string{"224.0.0.251", "ff02::fb"} {
		t.Run(group, func(t *testing.T) {
			var recvs []*Proc
			for _, h := range lan.Hosts()[1:] {
				recvs = append(recvs, startHelper(t, h, "mrecv", group, "5353"))
			}
			payload := "hello-from-h1-" + group
			runHelper(t, lan.Host(0), "msend", group, "5353", payload)
			for _, p := range recvs {
				out := waitExit(t, p)
				if !strings.Contains(out, "data="+payload) {
					t.Errorf("%s got %q, want %q", p.Name(), out, payload)
				}
				if group == "224.0.0.251" && !strings.Contains(out, "from="+lan.Host(0).IPv4.String()+" ") {
					t.Errorf("%s: source is not h1: %q", p.Name(), out)
				}
			}
		})
	}
}

func TestHostnames(t *testing.T) {
	before, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	lan := New(t, 3)
	seen := map[string]bool{}
	for _, h := range lan.Hosts() {
		got := strings.TrimSpace(runHelper(t, h, "hostname"))
		if got != h.Name {
			t.Errorf("%s: os.Hostname() = %q", h.Name, got)
		}
		if seen[got] {
			t.Errorf("hostname %q twice", got)
		}
		seen[got] = true
	}
	if after, _ := os.Hostname(); after != before {
		t.Errorf("the test's own hostname changed: %q -> %q", before, after)
	}
}

func TestEnvironmentAndPID(t *testing.T) {
	lan := New(t, 1)
	h := lan.Host(0)
	out, _, err := h.Run(context.Background(), "sh", "-c", `echo "$NEARBY_REQUIRE_ISOLATION $$"`)
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(out)); len(f) != 2 || f[0] != "1" {
		t.Errorf("output %q: want NEARBY_REQUIRE_ISOLATION=1", out)
	}
	// The PID of a started process is that of the program, in the host's
	// namespace.
	p, err := h.Start("sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	// ip, unshare and sh exec one another: the PID runs sleep once they
	// are through.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID()))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(exe) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d runs %s, want sleep", p.PID(), exe)
		}
	}
	nsOfProc, err1 := statNS(fmt.Sprintf("/proc/%d/ns/net", p.PID()))
	nsOfHost, err2 := statNS(filepath.Join(netnsDir, h.NS))
	if err := errors.Join(err1, err2); err != nil || nsOfProc != nsOfHost {
		t.Errorf("process not in the host's namespace (%v)", err)
	}
	// Run kills the program when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := h.Run(ctx, "sleep", "600"); err == nil {
		t.Error("Run of sleep 600 with an ending context: no error")
	}
	if _, err := h.Start("no-such-program-netlab"); err == nil {
		t.Error("Start of a missing program: no error")
	}
}

// delivered counts how many of n datagrams of size bytes sent from src to
// dst arrive while fault is in place on faulty. The link is warmed up
// first (ARP), faulty is healed before the count is collected, and the
// "fin" that ends the count travels after every datagram.
func delivered(t *testing.T, src, dst, faulty *Host, n, size, burst int, fault func() error) int {
	t.Helper()
	const port = "9000"
	recv := startHelper(t, dst, "urecv", port)
	runHelper(t, src, "uctl", dst.IPv4.String(), port, "hello")
	if err := fault(); err != nil {
		t.Fatal(err)
	}
	runHelper(t, src, "usend", dst.IPv4.String(), port, strconv.Itoa(n), strconv.Itoa(size), strconv.Itoa(burst))
	if err := faulty.Heal(); err != nil {
		t.Fatal(err)
	}
	runHelper(t, src, "uctl", dst.IPv4.String(), port, "fin")
	out := waitExit(t, recv)
	_, after, _ := strings.Cut(out, "count=")
	count, err := strconv.Atoi(strings.TrimSpace(after))
	if err != nil {
		t.Fatalf("receiver output %q", out)
	}
	t.Logf("%s -> %s: %d of %d delivered", src.Name, dst.Name, count, n)
	return count
}

func noFault() error { return nil }

func TestCutAndHeal(t *testing.T) {
	lan := New(t, 2)
	h1, h2 := lan.Host(0), lan.Host(1)
	const n = 200
	cut := func() error {
		if err := h1.Cut(); err != nil {
			return err
		}
		if up, err := h1.Carrier(); err != nil || !up {
			return fmt.Errorf("after Cut: carrier %v, %v; want carrier", up, err)
		}
		return nil
	}
	if got := delivered(t, h1, h2, h1, n, 100, 50, cut); got != 0 {
		t.Errorf("cut, from the cut host: %d delivered, want 0", got)
	}
	if got := delivered(t, h2, h1, h1, n, 100, 50, cut); got != 0 {
		t.Errorf("cut, to the cut host: %d delivered, want 0", got)
	}
	if got := delivered(t, h1, h2, h1, n, 100, 50, noFault); got < n*9/10 {
		t.Errorf("healed: %d of %d delivered", got, n)
	}
	// Heal twice, Heal without a fault: no error.
	if err := errors.Join(h1.Heal(), h1.Heal(), h2.Heal()); err != nil {
		t.Error(err)
	}
}

func TestUnplug(t *testing.T) {
	lan := New(t, 2)
	h1, h2 := lan.Host(0), lan.Host(1)
	unplug := func() error {
		if err := h2.Unplug(); err != nil {
			return err
		}
		if up, err := h2.Carrier(); err != nil || up {
			return fmt.Errorf("after Unplug: carrier %v, %v; want NO-CARRIER", up, err)
		}
		out, _, err := h2.Run(context.Background(), "ip", "-o", "link", "show", "dev", "lan0")
		if err != nil || !strings.Contains(string(out), "NO-CARRIER") {
			return fmt.Errorf("after Unplug: %q, %v; want NO-CARRIER", out, err)
		}
		return nil
	}
	if got := delivered(t, h1, h2, h2, 100, 100, 50, unplug); got != 0 {
		t.Errorf("unplugged: %d delivered, want 0", got)
	}
	if up, err := h2.Carrier(); err != nil || !up {
		t.Errorf("after Heal: carrier %v, %v", up, err)
	}
	if got := delivered(t, h2, h1, h2, 100, 100, 50, noFault); got < 90 {
		t.Errorf("replugged: %d of 100 delivered", got)
	}
}

func TestLoss(t *testing.T) {
	lan := New(t, 2)
	h1, h2 := lan.Host(0), lan.Host(1)
	const n = 1000
	if got := delivered(t, h1, h2, h1, n, 64, 50, func() error { return h1.Loss(100) }); got != 0 {
		t.Errorf("Loss(100): %d delivered, want 0", got)
	}
	// 30% loss: 700 expected, standard deviation about 15. The bounds are
	// generous: more than 10 standard deviations either way.
	if got := delivered(t, h1, h2, h1, n, 64, 50, func() error { return h1.Loss(30) }); got < 400 || got > 900 {
		t.Errorf("Loss(30): %d of %d delivered, want about 700", got, n)
	}
	// Loss applies to traffic towards the host too.
	if got := delivered(t, h2, h1, h1, n, 64, 50, func() error { return h1.Loss(30) }); got < 400 || got > 900 {
		t.Errorf("Loss(30), towards the host: %d of %d delivered, want about 700", got, n)
	}
	if got := delivered(t, h1, h2, h1, n, 64, 50, func() error { return h1.Loss(0) }); got < n*9/10 {
		t.Errorf("Loss(0): %d of %d delivered", got, n)
	}
}

func TestRate(t *testing.T) {
	lan := New(t, 2)
	h1, h2 := lan.Host(0), lan.Host(1)
	// 400 datagrams of 1200 bytes sent at once: at 1 Mbit/s the token
	// bucket holds 400 ms of traffic (50 kB, ~40 datagrams) and drops the
	// rest; without a limit nearly all arrive.
	const n, size = 400, 1200
	limit := func() error { return h1.Rate("1mbit") }
	if got := delivered(t, h1, h2, h1, n, size, 0, limit); got >= n/2 {
		t.Errorf("Rate(1mbit), from the host: %d of %d delivered, want far fewer", got, n)
	}
	if got := delivered(t, h2, h1, h1, n, size, 0, limit); got >= n/2 {
		t.Errorf("Rate(1mbit), to the host: %d of %d delivered, want far fewer", got, n)
	}
	if got := delivered(t, h1, h2, h1, n, size, 0, noFault); got < n*3/4 {
		t.Errorf("no rate limit: %d of %d delivered", got, n)
	}
}

func TestInvalidArguments(t *testing.T) {
	h := &Host{} // argument checks come before any use of the LAN
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"Loss(-1)", h.Loss(-1)},
		{"Loss(101)", h.Loss(101)},
		{`Rate("")`, h.Rate("")},
		{`Rate("fast")`, h.Rate("fast")},
		{`Rate("1")`, h.Rate("1")},
		{`Rate("1kbit")`, h.Rate("1kbit")},
		{`Rate("1tbit")`, h.Rate("1tbit")},
		{`Rate("1mbit; rm")`, h.Rate("1mbit; rm")},
	} {
		if !errors.Is(tt.err, ErrInvalid) {
			t.Errorf("%s = %v, want ErrInvalid", tt.name, tt.err)
		}
	}
	for _, tt := range []struct {
		name string
		n    int
		opts []Option
	}{
		{"zero hosts", 0, nil},
		{"too many hosts", MaxHosts + 1, nil},
		{"IPv6 as IPv4 prefix", 2, []Option{WithIPv4Prefix(netip.MustParsePrefix("fd00::/64"))}},
		{"IPv4 as IPv6 prefix", 2, []Option{WithIPv6Prefix(netip.MustParsePrefix("10.0.0.0/8"))}},
		{"no room", 3, []Option{WithIPv4Prefix(netip.MustParsePrefix("10.0.0.0/30"))}},
		{"zero prefix", 2, []Option{WithIPv4Prefix(netip.Prefix{})}},
		{"negative grace", 2, []Option{WithStopGrace(-time.Second)}},
	} {
		if l, err := Create(tt.n, tt.opts...); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create %s: %v, want ErrInvalid", tt.name, err)
			if l != nil {
				l.Close()
			}
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
	}{
		{"1mbit", 1e6}, {"1Mbit", 1e6}, {"500kbit", 5e5}, {"2mbps", 16e6}, {"1.5gbit", 15e8}, {"8000bit", 8000}, {"1kbps", 8000},
	} {
		if got, err := parseRate(tt.in); err != nil || got != tt.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestNthAddr(t *testing.T) {
	for _, tt := range []struct {
		prefix string
		n      int
		want   string // "" = none
	}{
		{"10.77.0.0/16", 1, "10.77.0.1"},
		{"10.77.0.0/16", 256, "10.77.1.0"},
		{"10.77.0.0/16", 65534, "10.77.255.254"},
		{"10.77.0.0/16", 65535, ""}, // broadcast
		{"10.77.0.0/16", 65536, ""},
		{"10.77.3.9/24", 2, "10.77.3.2"},
		{"192.168.0.0/31", 1, "192.168.0.1"},
		{"fd00:6e62::/64", 1, "fd00:6e62::1"},
		{"fd00:6e62::/64", 1000, "fd00:6e62::3e8"},
		{"fd00::/126", 4, ""},
	} {
		got, ok := nthAddr(netip.MustParsePrefix(tt.prefix), tt.n)
		if (tt.want == "" && ok) || (tt.want != "" && (!ok || got.String() != tt.want)) {
			t.Errorf("nthAddr(%s, %d) = %v, %v; want %q", tt.prefix, tt.n, got, ok, tt.want)
		}
	}
}

func TestTwoLANs(t *testing.T) {
	a, b := New(t, 2), New(t, 2)
	if a.ID() == b.ID() || a.Host(0).NS == b.Host(0).NS || a.Host(0).Port == b.Host(0).Port {
		t.Fatalf("names collide: %s/%s %s/%s", a.ID(), b.ID(), a.Host(0).NS, b.Host(0).NS)
	}
	// Same addresses, separate wires: a multicast on LAN a reaches a's
	// receiver and not b's. b's receiver prints the first datagram it
	// gets; b's own datagram is sent after a's has arrived in a, so had
	// a's crossed over, b would have printed it instead.
	ra := startHelper(t, a.Host(1), "mrecv", "224.0.0.251", "5353")
	rb := startHelper(t, b.Host(1), "mrecv", "224.0.0.251", "5353")
	runHelper(t, a.Host(0), "msend", "224.0.0.251", "5353", "lan-a")
	if out := waitExit(t, ra); !strings.Contains(out, "data=lan-a") {
		t.Errorf("LAN a receiver got %q", out)
	}
	runHelper(t, b.Host(0), "msend", "224.0.0.251", "5353", "lan-b")
	if out := waitExit(t, rb); !strings.Contains(out, "data=lan-b") {
		t.Errorf("LAN b receiver got %q, want only LAN b's datagram", out)
	}
}

func TestAddHost(t *testing.T) {
	lan := New(t, 2)
	// A failed AddHost leaves the LAN as it was: occupy h3's namespace
	// name so that creating it fails.
	squat := fmt.Sprintf("nb%s-h3", lan.ID())
	if out, err := exec.Command(lan.tools.ip, "netns", "add", squat).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := lan.AddHost(); err == nil || !strings.Contains(err.Error(), squat) {
		t.Fatalf("AddHost over an existing namespace: %v", err)
	}
	if len(lan.Hosts()) != 2 {
		t.Fatalf("%d hosts after a failed AddHost", len(lan.Hosts()))
	}
	h, err := lan.AddHost()
	if err != nil {
		t.Fatal(err)
	}
	if h.Index != 2 || h.Name != "h3" || h.IPv4 != netip.MustParseAddr("10.77.0.3") || len(lan.Hosts()) != 3 || lan.Host(2) != h {
		t.Fatalf("new host %+v, %d hosts", h, len(lan.Hosts()))
	}
	runHelper(t, h, "ping", lan.Host(0).IPv4.String(), lan.Host(0).IPv6.String())
	runHelper(t, lan.Host(1), "ping", h.IPv4.String(), h.IPv6.String())
	if err := h.Cut(); err != nil { // the new host's port has its fault chain
		t.Fatal(err)
	}
	if err := h.Heal(); err != nil {
		t.Fatal(err)
	}
}

func TestProcKilled(t *testing.T) {
	lan := New(t, 1)
	p, err := lan.Host(0).Start("sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
		t.Fatal("exited before it was killed")
	default:
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("Exited not closed after Kill")
	}
	if ws := waitStatus(p.Wait()); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("Wait() = %v, want killed by SIGKILL", p.Wait())
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop after exit = %v", err)
	}
}

func TestStopEscalates(t *testing.T) {
	lan := New(t, 1)
	// A process that ignores SIGTERM (the ignore survives exec).
	p, err := lan.Host(0).Start("sh", "-c", `trap "" TERM; echo ready; exec sleep 600`)
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, "ready\n")
	if err := p.Stop(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ws := waitStatus(p.Wait()); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("Wait() = %v, want killed by SIGKILL after the grace period", p.Wait())
	}
	// A well-behaved one ends with SIGTERM.
	q, err := lan.Host(0).Start("sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if ws := waitStatus(q.Wait()); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("Wait() = %v, want ended by SIGTERM", q.Wait())
	}
}

func waitStatus(err error) syscall.WaitStatus {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return ws
		}
	}
	return 0
}

// gone reports whether pid no longer runs (absent, or a zombie nobody has
// reaped yet).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !gone(pid); {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	Require(t)
	lan, err := Create(2, WithStopGrace(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Close()
	h := lan.Host(1)
	managed, err := h.Start("sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	// A grandchild that outlives its parent's Stop, and a process the test
	// started itself: Close finds both through the namespace.
	parent, err := h.Start("sh", "-c", `sleep 600 & echo "child=$!"; wait`)
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, parent, "\n")
	child, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(parent.Stdout(), "child=")))
	if err != nil {
		t.Fatalf("output %q", parent.Stdout())
	}
	own := lan.Host(0).Command("sleep", "600")
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- own.Wait() }()

	names := []string{lan.BridgeNS()}
	for _, h := range lan.Hosts() {
		names = append(names, h.NS)
	}
	logDir := lan.LogDir()
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lan.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still there (%v)", ns, err)
		}
	}
	out, err := exec.Command(lan.tools.ip, "netns", "list").Output()
	if err != nil || strings.Contains(string(out), lan.ID()) {
		t.Errorf("ip netns list: %q, %v", out, err)
	}
	select {
	case <-managed.Exited():
	default:
		t.Error("started process still running after Close")
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Error("the test's own command still running after Close")
	}
	waitGone(t, child)
	if _, err := os.Stat(logDir); !os.IsNotExist(err) {
		t.Errorf("log dir %s still there", logDir)
	}
	if _, err := os.Stat(filepath.Join(lockDir(), lan.ID()+".lock")); !os.IsNotExist(err) {
		t.Errorf("lock file still there (%v)", err)
	}
	if _, err := h.Start("sleep", "1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if _, _, err := h.Run(context.Background(), "true"); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if err := h.Cut(); !errors.Is(err, ErrClosed) {
		t.Errorf("Cut after Close = %v, want ErrClosed", err)
	}
	if _, err := lan.AddHost(); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close = %v, want ErrClosed", err)
	}
}

// TestCrashedRun checks what happens when the process that built a LAN
// dies without Close: its children die with it (Pdeathsig), and Sweep
// removes the namespaces it left, but not those of a live LAN.
func TestCrashedRun(t *testing.T) {
	live := New(t, 1)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "--", "orphan")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.Output()
	if ws := waitStatus(err); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, output %q", err, out)
	}
	var pid int
	var dir, nsList string
	if _, err := fmt.Sscanf(string(out), "pid=%d dir=%s ns=%s", &pid, &dir, &nsList); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	waitGone(t, pid)
	left := strings.Split(nsList, ",")
	for _, ns := range left {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			t.Fatalf("expected the crashed run's namespace %s: %v", ns, err)
		}
	}
	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range left {
		if !slices.Contains(removed, ns) {
			t.Errorf("Sweep did not remove %s (removed %v)", ns, removed)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); !os.IsNotExist(err) {
			t.Errorf("%s still there", ns)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("log dir %s of the crashed run still there (%v)", dir, err)
	}
	if _, err := os.Stat(live.LogDir()); err != nil {
		t.Errorf("log dir of the live LAN: %v", err)
	}
	for _, ns := range []string{live.BridgeNS(), live.Host(0).NS} {
		if slices.Contains(removed, ns) {
			t.Errorf("Sweep removed %s of a live LAN", ns)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			t.Errorf("live LAN namespace %s: %v", ns, err)
		}
	}
}

func TestBinary(t *testing.T) {
	lan := New(t, 1)
	const pkg = "github.com/nearbymesh/nearby/internal/netlab/testdata/hostinfo"
	bin := Binary(t, pkg)
	if again := Binary(t, pkg); again != bin {
		t.Errorf("second Binary = %s, want %s", again, bin)
	}
	out, stderr, err := lan.Host(0).Run(context.Background(), bin)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	want := "hostname=h1 isolation=ok ifaces=lo,lan0\n"
	if string(out) != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestManyHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("30 hosts")
	}
	lan := New(t, 30)
	names := map[string]bool{}
	for _, h := range lan.Hosts() {
		for _, n := range []string{h.Name, h.NS, h.Port, h.IPv4.String(), h.IPv6.String()} {
			if names[n] {
				t.Errorf("%q used twice", n)
			}
			names[n] = true
		}
		if len(h.Port) > 15 {
			t.Errorf("port name %q longer than 15", h.Port)
		}
	}
	runHelper(t, lan.Host(29), "ping", lan.Host(0).IPv4.String(), lan.Host(0).IPv6.String())
}

func BenchmarkCreate(b *testing.B) {
	for _, n := range []int{3, 10, 30} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			Require(b)
			var closeTime time.Duration
			for b.Loop() {
				l, err := Create(n)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				start := time.Now()
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				closeTime += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(float64(closeTime.Milliseconds())/float64(b.N), "close-ms/op")
		})
	}
}

func TestWithLogDirKeepsLogs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	lan := New(t, 1, WithLogDir(dir))
	p, err := lan.Host(0).Start("sh", "-c", "echo out; echo err >&2")
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, p)
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{p.StdoutPath(): "out\n", p.StderrPath(): "err\n"} {
		if filepath.Dir(path) != dir {
			t.Errorf("log %s not in %s", path, dir)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", path, b, err, want)
		}
	}
}
