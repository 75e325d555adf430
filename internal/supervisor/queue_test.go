package supervisor

import (
	"strings"
	"testing"
)

// TestOutQueue: frames come out in order, one batch per wait, with the
// welcome first; the caps drop and count; a closed queue refuses.
func TestOutQueue(t *testing.T) {
	q := newOutQueue(3, 10)
	for _, f := range []string{"a\n", "bb\n"} {
		if r := q.push([]byte(f)); r != pushOK {
			t.Fatalf("push %q: %v", f, r)
		}
	}
	q.pushFront([]byte("W\n"))
	if n, b := q.len(); n != 3 || b != 7 {
		t.Fatalf("len = %d frames, %d bytes", n, b)
	}
	if r := q.push([]byte("c\n")); r != pushFull { // 4 frames > 3
		t.Fatalf("push over the frame cap: %v", r)
	}
	batch, drops, ok := q.wait(nil)
	if !ok || string(batch) != "W\na\nbb\n" || drops != 1 {
		t.Fatalf("wait = %q, %d drops, %v", batch, drops, ok)
	}
	// The writer hands the batch back; the next pushes reuse it.
	q.push([]byte("ddd\n"))
	if r := q.push([]byte("eeeeeee\n")); r != pushFull { // 12 bytes > 10
		t.Fatalf("push over the byte cap: %v", r)
	}
	next, drops, ok := q.wait(batch)
	if !ok || string(next) != "ddd\n" || drops != 1 {
		t.Fatalf("wait = %q, %d drops, %v", next, drops, ok)
	}
	// One frame is always taken into an empty queue, whatever its size.
	big := strings.Repeat("x", 100) + "\n"
	if r := q.push([]byte(big)); r != pushOK {
		t.Fatalf("big frame into an empty queue: %v", r)
	}
	if got, _, _ := q.wait(next); string(got) != big {
		t.Fatalf("wait = %q", got)
	}
	// The queue copies: changing what was pushed changes nothing.
	b := []byte("f\n")
	q.push(b)
	b[0] = 'X'
	if got, _, _ := q.wait(nil); string(got) != "f\n" {
		t.Fatalf("wait = %q, want the frame as pushed", got)
	}
	q.close()
	if r := q.push([]byte("g\n")); r != pushClosed {
		t.Fatalf("push after close: %v", r)
	}
	if _, _, ok := q.wait(nil); ok {
		t.Fatal("wait after close reports frames")
	}
}

// TestTrackRing: a nack finds its send among the last pendingCap sends,
// once, and only for the plugin that sent it.
func TestTrackRing(t *testing.T) {
	s := &Supervisor{ring: make([]pending, pendingCap)}
	one := &instance{p: &plugin{sub: "one"}}
	two := &instance{p: &plugin{sub: "two"}}
	first := s.track(one, 7)
	if p, ok := s.untrack(first, "two"); ok {
		t.Fatalf("untrack for another plugin's name found %+v", p)
	}
	if p, ok := s.untrack(first, "one"); !ok || p.inst != one || p.pluginID != 7 {
		t.Fatalf("untrack = %+v, %v", p, ok)
	}
	if _, ok := s.untrack(first, "one"); ok {
		t.Fatal("a send was untracked twice")
	}
	if _, ok := s.untrack(0, ""); ok {
		t.Fatal("id 0 untracked")
	}
	old := s.track(one, 8)
	var last uint64
	for i := range pendingCap {
		last = s.track(two, uint64(100+i))
	}
	if _, ok := s.untrack(old, ""); ok {
		t.Fatalf("send %d found after %d newer ones", old, pendingCap)
	}
	if p, ok := s.untrack(last, ""); !ok || p.inst != two || p.pluginID != 100+pendingCap-1 {
		t.Fatalf("the last send: %+v, %v", p, ok)
	}
	if p, ok := s.untrack(last-pendingCap+1, "two"); !ok || p.pluginID != 100 {
		t.Fatalf("the oldest remembered send: %+v, %v", p, ok)
	}
}
