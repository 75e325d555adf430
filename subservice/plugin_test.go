package subservice_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/subservice"
)

// wait bounds every wait for an event; it is a ceiling, not a timing assertion.
const wait = 30 * time.Second

// sent is a message the test router was asked to carry. A batch payload
// is recorded as a sent per message, each with the batch's size in n.
type sent struct {
	to        string
	broadcast bool
	data      string
	id        uint64
	n         int
}

// splitPayload returns the messages a mesh payload carries: itself, or
// the values of a batch payload (0x00 'B' then a JSON array, docs/WIRE.md).
func splitPayload(payload []byte) []string {
	if len(payload) < 2 || payload[0] != 0 || payload[1] != 'B' {
		return []string{string(payload)}
	}
	var out []string
	for d := range subservice.BatchItems(payload[2:]) {
		out = append(out, string(d))
	}
	return out
}

// router is a Router for one node whose peers are the test itself: it
// records what the plugin sends. Sends to "ghost" fail with ErrNoPeer; sends
// to "refuser" are nacked as the mesh would; sends to "sink" wait on gate.
type router struct {
	sv    *supervisor.Supervisor
	sent  chan sent
	gate  chan struct{}
	peers []subservice.Peer
	calls atomic.Int64 // Send and Broadcast calls: mesh messages
}

var (
	self    = subservice.Peer{ID: "self000000000000", Name: "self"}
	peerB   = subservice.Peer{ID: "bravo00000000000", Name: "bravo"}
	refuser = subservice.Peer{ID: "refuser000000000", Name: "refuser"}
)

func (r *router) Self() subservice.Peer    { return self }
func (r *router) Peers() []subservice.Peer { return r.peers }
func (r *router) Send(to, sub string, payload []byte, id uint64) error {
	r.calls.Add(1)
	switch to {
	case "ghost":
		return fmt.Errorf("test: %w", supervisor.ErrNoPeer)
	case refuser.ID:
		go r.sv.Nack(sub, id, refuser, supervisor.NackReason(supervisor.ErrNotRunning))
		return nil
	case "sink":
		<-r.gate
	}
	msgs := splitPayload(payload)
	for _, d := range msgs {
		r.sent <- sent{to: to, data: d, id: id, n: len(msgs)}
	}
	return nil
}
func (r *router) Broadcast(sub string, payload []byte) int {
	r.calls.Add(1)
	msgs := splitPayload(payload)
	for _, d := range msgs {
		r.sent <- sent{broadcast: true, data: d, n: len(msgs)}
	}
	return 1
}

func (r *router) next(t *testing.T) sent {
	t.Helper()
	select {
	case s := <-r.sent:
		return s
	case <-time.After(wait):
		t.Fatal("router: nothing sent")
		return sent{}
	}
}

// TestHelperProcess is not a test: run as a plugin by the supervisor, it
// writes its socket and token to SUBTEST_LEAK and waits for SIGTERM, so
// that the test process can speak as that plugin through the SDK.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv("SUBTEST_LEAK")
	if path == "" {
		return
	}
	b, _ := json.Marshal(map[string]string{"socket": os.Getenv(subservice.EnvSocket), "token": os.Getenv(subservice.EnvToken)})
	os.WriteFile(path+".tmp", b, 0o600)
	os.Rename(path+".tmp", path)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	os.Exit(0)
}

type env struct {
	sv     *supervisor.Supervisor
	r      *router
	socket string
	token  string
}

// start runs a supervisor, starts a helper plugin called name, and returns
// the socket and token that plugin would use.
func start(t *testing.T, name string) *env {
	t.Helper()
	return startWith(t, name, nil)
}

