package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

func TestHelloWelcome(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	m.node("bravo", nil)
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "chat", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	if st, _ := a.sv.Status("chat"); st.State != StateStarting || st.Connected {
		t.Errorf("before hello: %+v, want starting and not connected", st)
	}

	// Frames before hello get an error and change nothing.
	p.send(`{"op":"send","id":5,"to":"x","data":1}`)
	p.expectError(subservice.CodeNotWelcomeYet, 5)
	p.send(`{bad json`)
	p.expectError(subservice.CodeBadFrame, 0)

	w := p.hello()
	if w.Node == nil || *w.Node != a.peer {
		t.Errorf("welcome node %+v, want %+v", w.Node, a.peer)
	}
	if w.Subservice != "chat" || w.Version != "1.0.0" || w.Protocol != 1 || w.MaxLine != subservice.DefaultMaxLine {
		t.Errorf("welcome %+v", w)
	}
	want := []Peer{{ID: "bravo00000000000", Name: "bravo"}, m.rec.peer}
	if len(w.Peers) != 2 || w.Peers[0] != want[0] || w.Peers[1] != want[1] {
		t.Errorf("welcome peers %+v, want %+v", w.Peers, want)
	}
	st := a.waitState(t, "chat", StateRunning)
	if !st.Connected || st.PID != p.PID || st.Version != "1.0.0" || st.Restarts != 0 {
		t.Errorf("status %+v", st)
	}
	if !a.sv.Running("chat") || a.sv.Running("nope") {
		t.Error("Running disagrees with the status")
	}
	p.sendf(`{"op":"hello","token":%q,"protocol":1}`, p.Token)
	p.expectError(subservice.CodeBadFrame, 0)
}

func TestEnvironment(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	spec := helperSpec(t, "envy", "echo", "SUPTEST_REPORT="+m.rec.peer.ID, "SUPTEST_EXTRA=yes")
	spec.Dir = shortDir(t)
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	w := sub(m.rec.expect(t, "welcome", isReport("welcome", a.peer)).Data, "welcome")
	if w["env_node"] != a.peer.ID || w["env_extra"] != "yes" || w["cwd"] != spec.Dir || w["subservice"] != "envy" {
		t.Errorf("plugin saw %v", w)
	}
	for _, bad := range []string{"NEARBY_TOKEN=x", "NEARBY_SUBSERVICE=other", "NOEQUALS"} {
		s := spec
		s.Name = "envy-two"
		s.Env = []string{bad}
		if err := a.sv.Start(s); !errors.Is(err, ErrBadSpec) {
			t.Errorf("Env %q: Start = %v, want ErrBadSpec", bad, err)
		}
	}
}

func TestBadSpec(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	good := helperSpec(t, "good", "echo")
	for _, tt := range []struct {
		name string
		mod  func(*Spec)
	}{
		{"uppercase name", func(s *Spec) { s.Name = "Chat" }},
		{"digit segment", func(s *Spec) { s.Name = "chat-2" }},
		{"path in name", func(s *Spec) { s.Name = "../x" }},
		{"no version", func(s *Spec) { s.Version = "" }},
		{"relative dir", func(s *Spec) { s.Dir = "plugins/x" }},
		{"missing dir", func(s *Spec) { s.Dir = "/nonexistent/nearby" }},
		{"no argv", func(s *Spec) { s.Argv = nil }},
	} {
		s := good
		tt.mod(&s)
		if err := a.sv.Start(s); !errors.Is(err, ErrBadSpec) {
			t.Errorf("%s: Start = %v, want ErrBadSpec", tt.name, err)
		}
	}
	if len(a.sv.List()) != 0 {
		t.Errorf("bad specs left entries: %+v", a.sv.List())
	}
}

func TestBadTokenAndProtocol(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.HelloTimeout = 300 * time.Millisecond })
	dial := func() (net.Conn, *subservice.LineReader) {
		c, err := net.Dial("unix", a.sv.cfg.SocketPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(wait))
		return c, subservice.NewLineReader(c, 1<<20)
	}
	expectClose := func(lr *subservice.LineReader, code string) {
		t.Helper()
		if code != "" {
			line, err := lr.ReadLine()
			if err != nil {
				t.Fatalf("want %s error, got %v", code, err)
			}
			f, _ := subservice.DecodeFrame(line)
			if f == nil || f.Op != subservice.OpError || f.Code != code {
				t.Fatalf("got %s, want error %s", line, code)
			}
		}
		if _, err := lr.ReadLine(); err != io.EOF {
			t.Fatalf("connection not closed: %v", err)
		}
	}
	c, lr := dial()
	io.WriteString(c, `{"op":"hello","token":"0123456789abcdef0123456789abcdef","protocol":1}`+"\n")
	expectClose(lr, subservice.CodeBadToken)

	c, lr = dial()
	io.WriteString(c, `{"op":"hello","token":"","protocol":1}`+"\n")
	expectClose(lr, subservice.CodeBadToken)

	c, lr = dial()
	io.WriteString(c, `{"op":"hello","token":"x","protocol":2}`+"\n")
	expectClose(lr, subservice.CodeBadProtocol)

	// A silent connection is closed after HelloTimeout.
	_, lr = dial()
	expectClose(lr, "")

	// A token works once, for the instance it was issued to.
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "once", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()
	c, lr = dial()
	fmt.Fprintf(c, `{"op":"hello","token":%q,"protocol":1}`+"\n", p.Token)
	expectClose(lr, subservice.CodeBadToken)
}

