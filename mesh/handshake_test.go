package mesh

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// rawPeer is a hand-driven client for bad-input tests: it speaks the
// protocol step by step and can break any step.
type rawPeer struct {
	id   *Identity
	key  Key
	conn net.Conn
	tc   *tls.Conn
}

func newRawPeer(t *testing.T, key Key) *rawPeer {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return &rawPeer{id: id, key: key}
}

// dialTLS connects to n and runs the TLS handshake (with a certificate
// unless noCert).
func (r *rawPeer) dialTLS(t *testing.T, n *node, noCert bool) error {
	t.Helper()
	c, err := net.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		NextProtos:         []string{alpnProto},
	}
	if !noCert {
		cert, err := newCertificate(r.id)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	r.conn = c
	r.tc = tls.Client(c, cfg)
	return r.tc.Handshake()
}

// hello returns a valid hello for this connection.
func (r *rawPeer) hello(t *testing.T) hello {
	t.Helper()
	proof, err := proofFor(r.key, r.tc.ConnectionState(), roleDialer)
	if err != nil {
		t.Fatal(err)
	}
	mid := meshIDBytes(r.key)
	return hello{version: protocolVersion, id: r.id.ID, meshID: mid, instance: [8]byte{1}, maxPayload: 1 << 20, name: "raw", proof: proof}
}

func (r *rawPeer) send(t *testing.T, h hello) {
	t.Helper()
	b, err := appendHello(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.tc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// readFrame reads the next handshake frame from the node.
func (r *rawPeer) readFrame() (byte, []byte, error) {
	var hdr [frameHeaderLen]byte
	return readFrame(r.tc, &hdr, 0)
}

// expectReject reads frames until an error frame and returns it; the
// connection must then be closed by the node.
func (r *rawPeer) expectReject(t *testing.T) *remoteError {
	t.Helper()
	for {
		typ, body, err := r.readFrame()
		if err != nil {
			t.Fatalf("want an error frame, got %v", err)
		}
		if typ == frameError {
			re, err := decodeError(body)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.tc.Read(make([]byte, 1)); err == nil {
				t.Fatalf("connection still open after error frame")
			}
			return re
		}
	}
}

func meshIDBytes(k Key) [8]byte {
	var mid [8]byte
	b := []byte(k.MeshID())
	for i := range mid {
		mid[i] = hexVal(b[2*i])<<4 | hexVal(b[2*i+1])
	}
	return mid
}

func hexVal(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// checkRejected waits for n's EventRejected and checks that n has no peer.
func checkRejected(t *testing.T, n *node, want string) {
	t.Helper()
	ev := n.waitEvent(func(ev Event) bool { return ev.Type == EventRejected }, "rejected event")
	if !strings.Contains(ev.Reason, want) {
		t.Errorf("rejected event reason %q, want it to contain %q", ev.Reason, want)
	}
	if len(n.Peers()) != 0 {
		t.Errorf("node has peers after a rejection: %v", n.Peers())
	}
	eventually(t, "log line", func() bool { return strings.Contains(n.logs.String(), want) })
}

func TestHandshakeRejectsBadHello(t *testing.T) {
	checkGoroutines(t)
	n := startNode(t, nil)
	other, _ := NewKey()
	tests := []struct {
		name   string
		mutate func(t *testing.T, r *rawPeer, h *hello)
		code   errCode
		want   string
	}{
		{"wrong mesh", func(t *testing.T, r *rawPeer, h *hello) {
			r.key = other
			*h = r.hello(t)
		}, codeWrongMesh, "different mesh"},
		{"wrong key same mesh id", func(t *testing.T, r *rawPeer, h *hello) {
			p, _ := proofFor(other, r.tc.ConnectionState(), roleDialer)
			h.proof = p
		}, codeWrongMesh, "proof does not verify"},
		{"reflected proof", func(t *testing.T, r *rawPeer, h *hello) {
			// The listener's role: what the node itself would send.
			p, _ := proofFor(r.key, r.tc.ConnectionState(), roleListen)
			h.proof = p
		}, codeWrongMesh, "proof does not verify"},
		{"old version", func(t *testing.T, r *rawPeer, h *hello) {
			h.version = 0
		}, codeVersion, "unsupported protocol version 0"},
		{"hello id is not the certificate", func(t *testing.T, r *rawPeer, h *hello) {
			other, _ := NewIdentity()
			h.id = other.ID
		}, codeIdentity, "but the certificate is node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRawPeer(t, testKey)
			if err := r.dialTLS(t, n, false); err != nil {
				t.Fatal(err)
			}
			h := r.hello(t)
			tt.mutate(t, r, &h)
			r.send(t, h)
			re := r.expectReject(t)
			if re.code != tt.code || !strings.Contains(re.reason, tt.want) {
				t.Errorf("rejected with code %d %q, want code %d containing %q", re.code, re.reason, tt.code, tt.want)
			}
			checkRejected(t, n, tt.want)
		})
	}
}

func TestHandshakeReplayedProof(t *testing.T) {
	checkGoroutines(t)
	n := startNode(t, nil)
	// Session 1: a valid proof, captured.
	r1 := newRawPeer(t, testKey)
	if err := r1.dialTLS(t, n, false); err != nil {
		t.Fatal(err)
	}
	captured := r1.hello(t).proof
	r1.conn.Close()
	// Session 2, same identity: the captured proof must not verify.
	r2 := &rawPeer{id: r1.id, key: testKey}
	if err := r2.dialTLS(t, n, false); err != nil {
		t.Fatal(err)
	}
	h := r2.hello(t)
	if h.proof == captured {
		t.Fatal("two sessions produced the same proof")
	}
	h.proof = captured
	r2.send(t, h)
	re := r2.expectReject(t)
	if !errors.Is(re, ErrWrongMesh) {
		t.Errorf("replayed proof rejected with %v, want ErrWrongMesh", re)
	}
	checkRejected(t, n, "replayed")
}

func TestHandshakeGarbage(t *testing.T) {
	checkGoroutines(t)
	n := startNode(t, nil)
	t.Run("before TLS", func(t *testing.T) {
		c, err := net.Dial("tcp", n.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("\x00garbage", 100)))
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("node did not close the connection: %v", err)
		}
	})
	t.Run("after TLS", func(t *testing.T) {
		r := newRawPeer(t, testKey)
		if err := r.dialTLS(t, n, false); err != nil {
			t.Fatal(err)
		}
		r.tc.Write(bytes.Repeat([]byte("hello there, this is no frame. "), 64))
		re := r.expectReject(t)
		if re.code != codeProtocol || !strings.Contains(re.reason, "unknown frame type 0x68") {
			t.Errorf("got %d %q", re.code, re.reason)
		}
		checkRejected(t, n, "unknown frame type")
	})
	t.Run("oversized hello", func(t *testing.T) {
		r := newRawPeer(t, testKey)
		if err := r.dialTLS(t, n, false); err != nil {
			t.Fatal(err)
		}
		r.tc.Write(appendFrameHeader(nil, frameHello, 1<<30))
		re := r.expectReject(t)
		if !strings.Contains(re.reason, "frame too large") {
			t.Errorf("got %q", re.reason)
		}
		checkRejected(t, n, "frame too large")
	})
	t.Run("wrong first frame", func(t *testing.T) {
		r := newRawPeer(t, testKey)
		if err := r.dialTLS(t, n, false); err != nil {
			t.Fatal(err)
		}
		r.tc.Write(appendToken(nil, framePing, 1))
		re := r.expectReject(t)
		if !strings.Contains(re.reason, "expected a hello frame") {
			t.Errorf("got %q", re.reason)
		}
		checkRejected(t, n, "expected a hello frame")
	})
	// The node still works.
	m := startNode(t, nil)
	connect(t, m, n)
}

