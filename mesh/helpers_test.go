package mesh

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// wait bounds every wait for an event in the tests; it is generous because
// the machine is shared and -race is slow. No test asserts on timing.
const wait = 20 * time.Second

var testKey = func() Key {
	k, err := NewKey()
	if err != nil {
		panic(err)
	}
	return k
}()

// node is a running mesh in a test.
type node struct {
	*Mesh
	t       testing.TB
	events  <-chan Event
	cancel  context.CancelFunc
	runDone chan struct{}
	runErr  error // valid once runDone is closed
	logs    *syncBuffer

	got chan Message
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testConfig returns a config for a node on 127.0.0.1 with a fresh identity.
func testConfig(t testing.TB, key Key) *Config {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Identity = id
	cfg.Key = key
	cfg.Name = "node-" + id.ID.Short()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.ReconnectMin = 50 * time.Millisecond
	cfg.ReconnectMax = 500 * time.Millisecond
	cfg.DialQuiet = time.Nanosecond // dial at once; quiet_test.go tests the wait
	return cfg
}

// startNode starts a mesh from cfg (nil: a default test config) and stops
// it when the test ends. Incoming messages are recorded.
func startNode(t testing.TB, cfg *Config) *node {
	t.Helper()
	if cfg == nil {
		cfg = testConfig(t, testKey)
	}
	n := &node{t: t, runDone: make(chan struct{}), logs: &syncBuffer{}, got: make(chan Message, 100000)}
	if cfg.OnMessage == nil {
		cfg.OnMessage = func(msg Message) error {
			n.got <- msg
			return nil
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Mesh = m
	n.events, _ = m.Subscribe(10000)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		n.runErr = m.Run(ctx)
		close(n.runDone)
	}()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() && os.Getenv("MESH_TEST_LOGS") != "" {
			t.Logf("logs of %s:\n%s", n.ID().Short(), n.logs.String())
		}
	})
	return n
}

// stop closes the node and waits for Run to return.
func (n *node) stop() {
	n.cancel()
	n.waitRun()
}

// waitRun waits for Run to return.
func (n *node) waitRun() {
	select {
	case <-n.runDone:
	case <-time.After(wait):
		n.t.Errorf("node %s: Run did not return", n.ID().Short())
	}
}

func (n *node) hint(o *node) {
	ap := netip.MustParseAddrPort(o.Addr().String())
	n.AddHint(Hint{ID: o.ID(), Name: "x", Addrs: []netip.AddrPort{ap}})
}

// waitEvent waits for an event matching f and returns it.
func (n *node) waitEvent(f func(Event) bool, what string) Event {
	n.t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-n.events:
			if !ok {
				n.t.Fatalf("node %s: events closed while waiting for %s", n.ID().Short(), what)
			}
			if f(ev) {
				return ev
			}
		case <-timer.C:
			n.t.Fatalf("node %s: no %s within %v", n.ID().Short(), what, wait)
		}
	}
}

func (n *node) waitUp(id NodeID) Event {
	n.t.Helper()
	return n.waitEvent(func(ev Event) bool { return ev.Type == EventPeerUp && ev.Peer == id }, "peer-up of "+id.Short())
}

func (n *node) waitDown(id NodeID) Event {
	n.t.Helper()
	return n.waitEvent(func(ev Event) bool { return ev.Type == EventPeerDown && ev.Peer == id }, "peer-down of "+id.Short())
}

// waitMsg returns the next message received.
func (n *node) waitMsg() Message {
	n.t.Helper()
	select {
	case msg := <-n.got:
		return msg
	case <-time.After(wait):
		n.t.Fatalf("node %s: no message within %v", n.ID().Short(), wait)
	}
	return Message{}
}

// eventually polls f until it holds or the wait runs out.
func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connect makes a and b peers (a dials) and waits until both see it.
func connect(t testing.TB, a, b *node) {
	t.Helper()
	a.hint(b)
	a.waitUp(b.ID())
	b.waitUp(a.ID())
}

// checkGoroutines fails the test if goroutines started during it are still
// running once it ends (after cleanups that stop nodes registered later).
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var n int
		deadline := time.Now().Add(wait)
		for {
			n = runtime.NumGoroutine()
			if n <= before || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
		}
	})
}

// proxy forwards TCP connections to a target and can cut them, either by
// closing (kill) or by silently dropping all bytes (blackhole).
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	black  bool
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addrPort() netip.AddrPort { return netip.MustParseAddrPort(p.ln.Addr().String()) }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			black := p.black
			p.mu.Unlock()
			if !black {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			p.mu.Lock()
			black := p.black
			p.mu.Unlock()
			if !black { // a cut link does not carry the FIN either
				dst.Close()
			}
			return
		}
	}
}

// kill closes every forwarded connection.
func (p *proxy) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// blackhole drops every byte from now on, keeping the connections open.
func (p *proxy) blackhole(on bool) {
	p.mu.Lock()
	p.black = on
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.ln.Close()
	p.kill()
	p.wg.Wait()
}

func seqPayload(i int) []byte { return []byte(fmt.Sprintf("msg-%06d", i)) }
