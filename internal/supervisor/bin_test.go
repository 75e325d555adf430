package supervisor

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nearbymesh/nearby/subservice"
)

// binBlock is the bin block of msgs.
func binBlock(msgs ...string) []byte {
	var b []byte
	for _, m := range msgs {
		b = subservice.AppendBin(b, []byte(m))
	}
	return b
}

// sendBin writes a frame line whose "bin" is len(block) (head is the line
// without its closing brace), then block.
func (p *probe) sendBin(head string, block []byte) {
	p.t.Helper()
	p.sendRaw(fmt.Sprintf(`%s,"bin":%d}`+"\n", head, len(block)), block)
}

// sendRaw writes bytes as they are.
func (p *probe) sendRaw(parts ...any) {
	p.t.Helper()
	for _, part := range parts {
		var b []byte
		switch v := part.(type) {
		case string:
			b = []byte(v)
		case []byte:
			b = v
		}
		if _, err := p.c.Write(b); err != nil {
			p.t.Fatalf("write to plugin proxy: %v", err)
		}
	}
}

// nextBin reads a message frame with a bin block and returns the frame
// and its messages.
func (p *probe) nextBin() (*subservice.Frame, []string) {
	p.t.Helper()
	f := p.next()
	if f.Op != subservice.OpMessage || f.Bin <= 0 || f.Data != nil || f.Batch != nil {
		p.t.Fatalf("got %+v, want a message frame with a bin block", f)
	}
	block, err := p.lr.ReadBlock(f.Bin)
	if err != nil {
		p.t.Fatalf("read the bin block: %v", err)
	}
	if _, err := subservice.CheckBin(block); err != nil {
		p.t.Fatalf("node sent a bad bin block: %v", err)
	}
	var msgs []string
	for m := range subservice.BinItems(block) {
		msgs = append(msgs, string(m))
	}
	return f, msgs
}

// hostile is message bytes that JSON lines could not carry as they are.
var hostile = []string{"\x00\x01\xff\xfe", "line\nbreak", `{"op":"hello"}`, "", "\"", strings.Repeat("\xc3", 300)}

// TestBinRelay: a plugin granted binary messages sends and broadcasts bin
// blocks; the mesh carries each as one bin payload, its bytes untouched.
func TestBinRelay(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.MaxBatch = 8 })
	raw, rp := m.addRaw("raw")
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "binny", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	w := p.helloBatch("teleport", subservice.FeatureBin)
	if !slices.Equal(w.Features, []string{subservice.FeatureBin}) || w.MaxBatch != 8 {
		t.Errorf("welcome %+v, want features [bin] and max_batch 8", w)
	}
	block := binBlock(hostile...)
	p.sendBin(fmt.Sprintf(`{"op":"send","id":1,"to":%q`, rp.ID), block)
	if got := raw.next(t, "binny"); got.payload != binMagic+string(block) || got.broadcast {
		t.Errorf("raw node got %q", got.payload)
	}
	// The count may be padded with spaces, as the SDK writes it.
	one := binBlock("\x00")
	p.sendRaw(fmt.Sprintf(`{"op":"broadcast","id":7,"bin":%-10d}`+"\n", len(one)), one)
	if got := raw.next(t, "binny"); got.payload != binMagic+"\x00\x00\x00\x01\x00" || !got.broadcast {
		t.Errorf("raw node got %q for a broadcast", got.payload)
	}
	// Errors carry the first id and the count.
	p.sendBin(`{"op":"send","id":20,"to":"ghost00000000000"`, binBlock("a", "b", "c"))
	if e := p.expectError(subservice.CodeNoPeer, 20); e.Count != 3 {
		t.Errorf("no-peer %+v, want count 3", e)
	}
}

