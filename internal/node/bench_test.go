package node

// Plugin-to-plugin messaging between two nodes, against the mesh's own
// node-to-node rate in the same run. Run inside the isolated namespace:
//
//	scripts/isolated.sh go test -run '^$' -bench PluginToPlugin -count 5 ./internal/node/
//
// Each iteration of BenchmarkPluginToPlugin sends b.N messages twice, with
// the same 100-byte payload and the same bound on messages in flight: first
// mesh.Send between two bare meshes (the baseline), then plugin to plugin
// through two real nodes; it reports both rates and their ratio. It does so
// with the SDK's batches off (batch=off: every message a frame of its own,
// as plugins that do not ask for batches speak) and on (batch=on: the
// default; sends that pile up travel as one frame and one mesh message);
// NODEBENCH_BATCH=off or on runs one of them. Quote the ratio and the
// GOMAXPROCS (-cpu) used: two nodes and two plugin processes share the
// CPUs. With NODEBENCH_CPUPROFILE=DIR the two plugin processes write their
// CPU profiles to DIR/send-MODE.pprof and DIR/recv-MODE.pprof.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netsafe"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/mesh"
	"github.com/nearbymesh/nearby/subservice"
)

const (
	// benchPayload is the size of every message's data, in bytes.
	benchPayload = 100
	// benchWindow bounds the messages in flight, for the mesh and for the
	// plugins alike. It is at most the receiving plugin's queue (1024
	// frames), so that the node never has to drop a frame for it.
	benchWindow = 1024
	// benchWait bounds every wait for an event; a ceiling for a hung run,
	// not a timing assertion.
	benchWait = 60 * time.Second
	// benchSub is the subservice of the benchmark plugins.
	benchSub = "pbench"
)

// payloadTemplate is every payload but for its sequence number.
var payloadTemplate = `{"i":"0000000000","p":"` + strings.Repeat("x", benchPayload-25) + `"}`

// payloadAt writes message seq into p, which holds benchPayload bytes of
// one JSON object: {"i":"SEQ","p":"xxx…"} with SEQ as ten digits. (It is
// the harness's own cost, paid alike by both paths: kept small.)
func payloadAt(p []byte, seq int) {
	if len(p) != benchPayload {
		panic("payload size")
	}
	copy(p, payloadTemplate)
	for i := 15; i >= 6; i-- {
		p[i] = byte('0' + seq%10)
		seq /= 10
	}
}

