package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

// helloBatch says hello asking for features and returns the welcome.
func (p *probe) helloBatch(features ...string) *subservice.Frame {
	p.t.Helper()
	fs, _ := json.Marshal(features)
	p.sendf(`{"op":"hello","token":%q,"protocol":1,"features":%s}`, p.Token, fs)
	f := p.next()
	if f.Op != subservice.OpWelcome {
		p.t.Fatalf("got %+v, want welcome", f)
	}
	return f
}

// rawMsg is a payload a rawNode received.
type rawMsg struct {
	from      Peer
	sub       string
	payload   string
	broadcast bool
}

// rawNode is a node of the loop network that records payloads as they
// come, batch payloads included.
type rawNode struct{ msgs chan rawMsg }

func (r *rawNode) Deliver(from Peer, sub string, payload []byte, broadcast bool) error {
	r.msgs <- rawMsg{from, sub, string(payload), broadcast}
	return nil
}

func (r *rawNode) Nack(string, uint64, Peer, string) {}

// next returns the next payload for sub, discarding others.
func (r *rawNode) next(t *testing.T, sub string) rawMsg {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-r.msgs:
			if m.sub == sub {
				return m
			}
		case <-deadline:
			t.Fatalf("raw node: nothing for %s received", sub)
		}
	}
}

// none fails t if the raw node received anything for sub.
func (r *rawNode) none(t *testing.T, sub string) {
	t.Helper()
	for {
		select {
		case m := <-r.msgs:
			if m.sub == sub {
				t.Fatalf("raw node received %q", m.payload)
			}
		default:
			return
		}
	}
}

// addRaw adds a rawNode called name to the mesh, known to every node.
func (m *testMesh) addRaw(name string) (*rawNode, Peer) {
	id := strings.ReplaceAll(fmt.Sprintf("%-16s", name), " ", "0")
	peer := Peer{ID: id, Name: name}
	m.names[id] = name
	r := &rawNode{msgs: make(chan rawMsg, 256)}
	m.net.add(id, r)
	for _, sv := range m.sups {
		sv.PeerEvent(true, peer)
	}
	return r, peer
}

// batchPayload is the mesh payload for a batch (docs/WIRE.md §9).
func batchPayload(values ...string) []byte {
	return []byte(batchMagic + "[" + strings.Join(values, ",") + "]")
}

// TestBatchNegotiation: a hello without features gets the welcome it
// always got, and its batch frames are refused; one that asks for batches
// is granted them (only what the node knows) with the node's max_batch.
func TestBatchNegotiation(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.MaxBatch = 8 })
	raw, rp := m.addRaw("raw")
	pl := newProbeListener(t)
	start := func(name string) *probe {
		if err := a.sv.Start(helperSpec(t, name, "proxy", pl.env())); err != nil {
			t.Fatal(err)
		}
		return pl.accept(t)
	}
	plain := start("plain")
	w := plain.hello()
	if w.Features != nil || w.MaxBatch != 0 {
		t.Errorf("welcome without features asked: %+v", w)
	}
	plain.sendf(`{"op":"send","id":3,"to":%q,"batch":[1,2]}`, rp.ID)
	if e := plain.expectError(subservice.CodeBadFrame, 3); e.Count != 0 || !strings.Contains(e.Message, "features") {
		t.Errorf("error %+v", e)
	}
	plain.send(`{"op":"broadcast","id":4,"batch":[1,2]}`)
	plain.expectError(subservice.CodeBadFrame, 4)
	raw.none(t, "plain")
	plain.sendf(`{"op":"send","id":5,"to":%q,"data":"still here"}`, rp.ID)
	if got := raw.next(t, "plain"); got.payload != `"still here"` {
		t.Errorf("raw node got %+v", got)
	}

	batchy := start("batchy")
	w = batchy.helloBatch(subservice.FeatureBatch)
	if !slices.Equal(w.Features, []string{subservice.FeatureBatch}) || w.MaxBatch != 8 {
		t.Errorf("welcome %+v, want features [batch] and max_batch 8", w)
	}
	greedy := start("greedy")
	w = greedy.helloBatch("teleport", subservice.FeatureBatch, "time-travel")
	if !slices.Equal(w.Features, []string{subservice.FeatureBatch}) || w.MaxBatch != 8 {
		t.Errorf("welcome %+v, want only the feature the node has", w)
	}
	batchy.sendf(`{"op":"send","id":6,"to":%q,"batch":[1,{"a":"b"}]}`, rp.ID)
	if got := raw.next(t, "batchy"); got.payload != batchMagic+`[1,{"a":"b"}]` || got.broadcast {
		t.Errorf("raw node got %+v", got)
	}
	// A batch of one is an ordinary message on the mesh; whitespace goes.
	batchy.sendf(`{"op":"send","id":7,"to":%q,"batch":[ {"a" : 1} ]}`, rp.ID)
	if got := raw.next(t, "batchy"); got.payload != `{"a":1}` {
		t.Errorf("raw node got %q for a batch of one", got.payload)
	}
	batchy.send(`{"op":"broadcast","id":8,"batch":[ 1 , 2 , 3 ]}`)
	if got := raw.next(t, "batchy"); got.payload != batchMagic+`[1,2,3]` || !got.broadcast {
		t.Errorf("raw node got %+v", got)
	}
}