// TestBinBadInput: every malformed bin frame gets an error with its id, its
// block is skipped so that the next frame is read as a frame, and nothing
// reaches the mesh.
func TestBinBadInput(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.MaxBatch = 4; c.MaxLine = 4096 })
	raw, rp := m.addRaw("raw")
	pl := newProbeListener(t)
	// One at a time: the probes connect in the order they are accepted.
	var probes []*probe
	for _, name := range []string{"binny", "plain"} {
		if err := a.sv.Start(helperSpec(t, name, "proxy", pl.env())); err != nil {
			t.Fatal(err)
		}
		probes = append(probes, pl.accept(t))
	}
	p, plain := probes[0], probes[1]
	p.helloBatch(subservice.FeatureBin)
	plain.helloBatch(subservice.FeatureBatch)
	to := fmt.Sprintf(`,"to":%q`, rp.ID)
	bad := func(p *probe, code string, id uint64, says string, parts ...any) {
		t.Helper()
		p.sendRaw(parts...)
		e := p.expectError(code, id)
		if !strings.Contains(e.Message, says) {
			t.Errorf("error %+v, want it to say %q", e, says)
		}
		// In step: the next frame is a frame.
		p.sendf(`{"op":"send","id":99%s,"data":"next"}`, to)
		if got := raw.next(t, "binny"); got.payload != `"next"` {
			t.Fatalf("after the bad frame (id %d) the raw node got %q", id, got.payload)
		}
	}
	tooMany := binBlock("1", "2", "3", "4", "5")
	stray := append(binBlock("ok"), 0, 0)
	short := []byte("\x00\x00\x00\x09abc")
	big := make([]byte, 5000)
	for _, tt := range []struct {
		code  string
		id    uint64
		says  string
		parts []any
	}{
		{subservice.CodeTooLarge, 1, "max_batch", []any{fmt.Sprintf(`{"op":"send","id":1%s,"bin":%d}`+"\n", to, len(tooMany)), tooMany}},
		{subservice.CodeBadFrame, 2, "stray", []any{fmt.Sprintf(`{"op":"send","id":2%s,"bin":%d}`+"\n", to, len(stray)), stray}},
		{subservice.CodeBadFrame, 3, "says 9 bytes", []any{fmt.Sprintf(`{"op":"broadcast","id":3,"bin":%d}`+"\n", len(short)), short}},
		{subservice.CodeBadFrame, 4, "negative", []any{`{"op":"send","id":4,"bin":-5}` + "\n"}},
		{subservice.CodeTooLarge, 5, "max_line", []any{fmt.Sprintf(`{"op":"send","id":5%s,"bin":%d}`+"\n", to, len(big)), big}},
		{subservice.CodeBadFrame, 6, "only send and broadcast", []any{`{"op":"menu","id":6,"items":[],"bin":5}` + "\n", binBlock("x")}},
		{subservice.CodeBadFrame, 7, "data or batch", []any{fmt.Sprintf(`{"op":"send","id":7%s,"data":1,"bin":5}`+"\n", to), binBlock("x")}},
		{subservice.CodeBadFrame, 8, "runs past the largest id", []any{fmt.Sprintf(`{"op":"send","id":18446744073709551615%s,"bin":10}`+"\n", to), binBlock("a", "b")}},
	} {
		if tt.id == 8 {
			// The id is the largest: the error carries it.
			p.sendRaw(tt.parts...)
			if e := p.next(); e.Op != subservice.OpError || e.Code != tt.code || !strings.Contains(e.Message, tt.says) {
				t.Errorf("got %+v", e)
			}
			continue
		}
		bad(p, tt.code, tt.id, tt.says, tt.parts...)
	}
	// A plugin that did not ask for binary messages cannot send them,
	// and its stream stays in step too.
	plain.sendBin(fmt.Sprintf(`{"op":"send","id":9%s`, to), binBlock("x", "y"))
	if e := plain.expectError(subservice.CodeBadFrame, 9); !strings.Contains(e.Message, `"features":["bin"]`) {
		t.Errorf("error %+v", e)
	}
	plain.sendf(`{"op":"send","id":10%s,"data":"plain next"}`, to)
	if got := raw.next(t, "plain"); got.payload != `"plain next"` {
		t.Errorf("raw node got %q", got.payload)
	}
	raw.none(t, "binny")
	raw.none(t, "plain")
}

