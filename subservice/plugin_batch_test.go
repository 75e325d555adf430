package subservice_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/subservice"
)

// stallBytes is the size of each of the two messages stall sends: together
// more than the node's reader and the socket can hold while the node is
// stuck in the mesh, so the SDK's writer is then blocked in a Write.
const stallBytes = 600 << 10

// stall makes the node stop reading p's frames until e.r.gate is closed:
// the node blocks in the mesh sending the first of two large messages to
// "sink", and the second stays in the SDK's write in progress. Everything
// sent next piles up in the SDK. It returns the ids of the two messages.
func stall(t *testing.T, p *subservice.Plugin) []uint64 {
	t.Helper()
	big := strings.Repeat("s", stallBytes)
	var ids []uint64
	for range 2 {
		id, err := p.Send("sink", big)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestPluginCoalescesSends: sends that pile up while the node does not
// read reach it as batch frames (fewer Router calls than messages), and
// the mesh gets every message once, in order, each batch within the
// node's max_batch.
func TestPluginCoalescesSends(t *testing.T) {
	const maxBatch = 100
	e := startWith(t, "chat", func(c *supervisor.Config) { c.MaxBatch = maxBatch })
	p := e.dial(t)
	calls0 := e.r.calls.Load()
	stall(t, p)
	const n = 2000
	var ids []uint64
	for i := range n {
		to := peerB.ID
		if i >= n/2 {
			to = "" // then broadcasts: a batch never mixes the two
		}
		var id uint64
		var err error
		if to == "" {
			id, err = p.Broadcast(i)
		} else {
			id, err = p.Send(to, i)
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i := 1; i < n; i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("ids %d then %d: not consecutive", ids[i-1], ids[i])
		}
	}
	close(e.r.gate)
	for range 2 {
		if s := e.r.next(t); s.to != "sink" || len(s.data) != stallBytes+2 || s.n != 1 {
			t.Fatalf("got %.60v, want a stall message", s)
		}
	}
	batches := 0
	for i := range n {
		s := e.r.next(t)
		if s.data != fmt.Sprint(i) || s.broadcast != (i >= n/2) || (!s.broadcast && s.to != peerB.ID) {
			t.Fatalf("message %d: got %+v", i, s)
		}
		if s.n > maxBatch {
			t.Fatalf("a batch of %d messages; the node's max_batch is %d", s.n, maxBatch)
		}
		if s.n > 1 {
			batches++
		}
	}
	select {
	case s := <-e.r.sent:
		t.Fatalf("an extra message: %+v", s)
	default:
	}
	calls := e.r.calls.Load() - calls0 - 2 // the stall's messages
	if calls >= n/10 || batches == 0 {
		t.Errorf("%d messages that piled up reached the mesh in %d messages (%d in batches)", n, calls, batches)
	}
	t.Logf("%d messages in %d mesh messages", n, calls)
	// Nothing was refused.
	select {
	case err := <-p.Errors():
		t.Errorf("error %v", err)
	default:
	}
}

// TestPluginWithoutBatch: with WithoutBatch the SDK asks for nothing and
// every message is a frame (and a mesh message) of its own, piled up or
// not.
func TestPluginWithoutBatch(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t, subservice.WithoutBatch())
	calls0 := e.r.calls.Load()
	stall(t, p)
	const n = 300
	for i := range n {
		if _, err := p.Send(peerB.ID, i); err != nil {
			t.Fatal(err)
		}
	}
	close(e.r.gate)
	e.r.next(t)
	e.r.next(t)
	for i := range n {
		if s := e.r.next(t); s.data != fmt.Sprint(i) || s.n != 1 {
			t.Fatalf("message %d: got %+v", i, s)
		}
	}
	if calls := e.r.calls.Load() - calls0 - 2; calls != n {
		t.Errorf("%d messages took %d mesh messages, want one each", n, calls)
	}
	// The node still delivers batches to it, as single messages.
	if err := e.sv.Deliver(peerB, "chat", []byte("\x00B[\"a\",\"b\"]"), false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"a"`, `"b"`} {
		if m := <-p.Messages(); string(m.Data) != want || m.From != peerB {
			t.Errorf("got %+v, want %s", m, want)
		}
	}
}

// TestPluginBatchErrorRange: a batch that the remote refuses comes back as
// one error whose ID and Count cover exactly the ids of its messages;
// Covers tells which.
func TestPluginBatchErrorRange(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	stall(t, p)
	const n = 500
	var ids []uint64
	for i := range n {
		id, err := p.Send(refuser.ID, i)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	close(e.r.gate)
	covered := make(map[uint64]int)
	var errs []*subservice.Error
	deadline := time.After(wait)
	for len(covered) < n {
		select {
		case err := <-p.Errors():
			if err.Code != subservice.CodeNoSubservice || err.To != refuser.ID {
				t.Fatalf("error %+v", err)
			}
			errs = append(errs, err)
			for _, id := range ids {
				if err.Covers(id) {
					covered[id]++
				}
			}
			if err.Count > 1 && !strings.Contains(err.Error(), fmt.Sprintf("ids %d to %d", err.ID, err.ID+uint64(err.Count)-1)) {
				t.Errorf("Error() = %q", err.Error())
			}
		case <-deadline:
			t.Fatalf("%d of %d ids covered by %d errors", len(covered), n, len(errs))
		}
	}
	for id, k := range covered {
		if k != 1 {
			t.Errorf("id %d covered by %d errors", id, k)
		}
	}
	if len(errs) >= n/10 {
		t.Errorf("%d refused messages that piled up came back as %d errors", n, len(errs))
	}
	t.Logf("%d refusals in %d errors", n, len(errs))
}

func TestErrorCovers(t *testing.T) {
	const top = 1<<64 - 1
	for _, tt := range []struct {
		e       subservice.Error
		in, out []uint64
	}{
		{subservice.Error{ID: 0, Count: 5}, nil, []uint64{0, 1, 4}},
		{subservice.Error{ID: 7}, []uint64{7}, []uint64{0, 6, 8}},
		{subservice.Error{ID: 7, Count: 1}, []uint64{7}, []uint64{6, 8}},
		{subservice.Error{ID: 7, Count: 3}, []uint64{7, 8, 9}, []uint64{6, 10, top}},
		{subservice.Error{ID: top - 1, Count: 2}, []uint64{top - 1, top}, []uint64{0, 1, top - 2}},
	} {
		for _, id := range tt.in {
			if !tt.e.Covers(id) {
				t.Errorf("%+v does not cover %d", tt.e, id)
			}
		}
		for _, id := range tt.out {
			if tt.e.Covers(id) {
				t.Errorf("%+v covers %d", tt.e, id)
			}
		}
	}
	if s := (&subservice.Error{ID: 7, Count: 3, Code: "no-peer", Message: "gone"}).Error(); s != "subservice: node error no-peer (ids 7 to 9): gone" {
		t.Errorf("Error() = %q", s)
	}
	if s := (&subservice.Error{ID: 7, Count: 1, Code: "no-peer"}).Error(); s != "subservice: node error no-peer (id 7)" {
		t.Errorf("Error() = %q", s)
	}
}

// TestPluginReceivesBatchPayload: a batch from the mesh reaches Messages
// as one message per value, in order, with its sender.
func TestPluginReceivesBatchPayload(t *testing.T) {
	e := start(t, "chat")
	p := e.dial(t)
	if err := e.sv.Deliver(peerB, "chat", []byte("\x00B[1,{\"a\":[2]},\"three\",null]"), true); err != nil {
		t.Fatal(err)
	}
	if err := e.sv.Deliver(peerB, "chat", []byte(`"after"`), false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`1`, `{"a":[2]}`, `"three"`, `null`} {
		m := <-p.Messages()
		if string(m.Data) != want || m.From != peerB || !m.Broadcast {
			t.Errorf("got %+v, want %s from %v, broadcast", m, want, peerB)
		}
	}
	if m := <-p.Messages(); string(m.Data) != `"after"` || m.Broadcast {
		t.Errorf("got %+v, want the message after the batch", m)
	}
}

// fakeNode is the node end of one plugin connection, spoken by the test:
// for what a real node of this version never does (refuse the feature,
// grant a small max_batch and then write frames of its choosing).
type fakeNode struct {
	t     *testing.T
	c     net.Conn
	br    *bufio.Reader
	hello string
}

// dialFake connects a Plugin (with opts) to a fake node that answers the
// hello with welcome (a frame without the newline) and returns both.
func dialFake(t *testing.T, welcome string, opts ...subservice.Option) (*fakeNode, *subservice.Plugin) {
	t.Helper()
	path := filepath.Join(shortTemp(t), "n.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type dialed struct {
		p   *subservice.Plugin
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		p, err := subservice.Dial(ctx, path, "tok", opts...)
		ch <- dialed{p, err}
	}()
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(wait))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fn := &fakeNode{t: t, c: c, br: bufio.NewReaderSize(c, 4<<20)}
	fn.hello = fn.line()
	fn.write(welcome)
	d := <-ch
	if d.err != nil {
		t.Fatal(d.err)
	}
	t.Cleanup(func() { d.p.Close() })
	return fn, d.p
}

func shortTemp(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if len(d) < 80 {
		return d
	}
	d, err := filepath.Abs(filepath.Join("/tmp", fmt.Sprintf("fn%d", time.Now().UnixNano())))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// line reads the next line from the plugin.
func (fn *fakeNode) line() string {
	fn.t.Helper()
	fn.c.SetReadDeadline(time.Now().Add(wait))
	l, err := fn.br.ReadString('\n')
	if err != nil {
		fn.t.Fatalf("fake node: read: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

// frame reads the next frame from the plugin.
func (fn *fakeNode) frame() *subservice.Frame {
	fn.t.Helper()
	l := fn.line()
	f, err := subservice.DecodeFrame([]byte(l))
	if err != nil {
		fn.t.Fatalf("fake node: %q: %v", l, err)
	}
	return f
}

func (fn *fakeNode) write(lines ...string) {
	fn.t.Helper()
	fn.c.SetWriteDeadline(time.Now().Add(wait))
	for _, l := range lines {
		if _, err := fn.c.Write([]byte(l + "\n")); err != nil {
			fn.t.Fatalf("fake node: write: %v", err)
		}
	}
}

const (
	welcomeOld   = `{"op":"welcome","protocol":1,"node":{"id":"n1","name":"one"},"subservice":"chat","version":"1.0.0","peers":[],"max_line":1048576}`
	welcomeBatch = `{"op":"welcome","protocol":1,"node":{"id":"n1","name":"one"},"subservice":"chat","version":"1.0.0","peers":[],"max_line":1048576,"features":["batch"],"max_batch":3}`
)

// TestPluginHelloFeatures: the SDK asks for batches and binary messages
// unless told not to.
func TestPluginHelloFeatures(t *testing.T) {
	for _, tt := range []struct {
		opts []subservice.Option
		want string
	}{
		{nil, `{"op":"hello","token":"tok","protocol":1,"features":["batch","bin"]}`},
		{[]subservice.Option{subservice.WithoutBatch()}, `{"op":"hello","token":"tok","protocol":1,"features":["bin"]}`},
		{[]subservice.Option{subservice.WithoutBin()}, `{"op":"hello","token":"tok","protocol":1,"features":["batch"]}`},
		{[]subservice.Option{subservice.WithoutBatch(), subservice.WithoutBin()}, `{"op":"hello","token":"tok","protocol":1}`},
	} {
		if fn, _ := dialFake(t, welcomeOld, tt.opts...); fn.hello != tt.want {
			t.Errorf("hello %s, want %s", fn.hello, tt.want)
		}
	}
}

// readSends reads send and broadcast frames from the plugin until they
// have carried n messages, and returns them.
func (fn *fakeNode) readSends(n int) []*subservice.Frame {
	fn.t.Helper()
	var out []*subservice.Frame
	for got := 0; got < n; {
		f := fn.frame()
		if f.Op != subservice.OpSend && f.Op != subservice.OpBroadcast {
			fn.t.Fatalf("fake node: unexpected %+v", f)
		}
		k := 1
		if f.Batch != nil {
			k = 0
			for range subservice.BatchItems(f.Batch) {
				k++
			}
		}
		out = append(out, f)
		got += k
	}
	return out
}

// TestPluginOldNode: a node that does not grant the feature (one that
// predates it ignores the request) never gets a batch frame, however many
// sends pile up.
func TestPluginOldNode(t *testing.T) {
	fn, p := dialFake(t, welcomeOld)
	if _, err := p.Send("n2", strings.Repeat("x", stallBytes)); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if id, err := p.Send("n2", i); err != nil || id != uint64(i+2) {
			t.Fatalf("Send = %d, %v", id, err)
		}
	}
	frames := fn.readSends(n + 1)[1:] // after the stall's
	if len(frames) != n {
		t.Fatalf("%d frames for %d messages", len(frames), n)
	}
	for i, f := range frames {
		if f.Batch != nil || string(f.Data) != fmt.Sprint(i) || f.ID != uint64(i+2) {
			t.Fatalf("frame %d: %+v", i, f)
		}
	}
}

// TestPluginHonoursMaxBatch: batch frames hold at most the welcome's
// max_batch messages, with consecutive ids, first id in the frame.
func TestPluginHonoursMaxBatch(t *testing.T) {
	fn, p := dialFake(t, welcomeBatch)
	if _, err := p.Send("n2", strings.Repeat("x", stallBytes)); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if _, err := p.Send("n2", i); err != nil {
			t.Fatal(err)
		}
	}
	frames := fn.readSends(n + 1)
	if frames[0].ID != 1 || frames[0].Batch != nil {
		t.Fatalf("first frame %+v, want the stall's", frames[0])
	}
	frames = frames[1:]
	next := 0
	for _, f := range frames {
		// A frame of one message is an ordinary one (it was alone at the
		// end of the buffer when the writer took it).
		var vals []int
		if f.Batch == nil {
			var v int
			if err := json.Unmarshal(f.Data, &v); err != nil {
				t.Fatalf("frame %+v: %v", f, err)
			}
			vals = []int{v}
		} else if err := json.Unmarshal(f.Batch, &vals); err != nil || len(vals) < 2 || len(vals) > 3 || f.Data != nil {
			t.Fatalf("frame %+v (batch %s): want a batch of 2 or 3", f, f.Batch)
		}
		if f.ID != uint64(next+2) || f.To != "n2" {
			t.Fatalf("frame id %d to %q, want %d to n2", f.ID, f.To, next+2)
		}
		for _, v := range vals {
			if v != next {
				t.Fatalf("value %d, want %d", v, next)
			}
			next++
		}
	}
	if next != n || len(frames) >= n {
		t.Errorf("%d messages in %d frames", next, len(frames))
	}
}

// TestPluginBatchFramesFromNode: message frames carrying a batch, in the
// form the node writes and in others a node may write (whitespace, an
// unknown field), reach Messages value by value; an error with a count
// reaches Errors with it.
func TestPluginBatchFramesFromNode(t *testing.T) {
	fn, p := dialFake(t, welcomeBatch)
	fn.write(
		`{"op":"message","from":"n2","from_name":"two","broadcast":false,"batch":[1,{"a":"b"},[3]]}`,
		`{"op":"message","from":"n2","from_name":"two","broadcast":true,"batch":[ 4 , "five" ],"later":1}`,
		`{"op":"message","from":"n3","from_name":"three","broadcast":false,"batch":[6]}`,
		`{"op":"message","from":"n3","from_name":"three","broadcast":false,"data":7}`,
		`{"op":"error","id":10,"count":4,"code":"no-subservice","message":"m","to":"n2"}`,
	)
	type got struct {
		from string
		b    bool
		data string
	}
	want := []got{{"n2", false, `1`}, {"n2", false, `{"a":"b"}`}, {"n2", false, `[3]`},
		{"n2", true, `4`}, {"n2", true, `"five"`}, {"n3", false, `6`}, {"n3", false, `7`}}
	var all []got
	for range want {
		select {
		case m := <-p.Messages():
			all = append(all, got{m.From.ID, m.Broadcast, strings.Join(strings.Fields(string(m.Data)), "")})
		case <-time.After(wait):
			t.Fatalf("messages: %v so far", all)
		}
	}
	if !slices.Equal(all, want) {
		t.Errorf("messages %v\nwant     %v", all, want)
	}
	select {
	case e := <-p.Errors():
		if e.ID != 10 || e.Count != 4 || !e.Covers(13) || e.Covers(14) {
			t.Errorf("error %+v", e)
		}
	case <-time.After(wait):
		t.Fatal("no error")
	}
}

// TestPluginBatchTooLargeForNode: a send larger than max_line fails in
// Send, as without batches, and spoils neither the frame before it nor the
// one after.
func TestPluginBatchTooLargeForNode(t *testing.T) {
	fn, p := dialFake(t, welcomeBatch)
	if _, err := p.Send("n2", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send("n2", strings.Repeat("y", 1<<20)); !errors.Is(err, subservice.ErrTooLarge) {
		t.Fatalf("oversized Send: %v", err)
	}
	if _, err := p.Send("n2", 2); err != nil {
		t.Fatal(err)
	}
	var vals []int
	for _, f := range fn.readSends(2) {
		if f.Batch != nil {
			var v []int
			json.Unmarshal(f.Batch, &v)
			vals = append(vals, v...)
		} else {
			var v int
			json.Unmarshal(f.Data, &v)
			vals = append(vals, v)
		}
	}
	if !slices.Equal(vals, []int{1, 2}) {
		t.Errorf("values %v, want [1 2]", vals)
	}
}

// TestPluginTooLargeWhileStalled: a send larger than the node's max_line
// fails at once even while the node does not read and sends wait in the
// SDK; it does not wait for room it would never use.
func TestPluginTooLargeWhileStalled(t *testing.T) {
	fn, p := dialFake(t, welcomeBatch)
	// The fake node reads nothing: sends fill the socket, then the SDK's
	// write in progress, then its buffer, and then Send blocks; a Send
	// blocks only while the buffer holds frames, the state in which an
	// oversized send used to wait too. Blocked = no send accepted for a
	// while (if that misjudges, the oversized send below simply meets an
	// emptier buffer).
	chunk := strings.Repeat("f", 64<<10)
	accepted := make(chan int, 1000)
	go func() {
		for i := range 200 { // 12.5 MiB: more than the SDK and the socket hold
			if _, err := p.Send("n2", chunk); err != nil {
				return
			}
			accepted <- i + 1
		}
	}()
	deadline := time.After(wait)
	for n, quiet := 0, false; !quiet; {
		select {
		case n = <-accepted:
		case <-time.After(300 * time.Millisecond):
			quiet = n >= 16 // 1 MiB: at least the SDK's buffer
		case <-deadline:
			t.Fatalf("%d sends of 64 KiB accepted, no stall", n)
		}
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Send("n2", strings.Repeat("y", subservice.DefaultMaxLine+1))
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, subservice.ErrTooLarge) {
			t.Errorf("oversized Send while stalled: %v, want ErrTooLarge", err)
		}
	case <-time.After(wait):
		t.Error("an oversized Send waited behind a stalled node")
	}
	fn.c.Close() // the stalled sends fail; Close returns
}