// TestBatchMixedReceivers: a batch reaches a plugin that asked for
// batches as one batch frame, and a plugin of the same subservice that did
// not as a message frame per value: both in order, exactly once, whether
// it came from the mesh or from a plugin on another node.
func TestBatchMixedReceivers(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	b := m.node("bravo", nil)
	pl, probes := startChatPair(t, a)
	withBatch, plain := probes[0], probes[1]
	withBatch.helloBatch(subservice.FeatureBatch)
	plain.hello()
	if err := b.sv.Start(helperSpec(t, "chat", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	sender := pl.accept(t)
	sender.helloBatch(subservice.FeatureBatch)

	const n = 300
	values := make([]string, n)
	for i := range values {
		values[i] = fmt.Sprintf(`{"i":%d}`, i)
	}
	check := func(from Peer, broadcast bool) {
		t.Helper()
		f := withBatch.next()
		var got []json.RawMessage
		if f.Op != subservice.OpMessage || f.From != from.ID || f.FromName != from.Name || f.Broadcast != broadcast || f.Data != nil ||
			json.Unmarshal(f.Batch, &got) != nil || len(got) != n {
			t.Fatalf("batch plugin got %+v (%d values), want one batch of %d from %s", f, len(got), n, from.Name)
		}
		for i, v := range got {
			if string(v) != values[i] {
				t.Fatalf("batch value %d is %s, want %s", i, v, values[i])
			}
		}
		for i := range n {
			f := plain.next()
			if f.Op != subservice.OpMessage || f.Batch != nil || string(f.Data) != values[i] || f.From != from.ID || f.Broadcast != broadcast {
				t.Fatalf("plain plugin, message %d: %+v (data %s)", i, f, f.Data)
			}
		}
		// Exactly once: the next frame of each is the marker.
		for _, p := range probes {
			if f := p.next(); f.Op != subservice.OpMessage || string(f.Data) != `"marker"` {
				t.Fatalf("got %+v (data %s), want the marker", f, f.Data)
			}
		}
	}

	// From the mesh. Each batch is followed by a marker sent the same way.
	if err := a.sv.Deliver(m.rec.peer, "chat", batchPayload(values...), true); err != nil {
		t.Fatal(err)
	}
	if err := a.sv.Deliver(m.rec.peer, "chat", []byte(`"marker"`), true); err != nil {
		t.Fatal(err)
	}
	check(m.rec.peer, true)

	// From a plugin on another node: a send, then a broadcast.
	sender.sendf(`{"op":"send","id":1,"to":%q,"batch":[%s]}`, a.peer.ID, strings.Join(values, ","))
	sender.sendf(`{"op":"send","id":301,"to":%q,"data":"marker"}`, a.peer.ID)
	check(b.peer, false)
	sender.sendf(`{"op":"broadcast","id":302,"batch":[%s]}`, strings.Join(values, ", "))
	sender.send(`{"op":"broadcast","id":602,"data":"marker"}`)
	check(b.peer, true)

	// A plugin sending a batch to its own node: the same split.
	withBatch.sendf(`{"op":"send","id":9,"to":%q,"batch":[%s]}`, a.peer.ID, strings.Join(values, ","))
	withBatch.sendf(`{"op":"send","id":309,"to":%q,"data":"marker"}`, a.peer.ID)
	check(a.peer, false)
}

// TestBatchErrorRanges: an error about a batch carries its first id and
// its count, whether it comes at once (no-peer, queue-full, send-failed)
// or later as a nack (no-subservice).
func TestBatchErrorRanges(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", nil)
	b := m.node("bravo", nil) // runs nothing
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "chat", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.helloBatch(subservice.FeatureBatch)

	p.sendf(`{"op":"send","id":10,"to":%q,"batch":[1,2,3,4,5]}`, b.peer.ID)
	e := p.expectError(subservice.CodeNoSubservice, 10)
	if e.Count != 5 || e.To != b.peer.ID {
		t.Errorf("nack %+v, want count 5 to bravo", e)
	}
	p.send(`{"op":"send","id":20,"to":"ghost00000000000","batch":[1,2,3]}`)
	if e := p.expectError(subservice.CodeNoPeer, 20); e.Count != 3 {
		t.Errorf("no-peer %+v, want count 3", e)
	}
	// A batch of one is an ordinary message: no count.
	p.sendf(`{"op":"send","id":30,"to":%q,"batch":[1]}`, b.peer.ID)
	if e := p.expectError(subservice.CodeNoSubservice, 30); e.Count != 0 {
		t.Errorf("nack for a batch of one %+v", e)
	}
	// Without an id there is nothing to count from.
	p.send(`{"op":"send","to":"ghost00000000000","batch":[1,2]}`)
	if e := p.expectError(subservice.CodeNoPeer, 0); e.Count != 0 {
		t.Errorf("no-peer without id %+v", e)
	}
	a.router.sendHook = func(string, string, []byte, uint64) (bool, error) { return true, ErrQueueFull }
	p.sendf(`{"op":"send","id":40,"to":%q,"batch":[1,2]}`, b.peer.ID)
	if e := p.expectError(subservice.CodeQueueFull, 40); e.Count != 2 {
		t.Errorf("queue-full %+v", e)
	}
	a.router.sendHook = func(string, string, []byte, uint64) (bool, error) {
		return true, fmt.Errorf("mesh: %w: frame of 2000000 bytes", ErrTooLarge)
	}
	p.sendf(`{"op":"send","id":50,"to":%q,"batch":[1,2,3]}`, b.peer.ID)
	if e := p.expectError(subservice.CodeTooLarge, 50); e.Count != 3 || !strings.Contains(e.Message, "fewer") {
		t.Errorf("too-large %+v", e)
	}
}

// TestBatchCaps: batches over max_batch are too-large, malformed ones
// bad-frame, each with the frame's id; the node sends nothing for them,
// and the plugin and its neighbours go on.
func TestBatchCaps(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.MaxBatch = 4 })
	raw, rp := m.addRaw("raw")
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "rude", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	if err := a.sv.Start(helperSpec(t, "polite", "echo", "SUPTEST_REPORT="+m.rec.peer.ID)); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.helloBatch(subservice.FeatureBatch)

	p.sendf(`{"op":"send","id":1,"to":%q,"batch":[1,2,3,4,5]}`, rp.ID)
	if e := p.expectError(subservice.CodeTooLarge, 1); e.Count != 5 || !strings.Contains(e.Message, "max_batch") {
		t.Errorf("too-large %+v", e)
	}
	p.send(`{"op":"broadcast","id":2,"batch":[1,2,3,4,5,6]}`)
	if e := p.expectError(subservice.CodeTooLarge, 2); e.Count != 6 {
		t.Errorf("too-large broadcast %+v", e)
	}
	for _, tt := range []struct {
		frame string
		id    uint64
		says  string
		count int
	}{
		{`{"op":"send","id":3,"to":"%s","batch":[]}`, 3, "empty batch", 0},
		{`{"op":"send","id":4,"to":"%s","batch":[ ]}`, 4, "empty batch", 0},
		{`{"op":"send","id":5,"to":"%s","batch":null}`, 5, "empty batch", 0},
		{`{"op":"send","id":6,"to":"%s","batch":{"a":1}}`, 6, "not a JSON array", 0},
		{`{"op":"send","id":7,"to":"%s","batch":7}`, 7, "not a JSON array", 0},
		{`{"op":"send","id":8,"to":"%s","batch":"[1,2]"}`, 8, "not a JSON array", 0},
		{`{"op":"send","id":9,"to":"%s","data":1,"batch":[1,2]}`, 9, "both data and batch", 0},
		{`{"op":"send","id":10,"to":"%s","data":null,"batch":[1,2]}`, 10, "both data and batch", 0},
		{`{"op":"send","id":18446744073709551615,"to":"%s","batch":[1,2]}`, 1<<64 - 1, "largest id", 0},
		{`{"op":"send","id":11,"batch":[1,2]}`, 11, "send needs to", 2},
		{`{"op":"send","id":12,"to":"%s","batch":[1,]}`, 0, "", 0},   // not JSON: no frame, no id
		{`{"op":"send","id":13,"to":"%s","batch":[1 2]}`, 0, "", 0},  // nor this
		{`{"op":"send","id":14,"to":"%s","batch":[1,2]`, 0, "", 0},   // nor this
		{`{"op":"send","id":15,"to":"%s","batch":[[1,2]}`, 0, "", 0}, // nor this
	} {
		line := tt.frame
		if strings.Contains(line, "%s") {
			line = fmt.Sprintf(line, rp.ID)
		}
		p.send(line)
		if e := p.expectError(subservice.CodeBadFrame, tt.id); !strings.Contains(e.Message, tt.says) || e.Count != tt.count {
			t.Errorf("%s: error %+v, want one saying %q", line, e, tt.says)
		}
	}
	raw.none(t, "rude")
	// Deeply nested values are fine (encoding/json checks them).
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	p.sendf(`{"op":"send","id":20,"to":%q,"batch":[%s,2,3,4]}`, rp.ID, deep)
	if got := raw.next(t, "rude"); got.payload != batchMagic+"["+deep+",2,3,4]" {
		t.Errorf("raw node got %.40q", got.payload)
	}
	// The plugin goes on, and so does its neighbour.
	p.sendf(`{"op":"send","id":21,"to":%q,"batch":[1,2]}`, rp.ID)
	if got := raw.next(t, "rude"); got.payload != batchMagic+"[1,2]" {
		t.Errorf("raw node got %q", got.payload)
	}
	expectUndisturbed(t, m, a)
}