// seqOf reads the sequence number payloadAt wrote, or -1.
func seqOf(p []byte) int {
	if len(p) != benchPayload || string(p[:6]) != `{"i":"` {
		return -1
	}
	n := 0
	for _, c := range p[6:16] {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// ---- the baseline: two bare meshes ------------------------------------------

// meshPair is two meshes in this process, a connected to b, b counting
// what arrives for benchSub.
type meshPair struct {
	a, b *mesh.Mesh
	got  atomic.Int64
	bad  atomic.Int64 // messages out of order
}

// startBenchMesh runs a bare mesh on loopback until the benchmark ends,
// onMsg receiving its messages.
func startBenchMesh(tb testing.TB, key mesh.Key, name string, onMsg func(mesh.Message) error) *mesh.Mesh {
	tb.Helper()
	id, err := mesh.NewIdentity()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := mesh.DefaultConfig()
	cfg.Identity, cfg.Key, cfg.Name = id, key, name
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.OnMessage = onMsg
	m, err := mesh.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return m
}

// reportRates reports b.N messages in el as SUBJECT-msgs/s beside b.N in
// meshEl as mesh-msgs/s, and their ratio.
func reportRates(b *testing.B, subject string, el, meshEl time.Duration) {
	rate, meshRate := float64(b.N)/el.Seconds(), float64(b.N)/meshEl.Seconds()
	b.ReportMetric(rate, subject+"-msgs/s")
	b.ReportMetric(meshRate, "mesh-msgs/s")
	b.ReportMetric(rate/meshRate, "ratio")
}

// benchSetup skips outside an isolated namespace and returns a fresh mesh
// key and the window (benchWindow, or NODEBENCH_WINDOW when set).
func benchSetup(b *testing.B) (mesh.Key, int) {
	if err := netsafe.Check(); err != nil {
		b.Skip(err) // run with scripts/isolated.sh
	}
	key, err := mesh.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	window := benchWindow
	if w, _ := strconv.Atoi(os.Getenv("NODEBENCH_WINDOW")); w > 0 {
		window = w
	}
	return key, window
}

func newMeshPair(tb testing.TB, key mesh.Key) *meshPair {
	tb.Helper()
	mp := &meshPair{}
	var next int64
	mp.b = startBenchMesh(tb, key, "mesh-b", func(m mesh.Message) error {
		if seqOf(m.Payload) != int(next) {
			mp.bad.Add(1)
		}
		next++
		mp.got.Add(1)
		return nil
	})
	mp.a = startBenchMesh(tb, key, "mesh-a", nil)
	mp.a.AddHint(mesh.Hint{ID: mp.b.ID(), Addrs: []netip.AddrPort{netip.MustParseAddrPort(mp.b.Addr().String())}})
	waitUntil(tb, "the meshes connect", func() bool { return len(mp.a.Peers()) == 1 && len(mp.b.Peers()) == 1 })
	return mp
}

// run sends n messages from a to b, at most window in flight, and returns
// once b has them all.
func (mp *meshPair) run(tb testing.TB, n, window int) time.Duration {
	tb.Helper()
	base := mp.got.Load()
	p := make([]byte, benchPayload)
	t0 := time.Now()
	deadline := t0.Add(benchWait)
	for i := 0; i < n; i++ {
		for int64(i)-(mp.got.Load()-base) >= int64(window) {
			if time.Now().After(deadline) {
				tb.Fatalf("mesh: %d of %d delivered after %v", mp.got.Load()-base, n, benchWait)
			}
			time.Sleep(20 * time.Microsecond)
		}
		payloadAt(p, int(base)+i)
		if err := mp.a.Send(mp.b.ID(), benchSub, p, uint64(i+1)); err != nil {
			tb.Fatalf("mesh send %d: %v", i, err)
		}
	}
	for mp.got.Load()-base < int64(n) {
		if time.Now().After(deadline) {
			tb.Fatalf("mesh: %d of %d delivered after %v", mp.got.Load()-base, n, benchWait)
		}
		time.Sleep(20 * time.Microsecond)
	}
	el := time.Since(t0)
	if bad := mp.bad.Load(); bad != 0 {
		tb.Fatalf("mesh: %d messages out of order", bad)
	}
	return el
}

// ---- the subject: plugin to plugin through two nodes -------------------------

// testNode is a node running in this process.
type testNode struct {
	n    *Node
	addr string
}

// startTestNode runs a node with discovery off, dialling peers, until the
// test ends.
func startTestNode(tb testing.TB, key mesh.Key, name string, peers ...string) *testNode {
	tb.Helper()
	return startTestNodeWith(tb, key, name, nil, peers...)
}

// startTestNodeWith is startTestNode with setup (when not nil) called on
// the node before it runs.
func startTestNodeWith(tb testing.TB, key mesh.Key, name string, setup func(*Node), peers ...string) *testNode {
	tb.Helper()
	state, err := os.MkdirTemp("", "nb")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(state) })
	return startTestNodeConfig(tb, Config{StateDir: state, Name: name, Key: key, Listen: "127.0.0.1:0",
		NoDiscovery: true, StaticPeers: peers, Logger: slog.New(slog.DiscardHandler)}, setup)
}

// startTestNodeConfig starts a node with cfg and stops it at cleanup;
// setup, when not nil, is called on the node before it runs.
func startTestNodeConfig(tb testing.TB, cfg Config, setup func(*Node)) *testNode {
	tb.Helper()
	name := cfg.Name
	n, err := newNode(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if setup != nil {
		setup(n)
	}
	ready := make(chan control.Status, 1)
	n.cfg.Ready = func(s control.Status) { ready <- s }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(benchWait):
			tb.Errorf("node %s did not stop", name)
		}
	})
	select {
	case st := <-ready:
		return &testNode{n: n, addr: st.Listen}
	case err := <-done:
		tb.Fatalf("node %s exited: %v", name, err)
	case <-time.After(benchWait):
		tb.Fatalf("node %s not ready", name)
	}
	return nil
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(benchWait)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, benchWait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ctlConn is the test's side channel to one benchmark plugin: commands go
// down it, reports come back. It never carries the measured messages.
type ctlConn struct {
	c     net.Conn
	role  string
	lines chan string
}

