package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

// wait bounds every wait for an event in these tests. It is a ceiling for
// a hung test, not a timing assertion.
const wait = 30 * time.Second

// loopNet is an in-process mesh: every node's Router delivers straight into
// the other nodes, and a refused message with an id is nacked back, as the
// real mesh does.
type loopNet struct {
	mu    sync.Mutex
	nodes map[string]loopNode
}

// loopNode is a node on a loopNet: a Supervisor or a recorder.
type loopNode interface {
	Deliver(from Peer, sub string, payload []byte, broadcast bool) error
	Nack(sub string, id uint64, from Peer, reason string)
}

func newLoopNet() *loopNet { return &loopNet{nodes: make(map[string]loopNode)} }

func (n *loopNet) add(id string, node loopNode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[id] = node
}

func (n *loopNet) node(id string) loopNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodes[id]
}

// loopRouter is one node's Router on a loopNet.
type loopRouter struct {
	net   *loopNet
	self  Peer
	names map[string]string // node id -> name, for Peers

	// sendHook, when set, handles Send for the nodes it returns true for.
	sendHook func(to, sub string, payload []byte, id uint64) (bool, error)
	sends    atomic.Int64
	lastID   atomic.Uint64
	noIDs    atomic.Int64 // sends without an id
}

func (r *loopRouter) Self() Peer { return r.self }

func (r *loopRouter) Peers() []Peer {
	r.net.mu.Lock()
	defer r.net.mu.Unlock()
	var out []Peer
	for id := range r.net.nodes {
		if id != r.self.ID {
			out = append(out, Peer{ID: id, Name: r.names[id]})
		}
	}
	return out
}

func (r *loopRouter) Send(to, sub string, payload []byte, id uint64) error {
	r.sends.Add(1)
	r.lastID.Store(id)
	if id == 0 {
		r.noIDs.Add(1)
	}
	if r.sendHook != nil {
		if handled, err := r.sendHook(to, sub, payload, id); handled {
			return err
		}
	}
	dst := r.net.node(to)
	if dst == nil {
		return fmt.Errorf("loop: %w: %s", ErrNoPeer, to)
	}
	if err := dst.Deliver(r.self, sub, payload, false); err != nil && id != 0 {
		if src := r.net.node(r.self.ID); src != nil {
			// As the mesh does: the reason is the error text.
			src.Nack(sub, id, Peer{ID: to, Name: r.names[to]}, err.Error())
		}
	}
	return nil
}

func (r *loopRouter) Broadcast(sub string, payload []byte) int {
	r.net.mu.Lock()
	var dsts []loopNode
	for id, n := range r.net.nodes {
		if id != r.self.ID {
			dsts = append(dsts, n)
		}
	}
	r.net.mu.Unlock()
	for _, d := range dsts {
		d.Deliver(r.self, sub, payload, true)
	}
	return len(dsts)
}

// recMsg is a message a recorder received.
type recMsg struct {
	From      Peer
	Sub       string
	Broadcast bool
	Data      map[string]any
}

// recorder is a node of the loop network that is the test itself: it
// records what plugins send it.
type recorder struct {
	peer Peer
	msgs chan recMsg
	// ignoreBroadcasts drops broadcasts unseen (for benchmarks that flood).
	ignoreBroadcasts atomic.Bool
}

func (r *recorder) Deliver(from Peer, sub string, payload []byte, broadcast bool) error {
	if broadcast && r.ignoreBroadcasts.Load() {
		return nil
	}
	m := recMsg{From: from, Sub: sub, Broadcast: broadcast}
	json.Unmarshal(payload, &m.Data)
	select {
	case r.msgs <- m:
		return nil
	default:
		return ErrQueueFull
	}
}

func (r *recorder) Nack(string, uint64, Peer, string) {}

// expect returns the first message for which match is true, discarding
// the others, or fails the test after wait.
func (r *recorder) expect(t testing.TB, what string, match func(recMsg) bool) recMsg {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-r.msgs:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("recorder: no %s within %v", what, wait)
		}
	}
}

