package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConnectAndPeerInfo(t *testing.T) {
	checkGoroutines(t)
	a, b := startNode(t, nil), startNode(t, nil)
	connect(t, a, b)
	pa, ok := a.Peer(b.ID())
	if !ok || !pa.Dialed || pa.Name != b.cfg.Name || pa.Addr != b.Addr().String() {
		t.Errorf("a's view of b: %+v", pa)
	}
	pb, ok := b.Peer(a.ID())
	if !ok || pb.Dialed || pb.Name != a.cfg.Name {
		t.Errorf("b's view of a: %+v", pb)
	}
	eventually(t, "an RTT", func() bool { p, _ := a.Peer(b.ID()); return p.RTT > 0 })
	if ps := a.Peers(); len(ps) != 1 || ps[0].ID != b.ID() {
		t.Errorf("Peers: %+v", ps)
	}
	// Hints for self, invalid ids and no addresses are ignored.
	a.AddHint(Hint{ID: a.ID(), Addrs: []netip.AddrPort{netip.MustParseAddrPort(a.Addr().String())}})
	a.AddHint(Hint{ID: "nope", Addrs: []netip.AddrPort{netip.MustParseAddrPort(a.Addr().String())}})
	a.AddHint(Hint{ID: b.ID()})
	a.mu.RLock()
	nt := len(a.targets)
	a.mu.RUnlock()
	if nt != 1 {
		t.Errorf("%d dial targets, want 1", nt)
	}
}

// TestAllDialAtOnce starts meshes whose nodes all dial each other at the
// same moment: every pair must end with exactly one session, agreed on by
// both ends, without any peer-down on the way.
func TestAllDialAtOnce(t *testing.T) {
	checkGoroutines(t)
	for round := range 3 {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			const n = 5
			nodes := make([]*node, n)
			for i := range nodes {
				nodes[i] = startNode(t, nil)
			}
			var wg sync.WaitGroup
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b {
						wg.Go(func() { a.hint(b) })
					}
				}
			}
			wg.Wait()
			for _, a := range nodes {
				for range n - 1 {
					ev := a.waitEvent(func(ev Event) bool { return ev.Type == EventPeerUp || ev.Type == EventPeerDown }, "peer event")
					if ev.Type != EventPeerUp {
						t.Fatalf("node %s: %s of %s (%s) while connecting", a.ID().Short(), ev.Type, ev.Peer.Short(), ev.Reason)
					}
				}
			}
			for _, a := range nodes {
				if got := len(a.Peers()); got != n-1 {
					t.Fatalf("node %s has %d peers", a.ID().Short(), got)
				}
				for _, b := range nodes {
					if a == b {
						continue
					}
					pa, _ := a.Peer(b.ID())
					pb, _ := b.Peer(a.ID())
					if pa.Dialed == pb.Dialed {
						t.Errorf("%s and %s disagree on their session (dialed %v and %v)", a.ID().Short(), b.ID().Short(), pa.Dialed, pb.Dialed)
					}
				}
			}
			// Sessions carry traffic; no event beyond the peer-ups arrived.
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b {
						if err := a.Send(b.ID(), "x", []byte(a.ID()), 0); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			for _, b := range nodes {
				for range n - 1 {
					b.waitMsg()
				}
				select {
				case ev := <-b.events:
					if ev.Type != EventCatalog {
						t.Errorf("node %s: unexpected event %+v", b.ID().Short(), ev)
					}
				default:
				}
			}
		})
	}
}