func (cc *ctlConn) sendf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	cc.c.SetWriteDeadline(time.Now().Add(benchWait))
	if _, err := fmt.Fprintf(cc.c, format+"\n", args...); err != nil {
		tb.Fatalf("to the %s plugin: %v", cc.role, err)
	}
}

// pluginPair is a sender plugin on node a and a receiver plugin on node b.
type pluginPair struct {
	a, b       *testNode
	send, recv *ctlConn
	errs       chan string // "error ..." lines from either plugin
	round      int
	binary     int // messages the receiver got in Message.Bytes, all rounds
}

// benchSpec runs this test binary as a benchmark plugin in role, in an
// SDK mode: "off" (no batches), "on" (batches) or "bin" (batches, and
// the sender's messages sent with SendBytes).
func benchSpec(tb testing.TB, role, ctl, mode string) supervisor.Spec {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return supervisor.Spec{
		Name: benchSub, Version: "1.0.0", Dir: filepath.Dir(exe),
		Argv: []string{exe, "-test.run=^TestNodeBenchPlugin$"},
		Env: []string{"NODEBENCH_ROLE=" + role, "NODEBENCH_CTL=" + ctl, "GORACE=atexit_sleep_ms=0",
			"NODEBENCH_CPUPROFILE=" + os.Getenv("NODEBENCH_CPUPROFILE"), "NODEBENCH_SDKBATCH=" + mode},
	}
}

// newPluginPair starts two nodes and the benchmark plugins on them, both
// in SDK mode mode (see benchSpec).
func newPluginPair(tb testing.TB, key mesh.Key, mode string) *pluginPair {
	return newPluginPairModes(tb, key, pairModes{send: mode, recv: mode})
}

// pairModes chooses how the two sides of a pluginPair speak: the sender's
// and the receiver's SDK modes (see benchSpec), and whether node b is a
// node from before batch payloads or bin payloads (it announces no
// featureBatch or featureBin to the mesh).
type pairModes struct {
	send, recv      string
	legacyB, noBinB bool
}

// newPluginPairModes is newPluginPair with the modes chosen apart.
func newPluginPairModes(tb testing.TB, key mesh.Key, m pairModes) *pluginPair {
	tb.Helper()
	b := startTestNodeWith(tb, key, "node-b", func(n *Node) { n.noBatchFeature, n.noBinFeature = m.legacyB, m.noBinB })
	a := startTestNode(tb, key, "node-a", b.addr)
	bid := string(b.n.id.ID)
	waitUntil(tb, "the nodes connect", func() bool {
		_, ok := a.n.mesh.Peer(b.n.id.ID)
		return ok
	})

	dir, err := os.MkdirTemp("", "nbctl")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	ctlPath := filepath.Join(dir, "ctl.sock")
	ln, err := net.Listen("unix", ctlPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })

	if err := b.n.sup.Start(benchSpec(tb, "recv", ctlPath, m.recv)); err != nil {
		tb.Fatal(err)
	}
	if err := a.n.sup.Start(benchSpec(tb, "send", ctlPath, m.send)); err != nil {
		tb.Fatal(err)
	}
	pp := &pluginPair{a: a, b: b, errs: make(chan string, 16)}
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(benchWait))
	for pp.send == nil || pp.recv == nil {
		c, err := ln.Accept()
		if err != nil {
			tb.Fatalf("benchmark plugins did not connect (logs in %s, %s): %v", a.n.sup.LogPath(benchSub), b.n.sup.LogPath(benchSub), err)
		}
		tb.Cleanup(func() { c.Close() })
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(benchWait))
		role, err := br.ReadString('\n')
		if err != nil {
			tb.Fatalf("benchmark plugin preamble: %v", err)
		}
		c.SetReadDeadline(time.Time{})
		cc := &ctlConn{c: c, role: strings.TrimSpace(role), lines: make(chan string, 16)}
		go func() {
			defer close(cc.lines)
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				l = strings.TrimSpace(l)
				if strings.HasPrefix(l, "error") {
					select {
					case pp.errs <- cc.role + ": " + l:
					default:
					}
					continue
				}
				cc.lines <- l
			}
		}()
		switch cc.role {
		case "send":
			pp.send = cc
		case "recv":
			pp.recv = cc
		default:
			tb.Fatalf("unknown plugin role %q", cc.role)
		}
	}
	// The receiver acknowledges to the sender's node: wait until the
	// receiver's node has the sender's node in its plugin peer table too.
	waitUntil(tb, "node b knows node a", func() bool {
		_, ok := b.n.mesh.Peer(a.n.id.ID)
		return ok
	})
	pp.send.sendf(tb, "target %s", bid)
	return pp
}