// expectEach waits until each matcher has matched a message, in any order,
// discarding the others, and returns the matches in matcher order.
func (r *recorder) expectEach(t testing.TB, what string, matchers ...func(recMsg) bool) []recMsg {
	t.Helper()
	got := make([]recMsg, len(matchers))
	done := make([]bool, len(matchers))
	left := len(matchers)
	deadline := time.After(wait)
	for left > 0 {
		select {
		case m := <-r.msgs:
			for i, match := range matchers {
				if !done[i] && match(m) {
					got[i], done[i] = m, true
					left--
					break
				}
			}
		case <-deadline:
			t.Fatalf("recorder: %d of %d %s missing after %v", left, len(matchers), what, wait)
		}
	}
	return got
}

// testNode is a Supervisor on a loopNet, running until the test ends.
type testNode struct {
	sv     *Supervisor
	peer   Peer
	router *loopRouter
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned runErr
	runErr error
}

// shortDir returns a fresh directory with a short path (unix socket paths
// are limited to 107 bytes; t.TempDir paths grow with the test name).
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type testMesh struct {
	t     testing.TB
	net   *loopNet
	names map[string]string
	rec   *recorder
	sups  []*Supervisor
}

func newMesh(t testing.TB) *testMesh {
	m := &testMesh{t: t, net: newLoopNet(), names: map[string]string{}}
	m.rec = &recorder{peer: Peer{ID: "rec0000000000000", Name: "recorder"}, msgs: make(chan recMsg, 4096)}
	m.names[m.rec.peer.ID] = m.rec.peer.Name
	m.net.add(m.rec.peer.ID, m.rec)
	return m
}

// node starts a Supervisor called name on the mesh. mod adjusts its Config.
func (m *testMesh) node(name string, mod func(*Config)) *testNode {
	t := m.t
	t.Helper()
	id := fmt.Sprintf("%-16s", name)
	id = strings.ReplaceAll(id, " ", "0")
	peer := Peer{ID: id, Name: name}
	m.names[id] = name
	r := &loopRouter{net: m.net, self: peer, names: m.names}
	dir := shortDir(t)
	cfg := Config{
		SocketPath:     filepath.Join(dir, "s.sock"),
		LogDir:         filepath.Join(dir, "logs"),
		Router:         r,
		StopGrace:      2 * time.Second,
		BackoffInitial: 20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	sv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.net.add(id, sv)
	ctx, cancel := context.WithCancel(context.Background())
	for _, other := range m.sups {
		other.PeerEvent(true, peer)
	}
	m.sups = append(m.sups, sv)
	n := &testNode{sv: sv, peer: peer, router: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		n.runErr = sv.Run(ctx)
		close(n.done)
	}()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop ends Run and waits for it.
func (n *testNode) stop(t testing.TB) {
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(wait):
		t.Errorf("Run did not return within %v", wait)
	}
}

// waitFor polls cond until it holds, or fails the test after wait.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState waits until the named plugin is in state st and returns its status.
func (n *testNode) waitState(t testing.TB, name string, st State) Status {
	t.Helper()
	var s Status
	waitFor(t, name+" "+st, func() bool {
		var ok bool
		s, ok = n.sv.Status(name)
		return ok && s.State == st
	})
	return s
}

// helperSpec runs this test binary as a plugin in the given helper mode.
func helperSpec(t testing.TB, name, mode string, env ...string) Spec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name:    name,
		Version: "1.0.0",
		Dir:     filepath.Dir(exe),
		Argv:    []string{exe, "-test.run=^TestHelperProcess$"},
		// The race detector sleeps 1 s in a process exiting with status 0.
		Env: append([]string{"SUPTEST_MODE=" + mode, "GORACE=atexit_sleep_ms=0"}, env...),
	}
}

// probe is the test's end of a "proxy" helper plugin: what the test writes
// goes to the node as the plugin's frames, and the node's frames to the
// plugin come back here. Token and PID are the plugin's.
type probe struct {
	t     testing.TB
	c     net.Conn
	lr    *subservice.LineReader
	Token string
	PID   int
}

// probeListener accepts proxy helpers.
type probeListener struct {
	ln   net.Listener
	path string
}