// TestDeliverBadBatch: a malformed batch payload from the mesh is
// ErrBadPayload and reaches no plugin; a good one after it is delivered.
func TestDeliverBadBatch(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.MaxBatch = 4 })
	_, probes := startChatPair(t, a)
	probes[0].helloBatch(subservice.FeatureBatch)
	probes[1].hello()
	for _, bad := range []string{
		"\x00", "\x00B", "\x00X[1,2]", "\x00b[1,2]", "\x00B[]", "\x00Bnull", "\x00B[1,]", "\x00B[1 2]",
		"\x00B{\"a\":1}", "\x00B[1,2] x", "\x00B[1,2", "\x00B\"[1]\"", "\x00B[1,2,3,4,5]", // over max_batch
		"\x00B[\"\x01\"]",
	} {
		err := a.sv.Deliver(m.rec.peer, "chat", []byte(bad), false)
		if !errors.Is(err, ErrBadPayload) {
			t.Errorf("payload %q: %v, want ErrBadPayload", bad, err)
		}
		if NackReason(err) != subservice.CodeRejected {
			t.Errorf("payload %q: nack reason %s", bad, NackReason(err))
		}
	}
	if err := a.sv.Deliver(m.rec.peer, "nobody", batchPayload("1", "2"), false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("a batch for a subservice nobody runs: %v", err)
	}
	if err := a.sv.Deliver(m.rec.peer, "chat", []byte("\x00B[1, 2 ,3,4]"), false); err != nil {
		t.Fatal(err)
	}
	f := probes[0].next()
	if f.Op != subservice.OpMessage || string(f.Batch) != "[1,2,3,4]" {
		t.Errorf("batch plugin got %+v (batch %s), want the good batch first", f, f.Batch)
	}
	for i := 1; i <= 4; i++ {
		if f := probes[1].next(); f.Op != subservice.OpMessage || string(f.Data) != fmt.Sprint(i) {
			t.Errorf("plain plugin got %+v (data %s), want %d first", f, f.Data, i)
		}
	}
	for _, st := range a.sv.List() {
		if st.Dropped != 0 {
			t.Errorf("%s: %d dropped", st.Name, st.Dropped)
		}
	}
}