// expect waits for the next line from cc and checks its first word.
func (pp *pluginPair) expect(tb testing.TB, cc *ctlConn, word string) []string {
	tb.Helper()
	select {
	case l, ok := <-cc.lines:
		f := strings.Fields(l)
		if !ok || len(f) == 0 || f[0] != word {
			tb.Fatalf("%s plugin: got %q, want %s (logs in %s, %s)", cc.role, l, word, pp.a.n.sup.LogPath(benchSub), pp.b.n.sup.LogPath(benchSub))
		}
		return f
	case e := <-pp.errs:
		tb.Fatalf("%s", e)
	case <-time.After(benchWait):
		tb.Fatalf("%s plugin: no %s within %v", cc.role, word, benchWait)
	}
	return nil
}

// run makes the sender plugin send n messages to the receiver plugin, at
// most window in flight, and returns once the receiver has them all. It
// also returns how many mesh messages node a sent to node b meanwhile: n
// when every message travels alone, fewer when they travel in batches.
func (pp *pluginPair) run(tb testing.TB, n, window int) (time.Duration, uint64) {
	tb.Helper()
	sent0 := pp.meshSent(tb)
	pp.round++
	pp.recv.sendf(tb, "expect %d %d %d", pp.round, n, max(window/4, 1))
	pp.expect(tb, pp.recv, "ready")
	t0 := time.Now()
	pp.send.sendf(tb, "go %d %d %d", pp.round, n, window)
	f := pp.expect(tb, pp.recv, "done")
	el := time.Since(t0)
	pp.expect(tb, pp.send, "sent")
	if len(f) != 4 || f[2] != "0" {
		tb.Fatalf("receiver: %v (the third field counts messages out of order)", f)
	}
	pp.binary += atoi(f[3])
	select {
	case e := <-pp.errs:
		tb.Fatalf("%s", e)
	default:
	}
	return el, pp.meshSent(tb) - sent0
}

// meshSent returns the mesh messages node a has sent to node b.
func (pp *pluginPair) meshSent(tb testing.TB) uint64 {
	tb.Helper()
	p, ok := pp.a.n.mesh.Peer(pp.b.n.id.ID)
	if !ok {
		tb.Fatal("node a lost node b")
	}
	return p.Sent
}

// BenchmarkPluginToPlugin: b.N messages of 100 bytes from a plugin on one
// node to the same subservice's plugin on another (msgs/s delivered to the
// receiving plugin), beside b.N mesh.Send between two bare meshes; with the
// SDK's batches off and on, and with binary messages (bin).
func BenchmarkPluginToPlugin(b *testing.B) {
	key, window := benchSetup(b)
	// Goroutines inherit these labels: go tool pprof -tagfocus path=plugin
	// shows the plugin path alone.
	var mp *meshPair
	pprof.Do(context.Background(), pprof.Labels("path", "mesh"), func(context.Context) { mp = newMeshPair(b, key) })
	mp.run(b, 20000, benchWindow) // warm up
	for _, mode := range []string{"off", "on", "bin"} {
		if m := os.Getenv("NODEBENCH_BATCH"); m != "" && m != mode {
			continue
		}
		b.Run(fmt.Sprintf("batch=%s/window=%d", mode, window), func(b *testing.B) {
			b.StopTimer()
			var pp *pluginPair
			pprof.Do(context.Background(), pprof.Labels("path", "plugin"), func(context.Context) { pp = newPluginPair(b, key, mode) })
			// Warm up both paths (connections, buffers, the plugins' first pages).
			mp.run(b, 20000, benchWindow)
			pp.run(b, 20000, benchWindow)
			var meshEl time.Duration
			pprof.Do(context.Background(), pprof.Labels("path", "mesh"), func(context.Context) { meshEl = mp.run(b, b.N, window) })
			b.StartTimer()
			el, meshMsgs := pp.run(b, b.N, window)
			b.StopTimer()
			reportRates(b, "plugin", el, meshEl)
			b.ReportMetric(float64(b.N)/float64(meshMsgs), "msgs/mesh-msg")
		})
	}
}