// TestBinDelivery: a bin payload from the mesh reaches plugins that asked
// for binary messages as one bin frame with the bytes untouched. When a
// plugin of the subservice did not ask, every plugin of it gets the
// messages as JSON if they are JSON, and none gets them if one is not
// (the error is what the sender's nack says). Malformed payloads are
// refused.
func TestBinDelivery(t *testing.T) {
	m := newMesh(t)
	a := m.node("alpha", func(c *Config) { c.MaxBatch = 4; c.MaxLine = 4096 })
	pl := newProbeListener(t)
	if err := a.sv.Start(helperSpec(t, "binny", "proxy", pl.env())); err != nil {
		t.Fatal(err)
	}
	p := pl.accept(t)
	p.helloBatch(subservice.FeatureBatch, subservice.FeatureBin)
	from := m.rec.peer
	payload := func(msgs ...string) []byte { return append([]byte(binMagic), binBlock(msgs...)...) }

	if err := a.sv.Deliver(from, "binny", payload(hostile[:4]...), true); err != nil {
		t.Fatal(err)
	}
	f, msgs := p.nextBin()
	if f.From != from.ID || f.FromName != from.Name || !f.Broadcast || !slices.Equal(msgs, hostile[:4]) {
		t.Errorf("got %+v with %q", f, msgs)
	}
	for _, tt := range []struct {
		payload []byte
		says    string
	}{
		{[]byte(binMagic), "no messages"},
		{payload("1", "2", "3", "4", "5"), "5 messages, more than 4"},
		{append(payload("x"), 1), "stray"},
		{[]byte(binMagic + "\xff\xff\xff\xff"), "says 4294967295 bytes"},
		{append([]byte(binMagic), make([]byte, 5000)...), "more than 4096"},
	} {
		err := a.sv.Deliver(from, "binny", tt.payload, false)
		if !errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), tt.says) || NackReason(err) != subservice.CodeRejected {
			t.Errorf("Deliver(%q) = %v, want ErrBadPayload saying %q", tt.payload[:min(len(tt.payload), 12)], err, tt.says)
		}
	}

	// A second plugin of the subservice, without binary messages: JSON
	// for both, or nothing for either.
	spec := helperSpec(t, "old-binny", "proxy", pl.env())
	spec.Subservice = "binny"
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	old := pl.accept(t)
	old.helloBatch(subservice.FeatureBatch)
	err := a.sv.Deliver(from, "binny", payload(`{"a":1}`, "\x00"), false)
	if !errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), "message 2 of 2 is not JSON") || !strings.Contains(err.Error(), "did not ask for binary messages") {
		t.Errorf("Deliver of non-JSON bytes to a plugin without bin = %v", err)
	}
	if err := a.sv.Deliver(from, "binny", payload(`{"a":1}`, ` [ 2 ] `), false); err != nil {
		t.Fatal(err)
	}
	for _, q := range []*probe{p, old} {
		if f := q.next(); f.Op != subservice.OpMessage || string(f.Batch) != `[{"a":1},[2]]` || f.Bin != 0 {
			t.Errorf("got %+v (batch %s), want the messages as a JSON batch", f, f.Batch)
		}
	}
	if err := a.sv.Deliver(from, "binny", payload(`"one"`), false); err != nil {
		t.Fatal(err)
	}
	for _, q := range []*probe{p, old} {
		if f := q.next(); f.Op != subservice.OpMessage || string(f.Data) != `"one"` {
			t.Errorf("got %+v (data %s), want one JSON message", f, f.Data)
		}
	}
}

// TestBinAsBatch: the conversion for nodes without bin payloads.
func TestBinAsBatch(t *testing.T) {
	for _, tt := range []struct {
		msgs []string
		want string
		err  string
	}{
		{[]string{"1"}, "1", ""},
		{[]string{"1", ` {"a" : [true]} `}, batchMagic + `[1,{"a":[true]}]`, ""},
		{[]string{"1", "nope"}, "", "message 2 of 2 is not JSON"},
		{[]string{""}, "", "message 1 of 1 is not JSON"},
		{[]string{"1 2"}, "", "is not JSON"},
	} {
		got, err := BinAsBatch(append([]byte(binMagic), binBlock(tt.msgs...)...))
		switch {
		case tt.err == "" && (err != nil || string(got) != tt.want):
			t.Errorf("BinAsBatch(%q) = %q, %v; want %q", tt.msgs, got, err, tt.want)
		case tt.err != "" && (!errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("BinAsBatch(%q) error %v, want %q", tt.msgs, err, tt.err)
		}
	}
}

// TestPythonBin: a Python plugin built from docs/PROTOCOL.md §14's own
// code, with only the standard library, sends a bin block the node carries
// as it is, and reads the bin blocks and JSON messages delivered to it.
func TestPythonBin(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	m := newMesh(t)
	a := m.node("alpha", nil)
	raw, rp := m.addRaw("raw")
	dir, err := filepath.Abs(filepath.Join("testdata", "binpy"))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Name: "binpy", Version: "1.0.0", Dir: dir, Argv: []string{"python3", "bin.py"}, Env: []string{"BINPY_TO=" + rp.ID}}
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	if got := raw.next(t, "binpy"); got.payload != binMagic+string(binBlock("hi", "\x00\n\xff", "")) {
		t.Fatalf("raw node got %q", got.payload)
	}
	logHas(t, a, "binpy", "sent")
	if err := a.sv.Deliver(m.rec.peer, "binpy", append([]byte(binMagic), binBlock("\x01\x02", "", "z")...), false); err != nil {
		t.Fatal(err)
	}
	logHas(t, a, "binpy", "from "+m.rec.peer.ID+" bin 0102 - 7a")
	if err := a.sv.Deliver(m.rec.peer, "binpy", []byte(`{"json":true}`), false); err != nil {
		t.Fatal(err)
	}
	logHas(t, a, "binpy", `data {"json": true}`)
}