func TestMalformedFramesHarmNobody(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "rude", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	if err := a.sv.Start(helperSpec(t, "polite", "echo", "SUPTEST_REPORT="+m.rec.peer.ID)); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()

	p.send(`{"op":`)
	p.expectError(subservice.CodeBadFrame, 0)
	p.send(`[1,2,3]`)
	p.expectError(subservice.CodeBadFrame, 0)
	p.send(`{"op":"warp","id":9}`)
	p.expectError(subservice.CodeBadFrame, 9)
	p.send(`{"op":"send","id":3,"data":1}`)
	p.expectError(subservice.CodeBadFrame, 3)
	p.send(`{"op":"send","id":"3","to":"x"}`)
	p.expectError(subservice.CodeBadFrame, 0)
	p.send(`{"op":"menu","items":[{"id":"","label":"x"}]}`)
	p.expectError(subservice.CodeBadFrame, 0)
	p.send("\xff\xfe\x00garbage")
	p.expectError(subservice.CodeBadFrame, 0)
	// One byte over the cap: discarded, and the connection goes on.
	p.send(`{"op":"broadcast","data":"` + strings.Repeat("x", subservice.DefaultMaxLine-27) + `"}`)
	p.expectError(subservice.CodeTooLarge, 0)

	p.sendf(`{"op":"send","id":4,"to":%q,"data":{"still":"here"}}`, m.rec.peer.ID)
	got := m.rec.expect(t, "message from rude", func(r recMsg) bool { return r.Sub == "rude" })
	if got.From != a.peer || got.Broadcast || got.Data["still"] != "here" {
		t.Errorf("recorder got %+v", got)
	}
	p.send(`{"op":"menu","items":[{"id":"a","label":"Say hi","enabled":true},{"id":"b","label":"Off","checked":true}]}`)
	waitFor(t, "menu stored", func() bool { st, _ := a.sv.Status("rude"); return len(st.Menu) == 2 })
	if st, _ := a.sv.Status("rude"); st.Menu[1] != (MenuItem{ID: "b", Label: "Off", Checked: true}) {
		t.Errorf("menu %+v", st.Menu)
	}
	if err := a.sv.Click("rude", "a"); err != nil {
		t.Errorf("Click: %v", err)
	}
	if f := p.next(); f.Op != subservice.OpClick || f.Item != "a" {
		t.Errorf("got %+v, want click a", f)
	}
	if err := a.sv.Click("rude", "b"); !errors.Is(err, ErrMenuItem) {
		t.Errorf("click on a disabled item: %v", err)
	}
	if err := a.sv.Click("rude", "zz"); !errors.Is(err, ErrMenuItem) {
		t.Errorf("click on a missing item: %v", err)
	}

	// The other plugin never noticed.
	expectUndisturbed(t, m, a)
}

// expectUndisturbed checks that the plugin "polite" on a still answers and
// that no plugin on a was restarted or left running.
func expectUndisturbed(t *testing.T, m *testMesh, a *testNode) {
	t.Helper()
	a.waitState(t, "polite", StateRunning)
	if err := a.sv.Deliver(m.rec.peer, "polite", []byte(`{"ping":1}`), false); err != nil {
		t.Fatal(err)
	}
	m.rec.expect(t, "reply from polite", func(r recMsg) bool { return r.Sub == "polite" && r.Data["reply"] != nil })
	for _, st := range a.sv.List() {
		if st.State != StateRunning || st.Restarts != 0 {
			t.Errorf("after the abuse: %+v", st)
		}
	}
}

