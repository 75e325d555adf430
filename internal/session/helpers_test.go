package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/mesh"
)

// wait bounds every wait for an event in these tests. It is a ceiling for a
// hung test on a shared, slow machine, not a timing assertion.
const wait = 20 * time.Second

var (
	hostPeer  = Peer{ID: strings.Repeat("a", 32), Name: "hostnode"}
	alicePeer = Peer{ID: strings.Repeat("b", 32), Name: "alice"}
	bobPeer   = Peer{ID: strings.Repeat("c", 32), Name: "bob"}
)

// scripts are the programs the tests run as hosted plugins.
var scripts = map[string]string{
	// echo copies stdin to stdout.
	"echo": "#!/bin/sh\nexec cat\n",
	// whoami prints its environment, then echoes.
	"whoami": "#!/bin/sh\necho \"$NEARBY_SESSION $NEARBY_PRESENTER_ID $NEARBY_PRESENTER_NAME $NEARBY_NODE_NAME $NEARBY_PLUGIN $NEARBY_VERSION\"\nexec cat\n",
	// exit3 reads a line, says so on stderr, and exits with status 3.
	"exit3": "#!/bin/sh\nread line\necho \"got $line\" >&2\nexit 3\n",
	// spam writes 4 MiB of output at once.
	"spam": "#!/bin/sh\nexec head -c 4194304 /dev/zero\n",
	// flood writes 32 MiB of output, then waits.
	"flood": "#!/bin/sh\nhead -c 33554432 /dev/zero\nexec sleep 3600\n",
	// deaf never reads its stdin and writes nothing.
	"deaf": "#!/bin/sh\nexec sleep 3600\n",
	// stubborn ignores SIGTERM.
	"stubborn": "#!/bin/sh\ntrap '' TERM\necho ready\nwhile :; do sleep 1; done\n",
}

// installDir writes every script into a fresh directory (an install dir).
func installDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func spec(dir, name, version, script string) Spec {
	return Spec{Name: name, Version: version, Dir: dir, Argv: []string{"./" + script}}
}

