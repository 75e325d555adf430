package mesh

import (
	"slices"
	"testing"
	"time"
)

// TestFeatures: each node's Config.Features reach its peers in the hello;
// BroadcastFeature skips (and names) peers without the needed bits, and
// BroadcastTo reaches one peer marked as a broadcast.
func TestFeatures(t *testing.T) {
	ca, cb, cc := testConfig(t, testKey), testConfig(t, testKey), testConfig(t, testKey)
	ca.Features, cb.Features, cc.Features = 0b11, 0b01, 0
	a, b, c := startNode(t, ca), startNode(t, cb), startNode(t, cc)
	connect(t, a, b)
	connect(t, a, c)
	if f, ok := a.PeerFeatures(b.ID()); !ok || f != 0b01 {
		t.Errorf("a sees b's features %b, %v; want 1", f, ok)
	}
	if f, ok := a.PeerFeatures(c.ID()); !ok || f != 0 {
		t.Errorf("a sees c's features %b, %v; want 0", f, ok)
	}
	if p, _ := b.Peer(a.ID()); p.Features != 0b11 {
		t.Errorf("b's PeerInfo of a: features %b, want 11", p.Features)
	}
	if _, ok := a.PeerFeatures("0123456789abcdef0123456789abcdef"); ok {
		t.Error("features of an unknown peer")
	}

	n, lacking := a.BroadcastFeature("chat", []byte(`"new form"`), 0b01)
	if n != 1 || !slices.Equal(lacking, []NodeID{c.ID()}) {
		t.Fatalf("BroadcastFeature: %d sent, lacking %v; want 1 and [c]", n, lacking)
	}
	if err := a.BroadcastTo(c.ID(), "chat", []byte(`"old form"`)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    *node
		want string
	}{{b, `"new form"`}, {c, `"old form"`}} {
		select {
		case m := <-tc.n.got:
			if string(m.Payload) != tc.want || !m.Broadcast || m.From != a.ID() {
				t.Errorf("got %+v (%s), want broadcast %s from a", m, m.Payload, tc.want)
			}
		case <-time.After(wait):
			t.Fatalf("no message for %s", tc.want)
		}
	}
	select {
	case m := <-c.got:
		t.Errorf("c got a second message: %s", m.Payload)
	case m := <-b.got:
		t.Errorf("b got a second message: %s", m.Payload)
	case <-time.After(100 * time.Millisecond):
	}
	if err := a.BroadcastTo("0123456789abcdef0123456789abcdef", "chat", []byte(`1`)); err == nil {
		t.Error("BroadcastTo an unknown peer succeeded")
	}
}