func TestSendBroadcastReceive(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	b := m.node("bravo", nil)
	rep := "SUPTEST_REPORT=" + m.rec.peer.ID
	for _, n := range []*testNode{a, b} {
		if err := n.sv.Start(helperSpec(t, "chat", "echo", rep)); err != nil {
			t.Fatal(err)
		}
	}
	// Both came up and saw each other's node in welcome.
	welcomes := m.rec.expectEach(t, "welcomes", isReport("welcome", a.peer), isReport("welcome", b.peer))
	for i, n := range []*testNode{a, b} {
		w := sub(welcomes[i].Data, "welcome")
		if sub(w, "self")["id"] != n.peer.ID || len(w["peers"].([]any)) != 2 {
			t.Errorf("%s welcome %v", n.peer.Name, w)
		}
	}
	// Each broadcasts (told to by the recorder); the other replies
	// directly; the reply reaches the broadcaster's plugin, which reports it.
	for _, pair := range [][2]*testNode{{a, b}, {b, a}} {
		n, other := pair[0], pair[1]
		if err := n.sv.Deliver(m.rec.peer, "chat", []byte(`{"broadcast":{"from":"`+n.peer.Name+`"}}`), false); err != nil {
			t.Fatal(err)
		}
		m.rec.expectEach(t, "broadcast and reply", func(r recMsg) bool {
			return r.From == n.peer && r.Broadcast && r.Data["from"] == n.peer.Name
		}, func(r recMsg) bool {
			got := sub(r.Data, "got")
			return r.From == n.peer && got != nil && sub(got, "from")["id"] == other.peer.ID &&
				got["broadcast"] == false && sub(sub(got, "data"), "reply")["from"] == n.peer.Name
		})
	}
	// A direct message from another node arrives with its sender.
	if err := a.sv.Deliver(m.rec.peer, "chat", []byte(`{"n": 42}`), false); err != nil {
		t.Fatal(err)
	}
	r := m.rec.expect(t, "reply to a direct message", func(r recMsg) bool { return r.From == a.peer && r.Data["reply"] != nil })
	if sub(r.Data, "reply")["n"] != 42.0 || r.Broadcast {
		t.Errorf("reply %+v", r)
	}
	// A message to its own node goes to the plugin itself.
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "self", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()
	p.sendf(`{"op":"send","id":1,"to":%q,"data":"me"}`, a.peer.ID)
	if f := p.next(); f.Op != subservice.OpMessage || f.From != a.peer.ID || string(f.Data) != `"me"` {
		t.Errorf("self send came back as %+v", f)
	}
}

func TestPeerEvents(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "watch", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()
	c := Peer{ID: "charlie000000000", Name: "charlie"}
	a.sv.PeerEvent(true, c)
	a.sv.PeerEvent(true, c)               // no change: ignored
	a.sv.PeerEvent(true, a.peer)          // itself: ignored
	a.sv.PeerEvent(false, Peer{ID: c.ID}) // the name comes from the table
	a.sv.PeerEvent(false, c)              // already down: ignored
	a.sv.Deliver(m.rec.peer, "watch", []byte(`"marker"`), false)
	if f := p.next(); f.Op != subservice.OpPeer || f.Event != "up" || *f.Peer != c {
		t.Errorf("got %+v, want peer up", f)
	}
	if f := p.next(); f.Op != subservice.OpPeer || f.Event != "down" || *f.Peer != c {
		t.Errorf("got %+v, want peer down", f)
	}
	if f := p.next(); f.Op != subservice.OpMessage || string(f.Data) != `"marker"` {
		t.Errorf("got %+v, want the marker: a duplicate peer event got through", f)
	}
}

func TestDeliverNotRunning(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	if err := a.sv.Deliver(m.rec.peer, "nope", []byte(`1`), false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Deliver to an unknown subservice: %v", err)
	}
	if err := a.sv.Start(helperSpec(t, "brief", "echo")); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "brief", StateRunning)
	for _, bad := range []string{``, `{`, `1 2`, `{"a":1}x`} {
		if err := a.sv.Deliver(m.rec.peer, "brief", []byte(bad), false); !errors.Is(err, ErrBadPayload) {
			t.Errorf("payload %q: %v, want ErrBadPayload", bad, err)
		}
	}
	if err := a.sv.Deliver(m.rec.peer, "brief", make([]byte, subservice.DefaultMaxLine+1), false); !errors.Is(err, ErrBadPayload) {
		t.Errorf("oversized payload: %v", err)
	}
	if err := a.sv.Stop("brief"); err != nil {
		t.Fatal(err)
	}
	if err := a.sv.Deliver(m.rec.peer, "brief", []byte(`1`), false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Deliver to a stopped subservice: %v", err)
	}
	for reason, code := range map[string]string{
		"no-subservice": subservice.CodeNoSubservice, "queue-full": subservice.CodeQueueFull,
		ErrNotRunning.Error() + ": chat": subservice.CodeNoSubservice, `subservice "chat" is not running on node b`: subservice.CodeNoSubservice,
		fmt.Errorf("%w: chat", ErrQueueFull).Error(): subservice.CodeQueueFull, "disk on fire": subservice.CodeRejected,
	} {
		if got := nackCode(reason); got != code {
			t.Errorf("nackCode(%q) = %s, want %s", reason, got, code)
		}
	}
	if NackReason(fmt.Errorf("x: %w", ErrNotRunning)) != subservice.CodeNoSubservice || NackReason(ErrQueueFull) != subservice.CodeQueueFull ||
		NackReason(ErrBadPayload) != subservice.CodeRejected {
		t.Error("NackReason mapping")
	}
}