// startWith is start with mod adjusting the supervisor's Config.
func startWith(t *testing.T, name string, mod func(*supervisor.Config)) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "ss")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &router{sent: make(chan sent, 8192), gate: make(chan struct{}), peers: []subservice.Peer{peerB}}
	cfg := supervisor.Config{SocketPath: filepath.Join(dir, "s.sock"), Router: r}
	if mod != nil {
		mod(&cfg)
	}
	sv, err := supervisor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.sv = sv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		sv.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.gate:
		default:
			close(r.gate)
		}
		cancel()
		<-done
	})
	exe, _ := os.Executable()
	leak := filepath.Join(dir, "leak.json")
	err = sv.Start(supervisor.Spec{Name: name, Version: "2.1.0", Dir: dir,
		Argv: []string{exe, "-test.run=^TestHelperProcess$"}, Env: []string{"SUBTEST_LEAK=" + leak, "GORACE=atexit_sleep_ms=0"}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	deadline := time.Now().Add(wait)
	for {
		if b, err := os.ReadFile(leak); err == nil && json.Unmarshal(b, &got) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("helper plugin did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &env{sv: sv, r: r, socket: got["socket"], token: got["token"]}
}

func (e *env) dial(t *testing.T, opts ...subservice.Option) *subservice.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, err := subservice.Dial(ctx, e.socket, e.token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPluginSendReceive(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	if p.Self() != self || p.Subservice() != "chat" || p.Version() != "2.1.0" || p.MaxLine() != subservice.DefaultMaxLine {
		t.Errorf("welcome: self %+v sub %q version %q max %d", p.Self(), p.Subservice(), p.Version(), p.MaxLine())
	}
	if peers := p.Peers(); len(peers) != 1 || peers[0] != peerB {
		t.Errorf("peers %+v", peers)
	}

	id, err := p.Send(peerB.ID, map[string]any{"text": "hi <there>"})
	if err != nil || id != 1 {
		t.Fatalf("Send = %d, %v", id, err)
	}
	if s := e.r.next(t); s.to != peerB.ID || s.data != `{"text":"hi <there>"}` || s.id == 0 {
		t.Errorf("router got %+v", s)
	}
	if id, err := p.Broadcast([]int{1, 2}); err != nil || id != 2 {
		t.Fatalf("Broadcast = %d, %v", id, err)
	}
	if s := e.r.next(t); !s.broadcast || s.data != `[1,2]` {
		t.Errorf("router got %+v", s)
	}

	if err := e.sv.Deliver(peerB, "chat", []byte(`{"text":"yo"}`), true); err != nil {
		t.Fatal(err)
	}
	m := <-p.Messages()
	var c struct{ Text string }
	if err := m.Decode(&c); err != nil || c.Text != "yo" || m.From != peerB || !m.Broadcast {
		t.Errorf("message %+v (%v)", m, err)
	}
	if err := m.Decode(new(int)); err == nil {
		t.Error("Decode into the wrong type succeeded")
	}

	c3 := subservice.Peer{ID: "charlie000000000", Name: "charlie"}
	e.sv.PeerEvent(true, c3)
	if ev := <-p.Events(); !ev.Up || ev.Peer != c3 {
		t.Errorf("event %+v", ev)
	}
	if peers := p.Peers(); len(peers) != 2 || peers[1] != c3 {
		t.Errorf("peers after up %+v", peers)
	}
	e.sv.PeerEvent(false, c3)
	if ev := <-p.Events(); ev.Up || ev.Peer != c3 {
		t.Errorf("event %+v", ev)
	}
	if peers := p.Peers(); len(peers) != 1 {
		t.Errorf("peers after down %+v", peers)
	}
}

func TestPluginErrors(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	id, _ := p.Send("ghost", 1)
	if err := <-p.Errors(); err.Code != subservice.CodeNoPeer || err.ID != id || err.To != "ghost" {
		t.Errorf("error %+v, want no-peer for id %d", err, id)
	}
	id, _ = p.Send(refuser.ID, 2)
	err := <-p.Errors()
	if err.Code != subservice.CodeNoSubservice || err.ID != id || err.To != refuser.ID {
		t.Errorf("error %+v, want no-subservice for id %d", err, id)
	}
	if !strings.Contains(err.Error(), "no-subservice") || !strings.Contains(err.Error(), fmt.Sprint(id)) {
		t.Errorf("Error() = %q", err.Error())
	}

	if _, err := p.Send("", 1); err == nil {
		t.Error("Send to an empty id")
	}
	if _, err := p.Send(peerB.ID, make(chan int)); err == nil {
		t.Error("Send of unmarshallable data")
	}
	if _, err := p.Broadcast(strings.Repeat("x", subservice.DefaultMaxLine)); !errors.Is(err, subservice.ErrTooLarge) {
		t.Errorf("oversized Broadcast: %v", err)
	}
	if err := p.SetMenu([]subservice.MenuItem{{ID: "", Label: "x"}}); !errors.Is(err, subservice.ErrBadFrame) {
		t.Errorf("bad menu: %v", err)
	}
	items := []subservice.MenuItem{{ID: "go", Label: "Go", Enabled: true}}
	if err := p.SetMenu(items); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		if st, _ := e.sv.Status("chat"); len(st.Menu) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("menu not stored")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.sv.Click("chat", "go"); err != nil {
		t.Fatal(err)
	}
	if item := <-p.Clicks(); item != "go" {
		t.Errorf("click %q", item)
	}
	// Nothing was sent for the refused calls.
	select {
	case s := <-e.r.sent:
		t.Errorf("router got %+v", s)
	default:
	}
}

func TestPluginClose(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	if _, err := p.Broadcast("last words"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if s := e.r.next(t); s.data != `"last words"` {
		t.Errorf("router got %+v", s)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := <-p.Messages(); ok {
		t.Error("Messages open after Close")
	}
	<-p.Done()
	if !errors.Is(p.Err(), subservice.ErrClosed) {
		t.Errorf("Err = %v", p.Err())
	}
	if _, err := p.Send(peerB.ID, 1); !errors.Is(err, subservice.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
}

func TestPluginNodeGoesAway(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	// Stopping the instance closes its connection, held here.
	if err := e.sv.Stop("chat"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(wait):
		t.Fatal("connection did not end")
	}
	if !errors.Is(p.Err(), subservice.ErrClosed) {
		t.Errorf("Err = %v", p.Err())
	}
	if _, ok := <-p.Messages(); ok {
		t.Error("Messages still open")
	}
}

func TestConnectErrors(t *testing.T) {
	t.Setenv(subservice.EnvSocket, "")
	if _, err := subservice.Connect(context.Background()); !errors.Is(err, subservice.ErrNotPlugin) {
		t.Errorf("Connect without environment: %v", err)
	}
	e := start(t, "chat")
	ctx := context.Background()
	_, err := subservice.Dial(ctx, e.socket, "not-the-token")
	var ne *subservice.Error
	if !errors.As(err, &ne) || ne.Code != subservice.CodeBadToken {
		t.Errorf("Dial with a bad token: %v", err)
	}
	if _, err := subservice.Dial(ctx, e.socket+".missing", e.token); err == nil {
		t.Error("Dial of a missing socket")
	}
	// The token still works after those failures, once.
	p := e.dial(t)
	p.Close()
	if _, err := subservice.Dial(ctx, e.socket, e.token); !errors.As(err, &ne) || ne.Code != subservice.CodeBadToken {
		t.Errorf("second use of a token: %v", err)
	}

	// A node that never answers: the context ends the wait.
	path := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1024))
			time.Sleep(wait)
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := subservice.Dial(tctx, path, "t"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial to a mute node: %v", err)
	}
}

func TestPluginConcurrentSends(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := p.Send(peerB.ID, []int{w, i}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := make([]int, workers)
	for range workers * each {
		var wi []int
		json.Unmarshal([]byte(e.r.next(t).data), &wi)
		if wi[1] != next[wi[0]] {
			t.Fatalf("worker %d: got message %d, want %d", wi[0], wi[1], next[wi[0]])
		}
		next[wi[0]]++
	}
}

func TestPluginBackpressure(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	const n = 2500
	data := strings.Repeat("x", 1000)
	var done atomic.Int64
	finished := make(chan error, 1)
	go func() {
		for range n {
			if _, err := p.Send("sink", data); err != nil {
				finished <- err
				return
			}
			done.Add(1)
		}
		finished <- nil
	}()
	// The node blocks in the mesh: Send must stall once the SDK's buffer
	// and the socket are full, before all 2.5 MB are queued.
	last, stable := int64(-1), 0
	deadline := time.Now().Add(wait)
	for stable < 10 {
		if time.Now().After(deadline) {
			t.Fatal("Send never stalled")
		}
		time.Sleep(20 * time.Millisecond)
		if d := done.Load(); d == last {
			stable++
		} else {
			last, stable = d, 0
		}
	}
	if last >= n {
		t.Fatalf("all %d sends returned while the node was not reading", n)
	}
	t.Logf("Send stalled after %d frames of ~1 KB", last)
	close(e.r.gate)
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
	for range n {
		e.r.next(t)
	}
}