func newProbeListener(t testing.TB) *probeListener {
	t.Helper()
	path := filepath.Join(shortDir(t), "p.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &probeListener{ln: ln, path: path}
}

func (pl *probeListener) env() string { return "SUPTEST_PROBE=" + pl.path }

// accept waits for the next proxy helper to connect.
func (pl *probeListener) accept(t testing.TB) *probe {
	t.Helper()
	pl.ln.(*net.UnixListener).SetDeadline(time.Now().Add(wait))
	c, err := pl.ln.Accept()
	if err != nil {
		t.Fatalf("no proxy plugin connected: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	p := &probe{t: t, c: c, lr: subservice.NewLineReader(c, 64<<20)}
	c.SetReadDeadline(time.Now().Add(wait))
	line, err := p.lr.ReadLine()
	if err != nil {
		t.Fatalf("proxy preamble: %v", err)
	}
	var pre struct {
		Token string `json:"token"`
		PID   int    `json:"pid"`
	}
	if err := json.Unmarshal(line, &pre); err != nil {
		t.Fatalf("proxy preamble %q: %v", line, err)
	}
	p.Token, p.PID = pre.Token, pre.PID
	return p
}

// send writes raw lines (a "\n" is added to each).
func (p *probe) send(lines ...string) {
	p.t.Helper()
	for _, l := range lines {
		p.c.SetWriteDeadline(time.Now().Add(wait))
		if _, err := io.WriteString(p.c, l+"\n"); err != nil {
			p.t.Fatalf("write to plugin proxy: %v", err)
		}
	}
}

// sendf writes one frame built with fmt.Sprintf.
func (p *probe) sendf(format string, args ...any) { p.t.Helper(); p.send(fmt.Sprintf(format, args...)) }

// next returns the next frame from the node.
func (p *probe) next() *subservice.Frame {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(wait))
	line, err := p.lr.ReadLine()
	if err != nil {
		p.t.Fatalf("read from node: %v", err)
	}
	f, err := subservice.DecodeFrame(line)
	if err != nil {
		p.t.Fatalf("node sent a bad frame %q: %v", line, err)
	}
	return f
}

// hello says hello and returns the welcome.
func (p *probe) hello() *subservice.Frame {
	p.t.Helper()
	p.sendf(`{"op":"hello","token":%q,"protocol":1}`, p.Token)
	f := p.next()
	if f.Op != subservice.OpWelcome {
		p.t.Fatalf("got %+v, want welcome", f)
	}
	return f
}

// expectError reads the next frame and checks it is an error with code and id.
func (p *probe) expectError(code string, id uint64) *subservice.Frame {
	p.t.Helper()
	f := p.next()
	if f.Op != subservice.OpError || f.Code != code || f.ID != id {
		p.t.Fatalf("got %+v, want error %s id %d", f, code, id)
	}
	return f
}

// alive reports whether pid is a process that has not exited (a zombie
// counts as exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestHelperProcess is not a test: it is the body of the helper plugins,
// run as a child of the supervisor under test.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("SUPTEST_MODE")
	if mode == "" {
		return
	}
	os.Exit(helperMain(mode))
}

func helperMain(mode string) int {
	ctx := context.Background()
	report := os.Getenv("SUPTEST_REPORT")
	switch mode {
	case "exit0":
		return 0
	case "exit1":
		fmt.Fprintln(os.Stderr, "helper: exiting at once")
		return 1
	case "proxy":
		node, err := net.Dial("unix", os.Getenv(subservice.EnvSocket))
		if err != nil {
			return 10
		}
		pc, err := net.Dial("unix", os.Getenv("SUPTEST_PROBE"))
		if err != nil {
			return 11
		}
		fmt.Fprintf(pc, "{\"token\":%q,\"pid\":%d}\n", os.Getenv(subservice.EnvToken), os.Getpid())
		go func() {
			io.Copy(node, pc)
			node.(*net.UnixConn).CloseWrite()
		}()
		io.Copy(pc, node)
		return 3
	case "echo", "stubborn", "spawner", "hello", "cling":
	case "blast":
		return helperBlast()
	case "node":
		return helperNode()
	case "count":
		return helperCount()
	default:
		fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
		return 12
	}
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
	}
	p, err := subservice.Connect(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: connect:", err)
		return 4
	}
	switch mode {
	case "hello":
		<-p.Done()
		return 0
	case "cling": // outlives its connection
		time.Sleep(time.Hour)
		return 0
	}
	welcome := map[string]any{
		"pid": os.Getpid(), "self": p.Self(), "subservice": p.Subservice(),
		"version": p.Version(), "peers": p.Peers(), "env_node": os.Getenv(subservice.EnvNodeID),
		"env_extra": os.Getenv("SUPTEST_EXTRA"), "cwd": mustGetwd(),
	}
	if mode == "spawner" {
		child := exec.Command("sleep", "300")
		if err := child.Start(); err != nil {
			return 5
		}
		welcome["child"] = child.Process.Pid
	}
	if report != "" {
		p.Send(report, map[string]any{"welcome": welcome})
	}
	p.Broadcast(map[string]any{"hello": p.Self().ID})
	for {
		select {
		case m, ok := <-p.Messages():
			if !ok {
				return 2
			}
			if report != "" && m.From.ID != report {
				p.Send(report, map[string]any{"got": map[string]any{"from": m.From, "broadcast": m.Broadcast, "data": m.Data}, "pid": os.Getpid()})
			}
			var cmd struct{ Broadcast any }
			if m.From.ID == report && m.Decode(&cmd) == nil && cmd.Broadcast != nil {
				p.Broadcast(cmd.Broadcast)
				continue
			}
			if m.Broadcast || m.From.ID == report {
				p.Send(m.From.ID, map[string]any{"reply": m.Data, "pid": os.Getpid()})
			}
		case e, ok := <-p.Errors():
			if ok && report != "" {
				p.Send(report, map[string]any{"error": map[string]any{"id": e.ID, "code": e.Code, "to": e.To}})
			}
		case ev, ok := <-p.Events():
			if ok && report != "" {
				p.Send(report, map[string]any{"peer": map[string]any{"up": ev.Up, "id": ev.Peer.ID}})
			}
		}
	}
}