// TestPluginToPluginAcrossNodes: messages from a plugin on one node reach
// the same subservice's plugin on another node, all of them and in order,
// with the receiver acknowledging to the sender as it goes (the path the
// benchmark measures), every message a frame of its own.
func TestPluginToPluginAcrossNodes(t *testing.T) {
	testPluginToPlugin(t, "off")
}

// TestPluginToPluginAcrossNodesBatched is TestPluginToPluginAcrossNodes
// with the SDK's batches on: sends that pile up travel as batch frames and
// batch mesh messages, and arrive one by one, all of them and in order.
func TestPluginToPluginAcrossNodesBatched(t *testing.T) {
	testPluginToPlugin(t, "on")
}

// TestPluginToPluginAcrossNodesBin is TestPluginToPluginAcrossNodesBatched
// with the sender's messages sent as binary messages (SendBytes): they
// travel as bin frames and bin payloads and arrive in Message.Bytes.
func TestPluginToPluginAcrossNodesBin(t *testing.T) {
	testPluginToPlugin(t, "bin")
}

func testPluginToPlugin(t *testing.T, mode string) {
	batch := mode != "off"
	if err := netsafe.Check(); err != nil {
		t.Skip(err)
	}
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pp := newPluginPair(t, key, mode)
	var meshMsgs uint64
	for _, r := range []struct{ n, window int }{{3000, 256}, {1, 1}, {2000, benchWindow}} {
		_, k := pp.run(t, r.n, r.window)
		meshMsgs += k
	}
	// Node a sends node b nothing else meanwhile (peer exchange happens
	// once, before).
	switch {
	case !batch && meshMsgs != 5001:
		t.Errorf("5001 messages without batches took %d mesh messages", meshMsgs)
	case batch && meshMsgs >= 5001:
		t.Errorf("5001 messages took %d mesh messages: sends that piled up did not travel as batches", meshMsgs)
	}
	if want := map[bool]int{false: 0, true: 5001}[mode == "bin"]; pp.binary != want {
		t.Errorf("%d messages arrived in Message.Bytes, want %d", pp.binary, want)
	}
	t.Logf("5001 messages in %d mesh messages", meshMsgs)
}

// TestNodeBenchPlugin is not a test: it is the body of the benchmark
// plugins, run by a node's supervisor as a child of this test binary.
func TestNodeBenchPlugin(t *testing.T) {
	role := os.Getenv("NODEBENCH_ROLE")
	if role == "" {
		t.Skip("the body of the benchmark plugins")
	}
	os.Exit(benchPluginMain(role))
}

func benchPluginMain(role string) int {
	if dir := os.Getenv("NODEBENCH_CPUPROFILE"); dir != "" {
		// Profile the plugin too: go tool pprof DIR/ROLE.pprof. The
		// profile ends when the connection does or at SIGTERM.
		f, err := os.Create(filepath.Join(dir, role+"-"+os.Getenv("NODEBENCH_SDKBATCH")+".pprof"))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM)
			go func() {
				<-sig
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(0)
			}()
		}
	}
	var opts []subservice.Option
	mode := os.Getenv("NODEBENCH_SDKBATCH")
	if mode == "off" {
		opts = append(opts, subservice.WithoutBatch())
	}
	if mode != "bin" {
		opts = append(opts, subservice.WithoutBin())
	}
	p, err := subservice.Connect(context.Background(), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench plugin: connect:", err)
		return 4
	}
	c, err := net.Dial("unix", os.Getenv("NODEBENCH_CTL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench plugin: control:", err)
		return 5
	}
	ctl := &pluginCtl{c: c}
	ctl.printf("%s", role)
	cmds := make(chan []string, 4)
	go func() {
		defer close(cmds)
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			cmds <- strings.Fields(l)
		}
	}()
	go func() {
		for e := range p.Errors() {
			ctl.printf("error %s id=%d: %s", e.Code, e.ID, e.Message)
		}
	}()
	if role == "send" {
		return benchSender(p, ctl, cmds, mode == "bin")
	}
	return benchReceiver(p, ctl, cmds)
}