// TestMessagesExactlyOnceInOrder sends and broadcasts among 4 nodes; every
// receiver must see every sender's messages once each, in order.
func TestMessagesExactlyOnceInOrder(t *testing.T) {
	checkGoroutines(t)
	const n, count = 4, 500
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = startNode(t, nil)
	}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			connect(t, a, b)
		}
	}
	var wg sync.WaitGroup
	for _, a := range nodes {
		wg.Go(func() {
			for i := range count {
				if i%2 == 0 {
					if got := a.Broadcast("seq", seqPayload(i)); got != n-1 {
						t.Errorf("broadcast reached %d peers", got)
					}
					continue
				}
				for _, b := range nodes {
					if b != a {
						if err := a.Send(b.ID(), "seq", seqPayload(i), uint64(i)); err != nil {
							t.Error(err)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	for _, b := range nodes {
		next := map[NodeID]int{}
		for range (n - 1) * count {
			msg := b.waitMsg()
			want := next[msg.From]
			if !bytes.Equal(msg.Payload, seqPayload(want)) {
				t.Fatalf("node %s: from %s got %q, want %q", b.ID().Short(), msg.From.Short(), msg.Payload, seqPayload(want))
			}
			if msg.Broadcast != (want%2 == 0) || (!msg.Broadcast && msg.ID != uint64(want)) {
				t.Fatalf("message %d: broadcast=%v id=%d", want, msg.Broadcast, msg.ID)
			}
			next[msg.From]++
		}
		select {
		case msg := <-b.got:
			t.Fatalf("extra message %q", msg.Payload)
		default:
		}
	}
	for _, a := range nodes {
		for _, p := range a.Peers() {
			if p.Sent != count || p.Received != count || p.Dropped != 0 {
				t.Errorf("counters %s->%s: sent %d received %d dropped %d", a.ID().Short(), p.ID.Short(), p.Sent, p.Received, p.Dropped)
			}
		}
	}
}

func TestNack(t *testing.T) {
	checkGoroutines(t)
	nacks := make(chan Nack, 10)
	ca := testConfig(t, testKey)
	ca.OnNack = func(n Nack) { nacks <- n }
	a := startNode(t, ca)
	cb := testConfig(t, testKey)
	got := make(chan Message, 10)
	cb.OnMessage = func(m Message) error {
		got <- m
		if m.Subservice == "missing" {
			return errors.New("no subservice missing here")
		}
		return nil
	}
	b := startNode(t, cb)
	connect(t, a, b)
	a.Send(b.ID(), "missing", []byte("x"), 0) // no id: no nack
	a.Send(b.ID(), "missing", []byte("y"), 42)
	a.Send(b.ID(), "chat", []byte("z"), 43)
	for range 3 {
		<-got
	}
	select {
	case n := <-nacks:
		want := Nack{From: b.ID(), Subservice: "missing", ID: 42, Reason: "no subservice missing here"}
		if n != want {
			t.Errorf("nack %+v, want %+v", n, want)
		}
	case <-time.After(wait):
		t.Fatal("no nack")
	}
	// The nack for 42 came before anything for 43: there is none.
	a.Send(b.ID(), "chat", []byte("marker"), 0)
	<-got
	b.Send(a.ID(), "chat", []byte("marker"), 0)
	a.waitMsg()
	select {
	case n := <-nacks:
		t.Errorf("unexpected nack %+v", n)
	default:
	}
}

func TestSendErrors(t *testing.T) {
	checkGoroutines(t)
	cb := testConfig(t, testKey)
	cb.MaxFrameSize = 1024
	a, b := startNode(t, nil), startNode(t, cb)
	connect(t, a, b)
	stranger, _ := NewIdentity()
	tests := []struct {
		name    string
		to      NodeID
		sub     string
		payload []byte
		want    error
	}{
		{"unknown peer", stranger.ID, "x", nil, ErrNoPeer},
		{"empty subservice", b.ID(), "", nil, ErrBadName},
		{"long subservice", b.ID(), strings.Repeat("s", 256), nil, ErrBadName},
		{"over the peer's cap", b.ID(), "x", make([]byte, 1025), ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := a.Send(tt.to, tt.sub, tt.payload, 0); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	if err := a.Send(b.ID(), "x", make([]byte, 1024), 0); err != nil {
		t.Errorf("payload at the peer's cap: %v", err)
	}
	if got := len(b.waitMsg().Payload); got != 1024 {
		t.Errorf("got %d bytes", got)
	}
	if n := a.Broadcast("", nil); n != 0 {
		t.Errorf("broadcast with empty subservice reached %d", n)
	}
	if n := a.Broadcast("x", make([]byte, 2000)); n != 0 {
		t.Errorf("broadcast over b's cap reached %d", n)
	}
	if _, err := a.OpenStream(context.Background(), stranger.ID, "x"); !errors.Is(err, ErrNoPeer) {
		t.Errorf("OpenStream to a stranger: %v", err)
	}
	a.Close()
	if err := a.Send(b.ID(), "x", nil, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
}

func TestCatalogExchange(t *testing.T) {
	checkGoroutines(t)
	a, b := startNode(t, nil), startNode(t, nil)
	c1 := Catalog{Entries: []CatalogEntry{{Name: "chat", Version: "1.2.0", SHA256: "ab", Size: 10, Mode: "local", Signer: "key1", Description: "Chat", Label: "Chat"}}}
	a.SetCatalog(c1)
	connect(t, a, b)
	isCat := func(ev Event) bool { return ev.Type == EventCatalog && ev.Peer == a.ID() }
	b.waitEvent(isCat, "first catalog")
	if p, _ := b.Peer(a.ID()); !p.Catalog.Equal(c1) {
		t.Fatalf("b sees %+v", p.Catalog)
	}
	c2 := c1.Clone()
	c2.Entries = append(c2.Entries, CatalogEntry{Name: "draw", Version: "0.1.0", Mode: "hosted"})
	a.SetCatalog(c2)
	b.waitEvent(isCat, "changed catalog")
	if p, _ := b.Peer(a.ID()); !p.Catalog.Equal(c2) || p.Catalog.Digest() != c2.Digest() {
		t.Fatalf("b sees %+v", p.Catalog)
	}
	if !a.Catalog().Equal(c2) {
		t.Errorf("a.Catalog() = %+v", a.Catalog())
	}
	// Setting the same catalog again sends nothing: by the time a later
	// message arrives, no catalog event may have been queued.
	a.SetCatalog(c2.Clone())
	a.Send(b.ID(), "x", []byte("marker"), 0)
	b.waitMsg()
	for {
		select {
		case ev := <-b.events:
			if ev.Type == EventCatalog {
				t.Fatalf("catalog event for an unchanged catalog")
			}
			continue
		default:
		}
		break
	}
}

func TestByeOnClose(t *testing.T) {
	checkGoroutines(t)
	a, b := startNode(t, nil), startNode(t, nil)
	connect(t, a, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.waitRun(); b.runErr != nil {
		t.Errorf("Run returned %v after Close, want nil", b.runErr)
	}
	ev := a.waitDown(b.ID())
	if ev.Reason != "bye" {
		t.Errorf("peer-down reason %q, want bye", ev.Reason)
	}
	// The hint is forgotten: a does not redial a node that left.
	eventually(t, "hint forgotten", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return len(a.targets) == 0
	})
	// b's own subscribers saw b's side go down, then their channel closed.
	var sawDown bool
	for ev := range b.events {
		if ev.Type == EventPeerDown && ev.Peer == a.ID() {
			sawDown = true
		}
	}
	if !sawDown {
		t.Error("closing node did not report its peers down")
	}
}

func TestKilledConnectionIsDetectedAndRedialled(t *testing.T) {
	checkGoroutines(t)
	a, b := startNode(t, nil), startNode(t, nil)
	px := newProxy(t, b.Addr().String())
	a.AddHint(Hint{ID: b.ID(), Addrs: []netip.AddrPort{px.addrPort()}})
	a.waitUp(b.ID())
	b.waitUp(a.ID())
	px.kill()
	for _, n := range []*node{a, b} {
		id := a.ID()
		if n == a {
			id = b.ID()
		}
		ev := n.waitDown(id)
		if !strings.Contains(ev.Reason, "connection") {
			t.Errorf("reason %q", ev.Reason)
		}
	}
	// a still knows b and dials it again.
	a.waitUp(b.ID())
	b.waitUp(a.ID())
	if err := a.Send(b.ID(), "x", []byte("again"), 0); err != nil {
		t.Fatal(err)
	}
	b.waitMsg()
}

func TestSilentLossIsDetected(t *testing.T) {
	checkGoroutines(t)
	fast := func() *Config {
		c := testConfig(t, testKey)
		c.KeepAliveInterval = 200 * time.Millisecond
		return c
	}
	a, b := startNode(t, fast()), startNode(t, fast())
	px := newProxy(t, b.Addr().String())
	a.AddHint(Hint{ID: b.ID(), Addrs: []netip.AddrPort{px.addrPort()}})
	a.waitUp(b.ID())
	b.waitUp(a.ID())
	px.blackhole(true)
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		ev := pair[0].waitDown(pair[1].ID())
		if !strings.HasPrefix(ev.Reason, "timeout") {
			t.Errorf("reason %q, want timeout", ev.Reason)
		}
	}
	if a.Stats().PeersTimedOut == 0 {
		t.Error("timeout not counted")
	}
	px.blackhole(false)
	a.waitUp(b.ID())
}

func TestStaticPeerRedialledAfterRestart(t *testing.T) {
	checkGoroutines(t)
	cb := testConfig(t, testKey)
	b := startNode(t, cb)
	addr := b.Addr().String()
	ca := testConfig(t, testKey)
	ca.StaticPeers = []string{addr}
	a := startNode(t, ca)
	a.waitUp(b.ID())
	b.waitUp(a.ID())
	b.stop()
	if !errors.Is(b.runErr, context.Canceled) {
		t.Errorf("Run returned %v after cancel, want context.Canceled", b.runErr)
	}
	if ev := a.waitDown(b.ID()); ev.Reason != "bye" {
		t.Errorf("reason %q", ev.Reason)
	}
	// Same identity, same address: a dials it again on its own.
	cb2 := testConfig(t, testKey)
	cb2.Identity = cb.Identity
	cb2.ListenAddr = addr
	b2 := startNode(t, cb2)
	a.waitUp(b2.ID())
	b2.waitUp(a.ID())
}

// TestStaticPeersBothWays: two nodes that list each other as static peers
// connect once, and the one whose own dial lost the one-session-per-pair
// rule stops dialling (the e2e scale test found each such pair redialled
// every ReconnectMin, a wasted TLS handshake on both sides each time).
func TestStaticPeersBothWays(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrA := ln.Addr().String()
	ln.Close()
	cb := testConfig(t, testKey)
	cb.StaticPeers = []string{addrA}
	b := startNode(t, cb)
	ca := testConfig(t, testKey)
	ca.ListenAddr = addrA
	ca.StaticPeers = []string{b.Addr().String()}
	a := startNode(t, ca)
	a.waitUp(b.ID())
	b.waitUp(a.ID())
	// Six ReconnectMin periods: the losing side may fail twice (both dials
	// in flight at once, then one that finds the session up) and then must
	// stay quiet.
	time.Sleep(6 * DefaultReconnectMin)
	failed := a.Stats().HandshakesFailed + b.Stats().HandshakesFailed
	if failed > 4 {
		t.Errorf("%d failed handshakes between two connected static peers", failed)
	}
	if p := len(a.Peers()); p != 1 {
		t.Errorf("a has %d peers", p)
	}
}

// TestSlowPeerDoesNotStallOthers: c stops reading (its OnMessage blocks).
// a keeps broadcasting; b gets everything, a's queue for c fills and drops,
// and c is eventually disconnected.
func TestSlowPeerDoesNotStallOthers(t *testing.T) {
	checkGoroutines(t)
	ca := testConfig(t, testKey)
	ca.QueueSize = 256 << 10
	ca.WriteTimeout = time.Second
	a := startNode(t, ca)
	b := startNode(t, nil)
	release := make(chan struct{})
	cc := testConfig(t, testKey)
	cc.OnMessage = func(Message) error { <-release; return nil }
	c := startNode(t, cc)
	defer close(release)
	connect(t, a, b)
	connect(t, a, c)

	payload := make([]byte, 64<<10)
	for i := 0; ; i++ {
		if i > 5000 {
			t.Fatal("c was never dropped")
		}
		copy(payload, seqPayload(i))
		a.Broadcast("bulk", payload)
		// b keeps up: every message arrives, in order.
		msg := b.waitMsg()
		if !bytes.Equal(msg.Payload[:10], seqPayload(i)) {
			t.Fatalf("b got %q, want %q", msg.Payload[:10], seqPayload(i))
		}
		if _, ok := a.Peer(c.ID()); !ok {
			break
		}
	}
	ev := a.waitDown(c.ID())
	if !strings.Contains(ev.Reason, "write timeout") && !strings.Contains(ev.Reason, "not reading") {
		t.Errorf("c dropped for %q", ev.Reason)
	}
	if _, ok := a.Peer(b.ID()); !ok {
		t.Error("b was dropped too")
	}
}

// TestQueueFullDropsAndRecovers: c stops reading. Once its stream window
// (16 MiB) and a's queue for it are full, messages to c are dropped and
// counted while b gets everything; when c reads again, c's queue drains and
// messages flow again.
func TestQueueFullDropsAndRecovers(t *testing.T) {
	checkGoroutines(t)
	ca := testConfig(t, testKey)
	ca.QueueSize = 256 << 10
	ca.WriteTimeout = time.Hour // no disconnect: this test is about drops
	a := startNode(t, ca)
	b := startNode(t, nil)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	cc := testConfig(t, testKey)
	got := make(chan Message, 1000)
	cc.OnMessage = func(m Message) error { <-release; got <- m; return nil }
	c := startNode(t, cc)
	t.Cleanup(unblock) // before c stops
	connect(t, a, b)
	connect(t, a, c)

	// 16 MiB of window, 256 KiB of queue, and what sits in c's and a's
	// buffers: well under 400 messages of 64 KiB.
	payload := make([]byte, 64<<10)
	var toC [][]byte // what c accepted, in order
	drops := 0
	for i := 0; drops < 3; i++ {
		if i > 400 {
			t.Fatal("no drops after 400 messages to a peer that does not read")
		}
		copy(payload, seqPayload(i))
		switch n := a.Broadcast("bulk", payload); n {
		case 2:
			toC = append(toC, seqPayload(i))
		case 1:
			drops++
		default:
			t.Fatalf("broadcast reached %d peers", n)
		}
		if msg := b.waitMsg(); !bytes.Equal(msg.Payload[:10], seqPayload(i)) {
			t.Fatalf("b got %q, want %q", msg.Payload[:10], seqPayload(i))
		}
	}
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("Send never reported a full queue")
		}
		p := []byte(fmt.Sprintf("send-%04d", i))
		err := a.Send(c.ID(), "bulk", append(p, payload[len(p):]...), 0)
		if errors.Is(err, ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		toC = append(toC, p)
	}
	pc, _ := a.Peer(c.ID())
	if pc.Dropped < 4 || a.Stats().MessagesDroppedFull < 4 || pc.Queued == 0 {
		t.Errorf("c: %+v", pc)
	}
	// c reads again: what was accepted arrives, once, in order, and new
	// messages go through.
	unblock()
	for _, want := range toC {
		msg := <-got
		if !bytes.Equal(msg.Payload[:len(want)], want) {
			t.Fatalf("c got %q, want %q", msg.Payload[:len(want)], want)
		}
	}
	eventually(t, "queue drained", func() bool { p, _ := a.Peer(c.ID()); return p.Queued == 0 })
	if err := a.Send(c.ID(), "bulk", []byte("after"), 0); err != nil {
		t.Fatal(err)
	}
	if msg := <-got; string(msg.Payload) != "after" {
		t.Fatalf("got %q", msg.Payload[:10])
	}
}

func TestSlowSubscriberLosesEvents(t *testing.T) {
	checkGoroutines(t)
	a := startNode(t, nil)
	slow, cancel := a.Subscribe(1)
	defer cancel()
	nodes := []*node{startNode(t, nil), startNode(t, nil), startNode(t, nil)}
	for _, n := range nodes {
		connect(t, a, n)
	}
	eventually(t, "dropped events counted", func() bool { return a.Stats().EventsDropped > 0 })
	if ev := <-slow; ev.Type != EventPeerUp {
		t.Errorf("first event %+v", ev)
	}
	cancel()
	cancel()
	if _, ok := <-slow; ok {
		t.Error("channel open after unsubscribe")
	}
}

func TestConfigErrors(t *testing.T) {
	good := func() *Config { return testConfig(t, testKey) }
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no identity", func(c *Config) { c.Identity = nil }, "Identity is required"},
		{"no key", func(c *Config) { c.Key = Key{} }, "Key is empty"},
		{"bad identity", func(c *Config) { c.Identity = &Identity{ID: c.Identity.ID} }, "inconsistent"},
		{"negative keepalive", func(c *Config) { c.KeepAliveInterval = -1 }, "KeepAliveInterval is negative"},
		{"negative queue", func(c *Config) { c.QueueSize = -1 }, "QueueSize is negative"},
		{"negative dial quiet", func(c *Config) { c.DialQuiet = -1 }, "DialQuiet is negative"},
		{"negative dial quiet max", func(c *Config) { c.DialQuietMax = -time.Second }, "DialQuietMax is negative"},
		{"long name", func(c *Config) { c.Name = strings.Repeat("n", 256) }, "Name must be"},
		{"huge frames", func(c *Config) { c.MaxFrameSize = 1 << 30 }, "over the limit"},
		{"backoff order", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Second, time.Millisecond }, "below ReconnectMin"},
		{"bad static peer", func(c *Config) { c.StaticPeers = []string{"nohost"} }, "StaticPeers"},
		{"bad handler name", func(c *Config) { c.Handlers = map[string]StreamHandler{"": func(NodeID, net.Conn) {}} }, "Handlers"},
		{"nil handler", func(c *Config) { c.Handlers = map[string]StreamHandler{"x": nil} }, "nil handler"},
		{"bad listen address", func(c *Config) { c.ListenAddr = "256.1.1.1:x" }, "listen on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.mutate(c)
			m, err := New(c)
			if err == nil {
				m.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	// Close without Run releases the port.
	m, err := New(good())
	if err != nil {
		t.Fatal(err)
	}
	addr := m.Addr().String()
	m.Close()
	if ln, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("port still bound after Close: %v", err)
	} else {
		ln.Close()
	}
}

// TestReserveTieBreak checks the lower node's decisions directly.
func TestReserveTieBreak(t *testing.T) {
	m, err := New(testConfig(t, testKey))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	other, _ := NewIdentity()
	pid := other.ID
	inst := [8]byte{7}
	tok, err := m.reserve(pid, inst, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserve(pid, inst, false); !errors.Is(err, ErrDuplicate) {
		t.Errorf("second connection while one is pending: %v", err)
	}
	m.unreserve(pid, tok)
	m.peers[pid] = &peer{id: pid, instance: inst, dialed: true}
	if _, err := m.reserve(pid, inst, false); !errors.Is(err, ErrDuplicate) {
		t.Errorf("opposite direction, same instance: %v", err)
	}
	if tok, err := m.reserve(pid, inst, true); err != nil {
		t.Errorf("same direction (peer lost the old one): %v", err)
	} else {
		m.unreserve(pid, tok)
	}
	if tok, err := m.reserve(pid, [8]byte{8}, false); err != nil {
		t.Errorf("restarted peer: %v", err)
	} else {
		m.unreserve(pid, tok)
	}
	if len(m.pending) != 0 {
		t.Errorf("reservations left: %v", m.pending)
	}
}