func TestNackRoutedToSender(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	b := m.node("bravo", nil) // runs nothing
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "one", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p1 := pl.accept(t)
	p1.hello()
	if err := a.sv.Start(helperSpec(t, "two", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p2 := pl.accept(t)
	p2.hello()

	p1.sendf(`{"op":"send","id":41,"to":%q,"data":1}`, b.peer.ID)
	e := p1.expectError(subservice.CodeNoSubservice, 41)
	if e.To != b.peer.ID || !strings.Contains(e.Message, "one") {
		t.Errorf("nack frame %+v", e)
	}
	if mid := a.router.lastID.Load(); mid == 0 || mid == 41 {
		t.Errorf("the mesh saw id %d: want a mesh id of the supervisor's own", mid)
	}
	p2.sendf(`{"op":"send","id":41,"to":%q,"data":2}`, b.peer.ID)
	p2.sendf(`{"op":"send","id":77,"to":%q,"data":3}`, b.peer.ID)
	p2.expectError(subservice.CodeNoSubservice, 41)
	p2.expectError(subservice.CodeNoSubservice, 77)
	// Without an id there is nothing to route a nack to.
	p2.sendf(`{"op":"send","to":%q,"data":4}`, b.peer.ID)
	p2.sendf(`{"op":"send","id":78,"to":"nobody0000000000","data":5}`)
	if e := p2.expectError(subservice.CodeNoPeer, 78); e.To != "nobody0000000000" {
		t.Errorf("no-peer frame %+v", e)
	}
	if n := a.router.noIDs.Load(); n != 1 {
		t.Errorf("%d sends without id reached the mesh, want 1", n)
	}
	// A nack with another reason, an unknown id, or a name that does not
	// match the id's plugin reaches nobody.
	p1.sendf(`{"op":"send","id":50,"to":%q,"data":6}`, m.rec.peer.ID)
	m.rec.expect(t, "message 6", func(r recMsg) bool { return r.Sub == "one" })
	mid := a.router.lastID.Load()
	a.sv.Nack("two", mid, b.peer, "no-subservice")
	a.sv.Nack("one", 999999, b.peer, "no-subservice")
	a.sv.Nack("one", mid, b.peer, "busy")
	e = p1.expectError(subservice.CodeRejected, 50)
	if !strings.Contains(e.Message, "busy") {
		t.Errorf("rejected frame %+v", e)
	}
	a.sv.Nack("one", mid, b.peer, "no-subservice") // already used
	a.sv.Deliver(m.rec.peer, "one", []byte(`"marker"`), false)
	a.sv.Deliver(m.rec.peer, "two", []byte(`"marker"`), false)
	for _, p := range []*probe{p1, p2} {
		if f := p.next(); f.Op != subservice.OpMessage {
			t.Errorf("got %+v, want the marker", f)
		}
	}
	// The mesh's own queue being full is reported at once.
	a.router.sendHook = func(string, string, []byte, uint64) (bool, error) { return true, ErrQueueFull }
	p1.sendf(`{"op":"send","id":60,"to":%q,"data":7}`, b.peer.ID)
	p1.expectError(subservice.CodeQueueFull, 60)
	a.router.sendHook = func(string, string, []byte, uint64) (bool, error) { return true, errors.New("cable cut") }
	p1.sendf(`{"op":"send","id":61,"to":%q,"data":8}`, b.peer.ID)
	if e := p1.expectError(subservice.CodeSendFailed, 61); !strings.Contains(e.Message, "cable cut") {
		t.Errorf("send-failed frame %+v", e)
	}
	// A Router error that does not wrap ErrNoPeer, for a node that is not
	// in the peer table, is still no-peer.
	a.router.sendHook = func(string, string, []byte, uint64) (bool, error) {
		return true, errors.New("mesh: peer not connected")
	}
	p1.sendf(`{"op":"send","id":62,"to":"gone000000000000","data":9}`)
	p1.expectError(subservice.CodeNoPeer, 62)
}

func TestFloodBackpressure(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	gate := make(chan struct{})
	var delivered atomic.Int64
	a.router.sendHook = func(to string, _ string, _ []byte, _ uint64) (bool, error) {
		if to != "sink" {
			return false, nil
		}
		<-gate
		delivered.Add(1)
		return true, nil
	}
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "flood", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()

	const frames, size = 4096, 1024
	frame := []byte(fmt.Sprintf(`{"op":"send","to":"sink","data":"%s"}`+"\n", strings.Repeat("x", size-40)))
	var written atomic.Int64
	writeErr := make(chan error, 1)
	go func() {
		p.c.SetWriteDeadline(time.Time{})
		for range frames {
			if _, err := p.c.Write(frame); err != nil {
				writeErr <- err
				return
			}
			written.Add(int64(len(frame)))
		}
		writeErr <- nil
	}()
	// The node reads one frame, hands it to the mesh, and stops reading
	// while the mesh blocks: the plugin's writes stall after the socket
	// buffers, instead of the node buffering the flood.
	waitFor(t, "first send reaches the mesh", func() bool { return a.router.sends.Load() == 1 })
	var last int64 = -1
	stable := 0
	waitFor(t, "writer stalls", func() bool {
		n := written.Load()
		if n == last {
			stable++
		} else {
			stable, last = 0, n
		}
		time.Sleep(20 * time.Millisecond)
		return stable >= 10
	})
	if total := int64(frames * len(frame)); last >= total/4 {
		t.Fatalf("plugin wrote %d of %d bytes while the mesh was blocked: no backpressure", last, total)
	}
	t.Logf("plugin stalled after %d KiB while the mesh was blocked", last>>10)
	if n := a.router.sends.Load(); n != 1 {
		t.Fatalf("the mesh got %d sends while blocked", n)
	}
	close(gate)
	select {
	case err := <-writeErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("flood did not drain")
	}
	waitFor(t, "every frame delivered", func() bool { return delivered.Load() == frames })
}

func TestFloodQueueFull(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	var accepted atomic.Int64
	a.router.sendHook = func(to string, _ string, _ []byte, _ uint64) (bool, error) {
		if accepted.Load() >= 100 {
			return true, fmt.Errorf("mesh: %w", ErrQueueFull)
		}
		accepted.Add(1)
		return true, nil
	}
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "flood", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()
	before := heapInUse()
	// Sample the heap while the flood runs: the node holds one frame at a
	// time, so the peak stays far below the volume flooded.
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	const n, size = 3000, 8000
	go func() {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, `{"op":"send","id":%d,"to":"peer","data":"%s"}`+"\n", i, strings.Repeat("y", size))
			if i%50 == 0 {
				p.c.Write([]byte(b.String()))
				b.Reset()
			}
		}
	}()
	for i := 101; i <= n; i++ {
		p.expectError(subservice.CodeQueueFull, uint64(i))
	}
	close(stopSampling)
	<-sampled
	after := heapInUse()
	t.Logf("heap in use before %d KiB, peak %d KiB, after %d KiB; %d KiB flooded", before>>10, peak.Load()>>10, after>>10, n*size>>10)
	if peak.Load() > before+12<<20 || after > before+4<<20 {
		t.Errorf("heap grew from %d to a peak of %d bytes during the flood (%d after)", before, peak.Load(), after)
	}
	if accepted.Load() != 100 {
		t.Errorf("mesh accepted %d", accepted.Load())
	}
}