// TestBatchQueueAllOrNothing: a batch for a plugin whose queue cannot take
// all of it is dropped whole and counted as the messages it carried.
func TestBatchQueueAllOrNothing(t *testing.T) {
	q := newOutQueue(4, 1<<20)
	if r := q.push([]byte("a\n")); r != pushOK {
		t.Fatal(r)
	}
	if r := q.pushN([]byte("1\n2\n3\n4\n"), 4, 4); r != pushFull { // 5 frames > 4
		t.Fatalf("split batch over the cap: %v", r)
	}
	if r := q.pushN([]byte("[1,2,3,4,5,6]\n"), 1, 6); r != pushOK { // one batch frame fits
		t.Fatalf("batch frame: %v", r)
	}
	batch, drops, ok := q.wait(nil)
	if !ok || string(batch) != "a\n[1,2,3,4,5,6]\n" || drops != 4 {
		t.Fatalf("wait = %q, %d drops, %v", batch, drops, ok)
	}
	// An empty queue takes a split batch whatever its size.
	if r := q.pushN([]byte("1\n2\n3\n4\n5\n6\n"), 6, 6); r != pushOK {
		t.Fatalf("split batch into an empty queue: %v", r)
	}
	if n, _ := q.len(); n != 6 {
		t.Errorf("%d frames queued, want 6", n)
	}
}

// startChatPair starts two proxy plugins on a, chat-batch and chat-plain,
// both of subservice "chat", and returns the probe listener and their
// probes (not yet welcomed).
func startChatPair(t *testing.T, a *testNode) (*probeListener, []*probe) {
	t.Helper()
	pl := newProbeListener(t)
	var probes []*probe
	for _, name := range []string{"chat-batch", "chat-plain"} {
		spec := helperSpec(t, name, "proxy", pl.env())
		spec.Subservice = "chat"
		if err := a.sv.Start(spec); err != nil {
			t.Fatal(err)
		}
		probes = append(probes, pl.accept(t))
	}
	return pl, probes
}