// helperNode is a node of its own: it runs a Supervisor with one plugin,
// prints "pid N" for that plugin, and waits to be killed.
func helperNode() int {
	dir := os.Getenv("SUPTEST_DIR")
	r := &loopRouter{net: newLoopNet(), self: Peer{ID: "mini000000000000", Name: "mini"}}
	sv, err := New(Config{SocketPath: filepath.Join(dir, "mini.sock"), Router: r})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 7
	}
	go sv.Run(context.Background())
	exe, _ := os.Executable()
	err = sv.Start(Spec{Name: "orphan", Version: "1.0.0", Dir: dir, Argv: []string{exe, "-test.run=^TestHelperProcess$"},
		Env: []string{"SUPTEST_MODE=cling", "GORACE=atexit_sleep_ms=0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 8
	}
	for i := 0; i < 3000; i++ {
		if st, _ := sv.Status("orphan"); st.State == StateRunning {
			fmt.Printf("pid %d\n", st.PID)
			select {}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 9
}

func mustGetwd() string {
	d, _ := os.Getwd()
	return d
}

// helperBlast waits for a "go" message with a count n and a size, then
// broadcasts n messages of that size and finally sends "done" to report.
func helperBlast() int {
	p, err := subservice.Connect(context.Background())
	if err != nil {
		return 4
	}
	m, ok := <-p.Messages()
	if !ok {
		return 2
	}
	var cmd struct{ N, Size int }
	m.Decode(&cmd)
	data := json.RawMessage(strconv.Quote(strings.Repeat("x", cmd.Size)))
	for range cmd.N {
		if _, err := p.Broadcast(data); err != nil {
			return 6
		}
	}
	p.Send(os.Getenv("SUPTEST_REPORT"), map[string]any{"done": cmd.N})
	<-p.Done()
	return 0
}

// helperCount counts the messages it receives and reports every time the
// count reaches a multiple of SUPTEST_EVERY.
func helperCount() int {
	p, err := subservice.Connect(context.Background())
	if err != nil {
		return 4
	}
	every, _ := strconv.Atoi(os.Getenv("SUPTEST_EVERY"))
	every = max(every, 1)
	report := os.Getenv("SUPTEST_REPORT")
	n := 0
	for range p.Messages() {
		n++
		if n%every == 0 {
			p.Send(report, map[string]any{"count": n})
		}
	}
	return 2
}

// reports filters recorder messages by a top-level key and the sending node.
func isReport(key string, from Peer) func(recMsg) bool {
	return func(m recMsg) bool {
		_, ok := m.Data[key]
		return ok && m.From.ID == from.ID
	}
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

func sub(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}
