package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run small network programs on the hosts by re-executing the
// test binary (go-plugin's TestHelperProcess pattern), so they need no
// ping, socat or python on the machine.

const helperEnv = "NETLAB_TEST_HELPER"

// helperCmd returns a command that runs the helper mode args on h.
func helperCmd(ctx context.Context, h *Host, args ...string) *exec.Cmd {
	cmd := h.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	// A -race binary sleeps 1 s at exit unless told otherwise.
	cmd.Env = append(cmd.Env, helperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	return cmd
}

// runHelper runs a helper mode on h to completion and returns its stdout.
func runHelper(t *testing.T, h *Host, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _, err := h.RunCommand(helperCmd(ctx, h, args...))
	if err != nil {
		t.Fatalf("%s: helper %v: %v\nstdout: %s", h.Name, args, err, out)
	}
	return string(out)
}

// startHelper starts a helper mode on h and waits until it prints "ready".
func startHelper(t *testing.T, h *Host, args ...string) *Proc {
	t.Helper()
	p, err := h.StartCommand(helperCmd(context.Background(), h, args...))
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, "ready\n")
	return p
}

// waitOutput waits (bounded) until p's stdout contains s.
func waitOutput(t *testing.T, p *Proc, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Stdout(), s) {
		select {
		case <-p.Exited():
			if strings.Contains(p.Stdout(), s) {
				return
			}
			t.Fatalf("%s exited (%v) before printing %q\nstdout: %s\nstderr: %s", p.Name(), p.Wait(), s, p.Stdout(), p.Stderr())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q\nstdout: %s\nstderr: %s", p.Name(), s, p.Stdout(), p.Stderr())
		}
	}
}

// waitExit waits (bounded) for p to exit and fails unless it exited 0.
func waitExit(t *testing.T, p *Proc) string {
	t.Helper()
	select {
	case <-p.Exited():
	case <-time.After(60 * time.Second):
		t.Fatalf("%s still running\nstdout: %s\nstderr: %s", p.Name(), p.Stdout(), p.Stderr())
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", p.Name(), err, p.Stdout(), p.Stderr())
	}
	return p.Stdout()
}

func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	args := os.Args
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		os.Exit(2)
	}
	if err := helper(args[1], args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helper(mode string, args []string) error {
	switch mode {
	case "hostname":
		name, err := os.Hostname()
		fmt.Println(name)
		return err
	case "ping":
		for _, a := range args {
			if err := ping(netip.MustParseAddr(a)); err != nil {
				return err
			}
			fmt.Println("reply from", a)
		}
		return nil
	case "mrecv": // GROUP PORT: print the first datagram to the group
		return mrecv(netip.MustParseAddr(args[0]), atoi(args[1]))
	case "msend": // GROUP PORT PAYLOAD
		return msend(netip.MustParseAddr(args[0]), atoi(args[1]), args[2])
	case "urecv": // PORT: count "data" datagrams until "fin"
		return urecv(atoi(args[0]))
	case "usend": // ADDR PORT N SIZE BURST: N datagrams, pause 1 ms every BURST (0: never)
		return usend(args[0], atoi(args[1]), atoi(args[2]), atoi(args[3]), atoi(args[4]))
	case "uctl": // ADDR PORT MSG: send MSG until acknowledged
		return uctl(args[0], atoi(args[1]), args[2])
	case "orphan": // build a LAN, start sleep on it, print its pid, die without Close
		l, err := Create(1)
		if err != nil {
			return err
		}
		p, err := l.Host(0).Start("sleep", "600")
		if err != nil {
			return err
		}
		fmt.Printf("pid=%d dir=%s ns=%s,%s\n", p.PID(), l.LogDir(), l.BridgeNS(), l.Host(0).NS)
		os.Stdout.Sync()
		return syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// ping sends ICMP echo requests over a raw socket until one is answered
// (3 tries, 2 s each).
func ping(addr netip.Addr) error {
	network, req, rep := "ip4:icmp", byte(8), byte(0)
	if addr.Is6() {
		network, req, rep = "ip6:ipv6-icmp", 128, 129
	}
	c, err := net.ListenPacket(network, "")
	if err != nil {
		return err
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	buf := make([]byte, 1500)
	for seq := 1; seq <= 3; seq++ {
		msg := []byte{req, 0, 0, 0, byte(id >> 8), byte(id), 0, byte(seq), 'n', 'e', 't', 'l', 'a', 'b'}
		if addr.Is4() { // the kernel fills in the ICMPv6 checksum, not the ICMPv4 one
			var sum uint32
			for i := 0; i < len(msg); i += 2 {
				sum += uint32(msg[i])<<8 | uint32(msg[i+1])
			}
			sum = sum>>16 + sum&0xffff
			sum += sum >> 16
			msg[2], msg[3] = byte(^sum>>8), byte(^sum)
		}
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: next try
			}
			if n >= 8 && buf[0] == rep && int(buf[4])<<8|int(buf[5]) == id && buf[7] == byte(seq) {
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply from %v", addr)
}

func mrecv(group netip.Addr, port int) error {
	ifi, err := net.InterfaceByName(hostIface)
	if err != nil {
		return err
	}
	network := "udp4"
	if group.Is6() {
		network = "udp6"
	}
	c, err := net.ListenMulticastUDP(network, ifi, &net.UDPAddr{IP: group.AsSlice(), Port: port})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("ready")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return err
	}
	fmt.Printf("got from=%s data=%s\n", from.IP, buf[:n])
	return nil
}

func msend(group netip.Addr, port int, payload string) error {
	dst := &net.UDPAddr{IP: group.AsSlice(), Port: port}
	network := "udp4"
	if group.Is6() {
		network, dst.Zone = "udp6", hostIface
	}
	c, err := net.DialUDP(network, nil, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(payload))
	return err
}

func urecv(port int) error {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		return err
	}
	defer c.Close()
	// Room for every datagram a test sends, whatever net.core.rmem_max
	// says (SO_RCVBUFFORCE: we are root in the namespace), so that only
	// the link decides what is lost.
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20)
	}); err != nil || serr != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %v %v", err, serr)
	}
	fmt.Println("ready")
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 65536)
	count := 0
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return fmt.Errorf("count=%d: %w", count, err)
		}
		switch {
		case bytes.HasPrefix(buf[:n], []byte("data")):
			count++
		case string(buf[:n]) == "hello":
			c.WriteToUDP([]byte("ack"), from)
		case string(buf[:n]) == "fin":
			c.WriteToUDP([]byte("ack"), from)
			fmt.Printf("count=%d\n", count)
			return nil
		}
	}
}

func usend(addr string, port, n, size, burst int) error {
	c, err := net.Dial("udp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("x"), max(size, 4))
	copy(msg, "data")
	for i := range n {
		if _, err := c.Write(msg); err != nil && !errors.Is(err, syscall.ENOBUFS) {
			return err
		}
		if burst > 0 && (i+1)%burst == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

func uctl(addr string, port int, msg string) error {
	c, err := net.Dial("udp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 100 {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ack" {
			return nil
		}
	}
	return fmt.Errorf("%s to %s:%d: no ack", msg, addr, port)
}