func TestPluginThatNeverReads(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.QueueSize = 64 })
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "deaf", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	if err := a.sv.Start(helperSpec(t, "lively", "echo", "SUPTEST_REPORT="+m.rec.peer.ID)); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.hello()
	a.waitState(t, "lively", StateRunning)

	// The test stops reading p. Deliver must never block, whatever it does.
	payload := []byte(`"` + strings.Repeat("z", 4000) + `"`)
	full := 0
	const n = 3000
	for range n {
		switch err := a.sv.Deliver(m.rec.peer, "deaf", payload, true); {
		case errors.Is(err, ErrQueueFull):
			full++
		case err != nil:
			t.Fatal(err)
		}
	}
	st, _ := a.sv.Status("deaf")
	if full == 0 || st.Dropped != uint64(full) {
		t.Fatalf("%d of %d refused as queue-full, status says %d dropped", full, n, st.Dropped)
	}
	a.sv.mu.Lock()
	items, bytes := a.sv.plugins["deaf"].cur.q.len()
	a.sv.mu.Unlock()
	if items > 64 {
		t.Errorf("queue holds %d frames (%d bytes), over its cap", items, bytes)
	}
	t.Logf("%d of %d messages dropped; queue holds %d frames", full, n, items)

	// Another plugin is unaffected.
	a.sv.Deliver(m.rec.peer, "lively", []byte(`{"ping":2}`), false)
	m.rec.expect(t, "reply from lively", func(r recMsg) bool { return r.Sub == "lively" && r.Data["reply"] != nil })

	// Once it reads again it gets what was queued and dropped notices that
	// add up to what was dropped: one after the frames it could not take,
	// and more before if the writer looked while it still had room.
	got, told := 0, 0
	for got+told < n {
		f := p.next()
		if f.Op == subservice.OpMessage {
			got++
			continue
		}
		var k int
		if f.Op != subservice.OpError || f.Code != subservice.CodeDropped {
			t.Fatalf("got %+v, want messages and dropped notices", f)
		}
		if _, err := fmt.Sscanf(f.Message, "%d messages or events", &k); err != nil || k <= 0 {
			t.Fatalf("dropped notice %q does not start with a count", f.Message)
		}
		told += k
	}
	if told != full || got+full != n {
		t.Errorf("received %d, told of %d dropped, %d were dropped, %d sent", got, told, full, n)
	}
}