func TestHandshakeNoClientCertificate(t *testing.T) {
	checkGoroutines(t)
	n := startNode(t, nil)
	r := newRawPeer(t, testKey)
	err := r.dialTLS(t, n, true)
	if err == nil {
		// TLS 1.3 clients finish before the server has checked them: the
		// refusal arrives on the first read.
		_, _, err = r.readFrame()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want a certificate error, got %v", err)
	}
	eventually(t, "log line", func() bool {
		return strings.Contains(n.logs.String(), "client didn't provide a certificate")
	})
	if len(n.Peers()) != 0 {
		t.Fatal("peer without certificate was accepted")
	}
}

func TestHandshakeTimeout(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig(t, testKey)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	n := startNode(t, cfg)
	c, err := net.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	// Say nothing: the node must hang up on its own.
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("silent connection not closed by the node: %v", err)
	}
}

func TestHandshakeFlood(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig(t, testKey)
	cfg.MaxHandshakes = 4
	cfg.HandshakeTimeout = 500 * time.Millisecond
	n := startNode(t, cfg)
	var conns []net.Conn
	for range 60 {
		c, err := net.Dial("tcp", n.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, "refusals", func() bool { return n.Stats().HandshakesRefused > 0 })
	if got := n.hsMaxInFlight.Load(); got > int64(cfg.MaxHandshakes) {
		t.Errorf("%d handshakes ran at once, limit %d", got, cfg.MaxHandshakes)
	}
	// Every flooding connection gets closed: refused at once, or timed out.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(wait))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Errorf("flood connection not closed: %v", err)
			}
			c.Close()
		})
	}
	wg.Wait()
	// A legitimate peer gets in afterwards.
	m := startNode(t, nil)
	connect(t, m, n)
	if got := n.hsMaxInFlight.Load(); got > int64(cfg.MaxHandshakes) {
		t.Errorf("%d handshakes ran at once, limit %d", got, cfg.MaxHandshakes)
	}
}