// pluginCtl writes a benchmark plugin's reports, one line each.
type pluginCtl struct {
	mu sync.Mutex
	c  net.Conn
}

func (pc *pluginCtl) printf(format string, args ...any) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	fmt.Fprintf(pc.c, format+"\n", args...)
}

// benchAck is what the receiver sends back to the sender as it goes.
type benchAck struct {
	Round int `json:"r"`
	N     int `json:"n"`
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// benchSender: "target ID" names the receiver's node; "go ROUND N WINDOW"
// sends N messages, waiting for acknowledgements whenever WINDOW are in
// flight, and answers "sent ROUND". With bin it sends them with SendBytes.
func benchSender(p *subservice.Plugin, ctl *pluginCtl, cmds <-chan []string, bin bool) int {
	var to string
	p0 := make([]byte, benchPayload)
	acked := 0
	round := 0
	take := func(m subservice.Message) {
		var a benchAck
		if m.Decode(&a) == nil && a.Round == round {
			acked = max(acked, a.N)
		}
	}
	for {
		var cmd []string
		select {
		case cmd = <-cmds:
		case <-p.Done():
			return 2
		}
		switch {
		case cmd == nil:
			return 0
		case len(cmd) == 2 && cmd[0] == "target":
			to = cmd[1]
		case len(cmd) == 4 && cmd[0] == "go":
			round, acked = atoi(cmd[1]), 0
			n, window := atoi(cmd[2]), atoi(cmd[3])
			for i := 0; i < n; i++ {
				for i-acked >= window {
					m, ok := <-p.Messages()
					if !ok {
						return 2
					}
					take(m)
				}
				if i%64 == 0 {
				drain:
					for {
						select {
						case m := <-p.Messages():
							take(m)
						default:
							break drain
						}
					}
				}
				payloadAt(p0, i)
				var err error
				if bin {
					_, err = p.SendBytes(to, p0)
				} else {
					_, err = p.Send(to, json.RawMessage(p0))
				}
				if err != nil {
					ctl.printf("error send: %v", err)
					return 6
				}
			}
			ctl.printf("sent %d", round)
		}
	}
}

// benchReceiver: "expect ROUND N EVERY" answers "ready ROUND", then counts
// N messages, acknowledging every EVERY to their sender, and answers
// "done ROUND OUT-OF-ORDER BINARY" (BINARY: those in Message.Bytes). During a round it only reads messages, as a
// plugin that ranges over Messages does.
func benchReceiver(p *subservice.Plugin, ctl *pluginCtl, cmds <-chan []string) int {
	for {
		select {
		case cmd := <-cmds:
			if cmd == nil {
				return 0
			}
			if len(cmd) != 4 || cmd[0] != "expect" {
				continue
			}
			round, want, every := atoi(cmd[1]), atoi(cmd[2]), max(atoi(cmd[3]), 1)
			ctl.printf("ready %d", round)
			bad, binary := 0, 0
			for got := 0; got < want; {
				m, ok := <-p.Messages()
				if !ok {
					return 2
				}
				data := m.Data
				if data == nil {
					data = m.Bytes
					binary++
				}
				if seqOf(data) != got {
					bad++
				}
				got++
				if got%every == 0 || got == want {
					if _, err := p.Send(m.From.ID, benchAck{Round: round, N: got}); err != nil {
						ctl.printf("error ack: %v", err)
					}
				}
			}
			ctl.printf("done %d %d %d", round, bad, binary)
		case m, ok := <-p.Messages():
			if !ok {
				return 2
			}
			ctl.printf("error a message outside a round: %.40s", m.Data)
		}
	}
}