func TestCrashLoopFails(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) {
		c.BackoffInitial, c.BackoffMax = 5*time.Millisecond, 20*time.Millisecond
		c.CrashLoopCount = 3
	})
	events, cancel := a.sv.Subscribe(256)
	defer cancel()
	fdsBefore := openFDs(t)
	if err := a.sv.Start(helperSpec(t, "crashy", "exit1")); err != nil {
		t.Fatal(err)
	}
	st := a.waitState(t, "crashy", StateFailed)
	// Four processes came and went; only the plugin's log file stays open.
	if fds := openFDs(t); fds > fdsBefore+1 {
		t.Errorf("%d descriptors open before, %d after: a leak per instance", fdsBefore, fds)
	}
	if st.Restarts != 3 || st.LastExit != "exit status 1" || !strings.Contains(st.Error, "crash loop") || st.PID != 0 {
		t.Errorf("status %+v", st)
	}
	var states []string
	for len(events) > 0 {
		ev := <-events
		if ev.Status.Name == "crashy" && (len(states) == 0 || states[len(states)-1] != ev.Status.State) {
			states = append(states, ev.Status.State)
		}
	}
	want := "starting backoff starting backoff starting backoff starting failed"
	if got := strings.Join(states, " "); got != want {
		t.Errorf("states %q, want %q", got, want)
	}
	if log, _ := os.ReadFile(a.sv.LogPath("crashy")); strings.Count(string(log), "helper: exiting at once") != 4 {
		t.Errorf("log holds:\n%s", log)
	}
	// It stays failed: nothing runs it any more.
	if a.sv.plugins["crashy"].active() {
		t.Error("the manager of a failed plugin still runs")
	}
}

func TestExitZeroIsNotRestarted(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	if err := a.sv.Start(helperSpec(t, "done", "exit0")); err != nil {
		t.Fatal(err)
	}
	st := a.waitState(t, "done", StateExited)
	waitFor(t, "manager ends", func() bool { return !a.sv.plugins["done"].active() })
	if st.Restarts != 0 || st.LastExit != "exit status 0" {
		t.Errorf("status %+v", st)
	}
}

func TestCommandCannotRun(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	dir := shortDir(t)
	os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\nexit 0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "garbage"), []byte("this is not a program\x00\x01"), 0o755)
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	for _, tt := range []struct {
		name, argv0, reason string
	}{
		{"missing", "./nope", "no such file"},
		{"missing-bare", "nearby-no-such-command", "neither in"},
		{"not-executable", "./noexec", "not executable"},
		{"directory", "./adir", "is a directory"},
		{"bad-format", "./garbage", "exec format error"},
	} {
		err := a.sv.Start(Spec{Name: tt.name, Version: "1.0.0", Dir: dir, Argv: []string{tt.argv0}})
		if !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("%s: Start = %v, want ErrCommand saying %q", tt.name, err, tt.reason)
			continue
		}
		st, _ := a.sv.Status(tt.name)
		if st.State != StateFailed || !strings.Contains(st.Error, tt.reason) || st.Restarts != 0 || a.sv.plugins[tt.name].active() {
			t.Errorf("%s: status %+v", tt.name, st)
		}
		if log, _ := os.ReadFile(a.sv.LogPath(tt.name)); !strings.Contains(string(log), tt.reason) {
			t.Errorf("%s: log does not say why: %q", tt.name, log)
		}
	}
}

