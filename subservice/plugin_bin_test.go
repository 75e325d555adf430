package subservice_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

const welcomeBin = `{"op":"welcome","protocol":1,"node":{"id":"n1","name":"one"},"subservice":"chat","version":"1.0.0","peers":[],"max_line":1048576,"features":["batch","bin"],"max_batch":3}`

// binFrame is a frame from the plugin with its bin block's messages.
type binFrame struct {
	*subservice.Frame
	msgs []string
}

// readBinFrame reads the next frame and, when it has one, its bin block.
func (fn *fakeNode) readBinFrame() binFrame {
	fn.t.Helper()
	f := fn.frame()
	bf := binFrame{Frame: f}
	if f.Bin > 0 {
		block := make([]byte, f.Bin)
		fn.c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(fn.br, block); err != nil {
			fn.t.Fatalf("fake node: read bin block: %v", err)
		}
		if _, err := subservice.CheckBin(block); err != nil {
			fn.t.Fatalf("fake node: %v", err)
		}
		for m := range subservice.BinItems(block) {
			bf.msgs = append(bf.msgs, string(m))
		}
	}
	return bf
}

// TestPluginSendBytes: binary messages that pile up behind a blocked
// write travel as bin frames of at most max_batch messages, with
// consecutive ids, bytes untouched (newlines, NULs, invalid UTF-8, empty),
// a send never joining a broadcast or a JSON frame.
func TestPluginSendBytes(t *testing.T) {
	fn, p := dialFake(t, welcomeBin)
	if _, err := p.Send("n2", strings.Repeat("x", stallBytes)); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := range 10 {
		m := fmt.Sprintf("%d\n\x00\xff%s", i, strings.Repeat("\x00", i))
		if i == 4 {
			m = ""
		}
		if id, err := p.SendBytes("n2", []byte(m)); err != nil || id != uint64(i+2) {
			t.Fatalf("SendBytes = %d, %v; want id %d", id, err, i+2)
		}
		sent = append(sent, m)
	}
	if _, err := p.BroadcastBytes([]byte("all 1")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.BroadcastBytes([]byte("all 2")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send("n2", "json"); err != nil {
		t.Fatal(err)
	}
	if f := fn.frame(); f.Op != subservice.OpSend || f.ID != 1 {
		t.Fatalf("first frame %+v, want the stall", f)
	}
	var got []string
	next := uint64(2)
	for len(got) < len(sent) {
		f := fn.readBinFrame()
		if f.Op != subservice.OpSend || f.To != "n2" || f.ID != next || len(f.msgs) == 0 || len(f.msgs) > 3 {
			t.Fatalf("frame %+v with %d messages, want a send to n2 from id %d of 1 to 3", f.Frame, len(f.msgs), next)
		}
		next += uint64(len(f.msgs))
		got = append(got, f.msgs...)
	}
	if !slices.Equal(got, sent) {
		t.Errorf("got %q, want %q", got, sent)
	}
	if f := fn.readBinFrame(); f.Op != subservice.OpBroadcast || f.ID != 12 || !slices.Equal(f.msgs, []string{"all 1", "all 2"}) {
		t.Errorf("got %+v with %q, want one broadcast bin frame of both", f.Frame, f.msgs)
	}
	if f := fn.readBinFrame(); f.Op != subservice.OpSend || f.Bin != 0 || string(f.Data) != `"json"` {
		t.Errorf("got %+v, want the JSON send", f.Frame)
	}
}

// TestPluginSendBytesRefused: without the node's grant SendBytes and
// BroadcastBytes fail with ErrNoBin; a message larger than max_line fails
// at once with ErrTooLarge.
func TestPluginSendBytesRefused(t *testing.T) {
	_, p := dialFake(t, welcomeOld)
	if _, err := p.SendBytes("n2", []byte("x")); !errors.Is(err, subservice.ErrNoBin) {
		t.Errorf("SendBytes to an old node: %v", err)
	}
	if _, err := p.BroadcastBytes([]byte("x")); !errors.Is(err, subservice.ErrNoBin) {
		t.Errorf("BroadcastBytes to an old node: %v", err)
	}
	_, p = dialFake(t, welcomeBin, subservice.WithoutBin())
	if _, err := p.SendBytes("n2", []byte("x")); !errors.Is(err, subservice.ErrNoBin) {
		t.Errorf("SendBytes WithoutBin: %v", err)
	}
	_, p = dialFake(t, strings.Replace(welcomeBin, `"max_line":1048576`, `"max_line":100`, 1))
	if _, err := p.SendBytes("n2", make([]byte, 97)); !errors.Is(err, subservice.ErrTooLarge) {
		t.Errorf("SendBytes over max_line: %v", err)
	}
	if _, err := p.SendBytes("", []byte("x")); err == nil {
		t.Error("SendBytes to no node succeeded")
	}
}

// TestPluginReceivesBin: the messages of a bin frame from the node arrive
// one by one in Message.Bytes; a malformed block is reported on Errors and
// skipped, and the frames after it still arrive.
func TestPluginReceivesBin(t *testing.T) {
	fn, p := dialFake(t, welcomeBin)
	block := func(msgs ...string) []byte {
		var b []byte
		for _, m := range msgs {
			b = subservice.AppendBin(b, []byte(m))
		}
		return b
	}
	send := func(head string, b []byte) {
		t.Helper()
		fn.c.SetWriteDeadline(time.Now().Add(wait))
		if _, err := fmt.Fprintf(fn.c, "%s,\"bin\":%d}\n%s", head, len(b), b); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"\x00\n{", "", `{"n":7}`}
	send(`{"op":"message","from":"n2","from_name":"two","broadcast":true`, block(want...))
	send(`{"op":"message","from":"n2","from_name":"two"`, []byte("\x00\x00\x00\x09short"))
	fn.write(`{"op":"message","from":"n3","from_name":"three","data":"after"}`)
	for i, w := range want {
		m := recv(t, p)
		if string(m.Bytes) != w || m.Data != nil || m.From != (subservice.Peer{ID: "n2", Name: "two"}) || !m.Broadcast {
			t.Fatalf("message %d: %+v, want bytes %q", i, m, w)
		}
		if i == 2 {
			var v struct{ N int }
			if err := m.Decode(&v); err != nil || v.N != 7 {
				t.Errorf("Decode of JSON bytes: %v, %+v", err, v)
			}
		}
	}
	if e := recvErr(t, p); e.Code != subservice.CodeBadFrame || !strings.Contains(e.Message, "says 9 bytes") {
		t.Errorf("error %+v, want bad-frame for the short block", e)
	}
	if m := recv(t, p); string(m.Data) != `"after"` || m.Bytes != nil {
		t.Errorf("got %+v, want the JSON message after", m)
	}
}

func recv(t *testing.T, p *subservice.Plugin) subservice.Message {
	t.Helper()
	select {
	case m := <-p.Messages():
		return m
	case <-time.After(wait):
		t.Fatal("no message")
	}
	panic("unreachable")
}

func recvErr(t *testing.T, p *subservice.Plugin) *subservice.Error {
	t.Helper()
	select {
	case e := <-p.Errors():
		return e
	case <-time.After(wait):
		t.Fatal("no error")
	}
	panic("unreachable")
}