// testLogger returns a logger that writes to the test log at Debug.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// newHost returns a Host closed at the end of the test.
func newHost(t testing.TB, mod func(*Config)) *Host {
	t.Helper()
	cfg := Config{Self: hostPeer, LogDir: t.TempDir(), StopGrace: 500 * time.Millisecond, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// transport opens streams from a presenter to a Host.
type transport interface {
	// dial opens a "session" (or "session-ctl") stream as presenter.
	dial(t testing.TB, presenter Peer, service string) net.Conn
}

// pipeTransport connects with net.Pipe and serves each stream on its own
// goroutine, as the mesh does.
type pipeTransport struct {
	h  *Host
	wg sync.WaitGroup
}

func newPipeTransport(t testing.TB, h *Host) *pipeTransport {
	p := &pipeTransport{h: h}
	t.Cleanup(func() {
		h.Close()
		p.wg.Wait()
	})
	return p
}

func (p *pipeTransport) dial(t testing.TB, presenter Peer, service string) net.Conn {
	a, b := net.Pipe()
	p.wg.Go(func() {
		if service == CtlService {
			p.h.HandleCtl(presenter, b)
		} else {
			p.h.HandleStream(presenter, b)
		}
	})
	return a
}

// meshTransport connects presenters to the host over a real mesh on
// 127.0.0.1 (TLS 1.3 and yamux): the host's node and one node per presenter.
type meshTransport struct {
	host  *mesh.Mesh
	nodes map[string]*mesh.Mesh // presenter name -> its mesh
}

func newMeshTransport(t testing.TB, h *Host, presenters ...Peer) *meshTransport {
	t.Helper()
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[mesh.NodeID]Peer{}
	start := func(name string, handlers map[string]mesh.StreamHandler, static ...string) *mesh.Mesh {
		id, err := mesh.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		cfg := mesh.DefaultConfig()
		cfg.Identity, cfg.Key, cfg.Name, cfg.ListenAddr = id, key, name, "127.0.0.1:0"
		cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 500*time.Millisecond
		cfg.Handlers = handlers
		cfg.StaticPeers = static // no polite delay, unlike hints
		cfg.Logger = slog.New(slog.DiscardHandler)
		m, err := mesh.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return m
	}
	// The host serves the presenter's real mesh identity; map it to the
	// test's Peer so Info shows the expected names.
	var mu sync.Mutex
	peerOf := func(id mesh.NodeID) Peer {
		mu.Lock()
		defer mu.Unlock()
		return ids[id]
	}
	mt := &meshTransport{nodes: map[string]*mesh.Mesh{}}
	mt.host = start(hostPeer.Name, map[string]mesh.StreamHandler{
		Service:    func(from mesh.NodeID, c net.Conn) { h.HandleStream(peerOf(from), c) },
		CtlService: func(from mesh.NodeID, c net.Conn) { h.HandleCtl(peerOf(from), c) },
	})
	// Closing the Host before the meshes stop lets their handlers return.
	t.Cleanup(h.Close)
	for _, p := range presenters {
		m := start(p.Name, nil, mt.host.Addr().String())
		mu.Lock()
		ids[m.ID()] = p
		mu.Unlock()
		mt.nodes[p.Name] = m
	}
	for _, m := range mt.nodes {
		deadline := time.Now().Add(wait)
		for {
			if _, ok := m.Peer(mt.host.ID()); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("mesh peers did not connect")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return mt
}

func (mt *meshTransport) dial(t testing.TB, presenter Peer, service string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := mt.nodes[presenter.Name].OpenStream(ctx, mt.host.ID(), service)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// transports runs f over net.Pipe and over a real mesh.
func transports(t *testing.T, mod func(*Config), f func(t *testing.T, h *Host, tr transport)) {
	t.Run("pipe", func(t *testing.T) {
		h := newHost(t, mod)
		f(t, h, newPipeTransport(t, h))
	})
	t.Run("mesh", func(t *testing.T) {
		h := newHost(t, mod)
		f(t, h, newMeshTransport(t, h, alicePeer, bobPeer))
	})
}

// open opens a session of plugin as presenter.
func open(t testing.TB, tr transport, presenter Peer, plugin string) *Conn {
	t.Helper()
	c, err := tryOpen(t, tr, presenter, plugin)
	if err != nil {
		t.Fatalf("open %s as %s: %v", plugin, presenter.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tryOpen(t testing.TB, tr transport, presenter Peer, plugin string) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return Open(ctx, tr.dial(t, presenter, Service), Request{Plugin: plugin}, wait)
}

// readUntil reads from c until what it read contains want.
func readUntil(t testing.TB, c *Conn, want string) string {
	t.Helper()
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for !strings.Contains(got.String(), want) {
			n, err := c.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read %q: %v after %q", want, err, got.String())
		}
	case <-time.After(wait):
		t.Fatalf("read %q: timed out", want)
	}
	return got.String()
}

// waitEnd waits for the session to end and returns why.
func waitEnd(t testing.TB, c *Conn) End {
	t.Helper()
	go io.Copy(io.Discard, readerOf(c))
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("session did not end")
	}
	e, _ := c.End()
	return e
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

func readerOf(c *Conn) io.Reader { return readerFunc(c.Read) }

// waitHostEnded waits until the host lists session id as ended.
func waitHostEnded(t testing.TB, h *Host, id string) Info {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		in, ok := h.Session(id)
		if ok && in.State == StateEnded {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s not ended on the host: %+v", id, in)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether pid has exited (and been reaped).
func gone(pid int) bool {
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

func mustServe(t testing.TB, h *Host, s Spec) {
	t.Helper()
	if _, err := h.Serve(s); err != nil {
		t.Fatal(err)
	}
}

func infoFor(t testing.TB, h *Host, id string) Info {
	t.Helper()
	in, ok := h.Session(id)
	if !ok {
		t.Fatalf("host does not list session %s", id)
	}
	return in
}

func errCode(err error) string {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Code
	}
	return fmt.Sprintf("not a refusal: %v", err)
}