func TestKillNineRestarts(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	rep := "SUPTEST_REPORT=" + m.rec.peer.ID
	for _, name := range []string{"victim", "bystander"} {
		if err := a.sv.Start(helperSpec(t, name, "echo", rep)); err != nil {
			t.Fatal(err)
		}
	}
	v1 := a.waitState(t, "victim", StateRunning)
	b1 := a.waitState(t, "bystander", StateRunning)
	if err := syscall.Kill(v1.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var v2 Status
	waitFor(t, "victim restarted", func() bool {
		v2, _ = a.sv.Status("victim")
		return v2.State == StateRunning && v2.PID != v1.PID
	})
	if v2.Restarts != 1 || v2.LastExit != "signal: killed" {
		t.Errorf("victim %+v", v2)
	}
	if alive(v1.PID) {
		t.Error("the killed process is still there")
	}
	if b2, _ := a.sv.Status("bystander"); b2.PID != b1.PID || b2.Restarts != 0 || b2.State != StateRunning {
		t.Errorf("bystander %+v, was %+v", b2, b1)
	}
	for _, name := range []string{"victim", "bystander"} {
		if err := a.sv.Deliver(m.rec.peer, name, []byte(`{"after":"kill"}`), false); err != nil {
			t.Fatal(err)
		}
		m.rec.expect(t, "reply from "+name, func(r recMsg) bool { return r.Sub == name && r.Data["reply"] != nil })
	}
}

func TestRunExitStopsEverything(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.StopGrace = 300 * time.Millisecond })
	rep := "SUPTEST_REPORT=" + m.rec.peer.ID
	for _, tt := range [][2]string{{"polite", "echo"}, {"stubborn", "stubborn"}, {"spawner", "spawner"}} {
		if err := a.sv.Start(helperSpec(t, tt[0], tt[1], rep)); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for range 3 {
		w := sub(m.rec.expect(t, "welcome", isReport("welcome", a.peer)).Data, "welcome")
		pids = append(pids, num(w["pid"]))
		if c, ok := w["child"]; ok {
			pids = append(pids, num(c))
		}
	}
	if len(pids) != 4 {
		t.Fatalf("pids %v", pids)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("pid %d not running before the stop", pid)
		}
	}
	a.stop(t)
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d survived Run's exit", pid)
		}
	}
	for _, st := range a.sv.List() {
		if st.State != StateStopped {
			t.Errorf("%s is %s", st.Name, st.State)
		}
	}
	if _, err := os.Stat(a.sv.cfg.SocketPath); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if err := a.sv.Start(helperSpec(t, "late", "echo")); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Run: %v", err)
	}
	if log, _ := os.ReadFile(a.sv.LogPath("stubborn")); !strings.Contains(string(log), "signal: killed") {
		t.Errorf("stubborn was not killed after the grace: %s", log)
	}
}

// TestNodeDeathKillsPlugins kills a node with SIGKILL, so that it cannot
// stop its plugins: the parent-death signal must take them down.
func TestNodeDeathKillsPlugins(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	node := exec.Command(exe, "-test.run=^TestHelperProcess$")
	node.Env = append(os.Environ(), "SUPTEST_MODE=node", "SUPTEST_DIR="+shortDir(t), "GORACE=atexit_sleep_ms=0")
	out, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Process.Kill()
	var pid int
	if _, err := fmt.Fscanf(out, "pid %d\n", &pid); err != nil {
		t.Fatalf("mini node: %v", err)
	}
	if !alive(pid) {
		t.Fatal("plugin not running")
	}
	node.Process.Kill()
	node.Wait()
	waitFor(t, "orphaned plugin killed", func() bool { return !alive(pid) })
}

func TestRestartIntoNewVersion(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	spec := helperSpec(t, "chat", "echo", "SUPTEST_REPORT="+m.rec.peer.ID)
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	w1 := sub(m.rec.expect(t, "welcome v1", isReport("welcome", a.peer)).Data, "welcome")
	v1 := a.waitState(t, "chat", StateRunning)
	if w1["version"] != "1.0.0" || num(w1["pid"]) != v1.PID {
		t.Fatalf("v1 welcome %v", w1)
	}
	if err := a.sv.Start(spec); err != nil { // same spec: nothing to do
		t.Fatal(err)
	}
	if st, _ := a.sv.Status("chat"); st.PID != v1.PID {
		t.Fatal("Start of the running spec restarted it")
	}
	spec2 := spec
	spec2.Version = "2.0.0"
	if err := a.sv.Start(spec2); err != nil {
		t.Fatal(err)
	}
	w2 := sub(m.rec.expect(t, "welcome v2", isReport("welcome", a.peer)).Data, "welcome")
	v2 := a.waitState(t, "chat", StateRunning)
	if w2["version"] != "2.0.0" || v2.Version != "2.0.0" || num(w2["pid"]) != v2.PID || v2.PID == v1.PID {
		t.Errorf("v2 welcome %v, status %+v", w2, v2)
	}
	if alive(v1.PID) {
		t.Error("v1 still runs")
	}
	// A v3 that cannot run leaves v2 running.
	spec3 := spec
	spec3.Version, spec3.Argv = "3.0.0", []string{"./missing"}
	if err := a.sv.Start(spec3); !errors.Is(err, ErrCommand) {
		t.Errorf("Start v3: %v", err)
	}
	if st, _ := a.sv.Status("chat"); st.PID != v2.PID || st.Version != "2.0.0" || st.State != StateRunning {
		t.Errorf("after a failed upgrade: %+v", st)
	}
}

