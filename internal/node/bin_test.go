package node

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/nearbymesh/nearby/internal/netsafe"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/mesh"
	"github.com/nearbymesh/nearby/subservice"
)

// TestRouterBinToOldNodes: a bin payload for a node without bin payloads
// travels as JSON when every message is JSON; otherwise a send fails with
// an error that says why and what to do, and a broadcast skips that node
// while the others get the bytes.
func TestRouterBinToOldNodes(t *testing.T) {
	if err := netsafe.Check(); err != nil {
		t.Skip(err)
	}
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	old := startTestNodeWith(t, key, "old", func(n *Node) { n.noBinFeature = true })
	cur := startTestNode(t, key, "cur")
	a := startTestNode(t, key, "a", old.addr, cur.addr)
	for _, n := range []*testNode{old, cur} {
		waitUntil(t, "a connects", func() bool {
			_, ok := a.n.mesh.Peer(n.n.id.ID)
			return ok
		})
	}
	r := &router{m: a.n.mesh, log: slog.New(slog.DiscardHandler)}
	bin := func(msgs ...string) []byte {
		b := []byte("\x00b")
		for _, m := range msgs {
			b = subservice.AppendBin(b, []byte(m))
		}
		return b
	}
	if !supervisor.IsBinPayload(bin("x")) {
		t.Fatal("the test's bin payload is not one")
	}
	oldID := string(old.n.id.ID)
	err = r.Send(oldID, "chat", bin(`{"a":1}`, "\x00raw"), 0)
	if err == nil || !strings.Contains(err.Error(), "without binary messages") || !strings.Contains(err.Error(), "message 2 of 2 is not JSON") ||
		!strings.Contains(err.Error(), "update that node") {
		t.Errorf("Send of raw bytes to an old node: %v", err)
	}
	sent := func(n *testNode) uint64 {
		p, _ := a.n.mesh.Peer(n.n.id.ID)
		return p.Sent
	}
	before := sent(old)
	if err := r.Send(oldID, "chat", bin(`{"a":1}`, "2"), 0); err != nil {
		t.Errorf("Send of JSON messages to an old node: %v", err)
	}
	// (At least: the peer exchange may send the old node something too.)
	waitUntil(t, "the JSON batch goes to the old node", func() bool { return sent(old) >= before+1 })
	oldBefore, curBefore := sent(old), sent(cur)
	if n := r.Broadcast("chat", bin("\x00raw")); n != 1 {
		t.Errorf("broadcast of raw bytes reached %d nodes, want 1 (not the old one)", n)
	}
	if n := r.Broadcast("chat", bin("1", "2")); n != 2 {
		t.Errorf("broadcast of JSON messages reached %d nodes, want 2", n)
	}
	waitUntil(t, "the broadcasts go out", func() bool { return sent(cur) >= curBefore+2 && sent(old) >= oldBefore+1 })
}