func TestTwoMeshesRejectEachOther(t *testing.T) {
	checkGoroutines(t)
	a := startNode(t, nil)
	other, _ := NewKey()
	b := startNode(t, testConfig(t, other))
	a.hint(b)
	for _, n := range []*node{a, b} {
		ev := n.waitEvent(func(ev Event) bool { return ev.Type == EventRejected }, "rejected event")
		if !strings.Contains(ev.Reason, "different mesh") {
			t.Errorf("node %s: rejected for %q", n.ID().Short(), ev.Reason)
		}
		if len(n.Peers()) != 0 {
			t.Errorf("node %s has peers", n.ID().Short())
		}
	}
	if !strings.Contains(a.logs.String(), "different mesh") || !strings.Contains(b.logs.String(), "different mesh") {
		t.Error("the rejection is not logged on both sides")
	}
}

func TestDialWrongNodeID(t *testing.T) {
	checkGoroutines(t)
	a, b := startNode(t, nil), startNode(t, nil)
	impostor, _ := NewIdentity()
	h := Hint{ID: impostor.ID, Addrs: []netip.AddrPort{netip.MustParseAddrPort(b.Addr().String())}}
	a.AddHint(h)
	ev := a.waitEvent(func(ev Event) bool { return ev.Type == EventRejected }, "rejected event")
	if ev.Peer != impostor.ID || !strings.Contains(ev.Reason, "expected node "+impostor.ID.Short()) {
		t.Errorf("rejected event %+v", ev)
	}
	if len(a.Peers()) != 0 || len(b.Peers()) != 0 {
		t.Error("a session was set up with the wrong node")
	}
}

func TestStaticPeerIsSelf(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig(t, testKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.ListenAddr = addr
	cfg.StaticPeers = []string{addr}
	n := startNode(t, cfg)
	// The dial loop gives up on itself: the target disappears.
	eventually(t, "self target dropped", func() bool {
		n.mu.RLock()
		defer n.mu.RUnlock()
		return len(n.targets) == 0
	})
	if !strings.Contains(n.logs.String(), reasonSelf) {
		t.Error("self connection not logged")
	}
}

// fullPeer completes the handshake as a real node would and returns the
// control stream, for tests that misbehave inside a session.
func (r *rawPeer) fullPeer(t *testing.T, n *node) (*yamux.Session, *yamux.Stream) {
	t.Helper()
	if err := r.dialTLS(t, n, false); err != nil {
		t.Fatal(err)
	}
	r.send(t, r.hello(t))
	if typ, _, err := r.readFrame(); err != nil || typ != frameHello {
		t.Fatalf("hello: %v %v", typ, err)
	}
	r.tc.Write(appendFrame(nil, frameOK, nil))
	if typ, _, err := r.readFrame(); err != nil || typ != frameOK {
		t.Fatalf("verdict: %v %v", typ, err)
	}
	r.conn.SetDeadline(time.Time{})
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(r.tc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	s, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte{streamControl})
	n.waitUp(r.id.ID)
	return sess, s
}

func TestSessionRejectsBadFrames(t *testing.T) {
	checkGoroutines(t)
	n := startNode(t, nil)
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"short message", appendFrame(nil, frameMsg, []byte{0, 1, 2}), "message frame of 3 bytes"},
		{"subservice overrun", appendFrame(nil, frameMsg, append(make([]byte, 9), 200, 'x')), "overruns"},
		{"oversized message", appendFrameHeader(nil, frameMsg, 64<<20), "frame too large"},
		{"unknown type", appendFrame(nil, 0x42, nil), "unknown frame type 0x42"},
		{"hello in session", appendFrame(nil, frameHello, nil), "unexpected frame type 0x01"},
		{"bad ping", appendFrame(nil, framePing, []byte{1}), "want 8"},
		{"bad catalog", appendFrame(nil, frameCatalog, []byte{0, 0, 0, 9, 1}), "catalog of 9 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRawPeer(t, testKey)
			_, ctrl := r.fullPeer(t, n)
			ctrl.Write(tt.frame)
			// The node answers with an error frame, then goes away.
			var hdr [frameHeaderLen]byte
			ctrl.SetReadDeadline(time.Now().Add(wait))
			var got *remoteError
			for got == nil {
				typ, body, err := readFrame(ctrl, &hdr, 1<<20)
				if err != nil {
					t.Fatalf("want an error frame, got %v", err)
				}
				if typ == frameError {
					got, _ = decodeError(body)
				}
			}
			if !strings.Contains(got.reason, tt.want) {
				t.Errorf("error frame %q, want %q", got.reason, tt.want)
			}
			ev := n.waitDown(r.id.ID)
			if !strings.Contains(ev.Reason, "protocol error") || !strings.Contains(ev.Reason, tt.want) {
				t.Errorf("peer-down reason %q", ev.Reason)
			}
		})
	}
	// Unknown optional frames are skipped.
	r := newRawPeer(t, testKey)
	_, ctrl := r.fullPeer(t, n)
	ctrl.Write(appendFrame(nil, 0x90, []byte("future")))
	ctrl.Write(appendMsg(nil, 0, 0, "chat", []byte("still here")))
	if msg := n.waitMsg(); string(msg.Payload) != "still here" {
		t.Fatalf("got %q", msg.Payload)
	}
}