func TestStop(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	if err := a.sv.Stop("ghost"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Stop of an unknown plugin: %v", err)
	}
	spec := helperSpec(t, "brief", "echo")
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	st := a.waitState(t, "brief", StateRunning)
	if err := a.sv.Stop("brief"); err != nil {
		t.Fatal(err)
	}
	if st2, _ := a.sv.Status("brief"); st2.State != StateStopped || st2.PID != 0 || alive(st.PID) {
		t.Errorf("after Stop: %+v (pid %d alive %v)", st2, st.PID, alive(st.PID))
	}
	if err := a.sv.Stop("brief"); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "brief", StateRunning)
}

func TestNewErrors(t *testing.T) {
	r := &loopRouter{net: newLoopNet(), self: Peer{ID: "x"}}
	dir := shortDir(t)
	if _, err := New(Config{SocketPath: filepath.Join(dir, "a.sock")}); err == nil {
		t.Error("New without a Router")
	}
	if _, err := New(Config{Router: r}); err == nil {
		t.Error("New without a socket path")
	}
	if _, err := New(Config{Router: r, SocketPath: "/tmp/" + strings.Repeat("x", 120)}); err == nil {
		t.Error("New with an over-long socket path")
	}
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, nil, 0o600)
	if _, err := New(Config{Router: r, SocketPath: regular}); err == nil {
		t.Error("New over a regular file")
	}
	path := filepath.Join(dir, "s.sock")
	s1, err := New(Config{Router: r, SocketPath: path})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	if _, err := New(Config{Router: r, SocketPath: path}); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second New on a live socket: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s1.Run(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if err := s1.Run(context.Background()); err == nil {
		t.Error("second Run")
	}
	// A stale socket (no listener) is replaced.
	ln, _ := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s2, err := New(Config{Router: r, SocketPath: path})
	if err != nil {
		t.Fatalf("New over a stale socket: %v", err)
	}
	s2.ln.Close()
	ch, cancelSub := s1.Subscribe(1)
	if _, ok := <-ch; ok {
		t.Error("Subscribe after Run returned an open channel")
	}
	cancelSub()
}

func TestSubscribe(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	ev, cancel := a.sv.Subscribe(64)
	if err := a.sv.Start(helperSpec(t, "seen", "echo")); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(wait)
	for running := false; !running; {
		select {
		case e := <-ev:
			running = e.Type == EventPlugin && e.Status.Name == "seen" && e.Status.State == StateRunning && e.Status.Connected
		case <-deadline:
			t.Fatal("no running event")
		}
	}
	cancel()
	cancel()
	for range ev { // drained and closed
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// heapInUse returns the bytes of heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestSharedSubservice: two plugins that speak one subservice (say a Go and
// a Python chat) each get a message for it, and speak under it.
func TestSharedSubservice(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	rep := "SUPTEST_REPORT=" + m.rec.peer.ID
	for _, name := range []string{"chat-one", "chat-two"} {
		spec := helperSpec(t, name, "echo", rep)
		spec.Subservice = "chat"
		if err := a.sv.Start(spec); err != nil {
			t.Fatal(err)
		}
		a.waitState(t, name, StateRunning)
	}
	if err := a.sv.Deliver(m.rec.peer, "chat-one", []byte(`1`), false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Deliver to a plugin name that is not a subservice: %v", err)
	}
	if err := a.sv.Deliver(m.rec.peer, "chat", []byte(`{"n": 7}`), false); err != nil {
		t.Fatal(err)
	}
	isReply := func(r recMsg) bool { return r.From == a.peer && r.Sub == "chat" && r.Data["reply"] != nil }
	m.rec.expectEach(t, "a reply from each plugin", isReply, isReply)
	bad := helperSpec(t, "chat-three", "echo")
	bad.Subservice = "Not A Name"
	if err := a.sv.Start(bad); !errors.Is(err, ErrBadSpec) {
		t.Errorf("bad subservice name: %v", err)
	}
}
