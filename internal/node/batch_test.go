package node

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/netsafe"
	"github.com/nearbymesh/nearby/mesh"
)

// TestPluginToPluginMixedBatch is TestPluginToPluginAcrossNodes with the
// sender's and the receiver's SDK in different batch modes: a sender with
// batches whose receiver did not ask for them (node b splits each batch
// into message frames), and a sender without batches whose receiver asked
// for them. A few thousand messages arrive all, once each and in order;
// the mesh carries batches exactly when the sender uses them.
func TestPluginToPluginMixedBatch(t *testing.T) {
	if err := netsafe.Check(); err != nil {
		t.Skip(err)
	}
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ send, recv bool }{{true, false}, {false, true}} {
		t.Run(fmt.Sprintf("send=%s/recv=%s", batchMode(tt.send), batchMode(tt.recv)), func(t *testing.T) {
			pp := newPluginPairModes(t, key, tt.send, tt.recv)
			var meshMsgs uint64
			// The last round of one message would see any stray
			// duplicate of the rounds before it ("error a message
			// outside a round").
			for _, r := range []struct{ n, window int }{{3000, 256}, {2000, benchWindow}, {1, 1}} {
				_, k := pp.run(t, r.n, r.window)
				meshMsgs += k
			}
			switch {
			case !tt.send && meshMsgs != 5001:
				t.Errorf("5001 messages without batches took %d mesh messages", meshMsgs)
			case tt.send && meshMsgs >= 5001:
				t.Errorf("5001 messages took %d mesh messages: sends that piled up did not travel as batches", meshMsgs)
			}
			t.Logf("5001 messages in %d mesh messages", meshMsgs)
		})
	}
}

// newPluginPairModes is newPluginPair with the sender's and the
// receiver's batch modes chosen apart.
func newPluginPairModes(tb testing.TB, key mesh.Key, sendBatch, recvBatch bool) *pluginPair {
	tb.Helper()
	b := startTestNode(tb, key, "node-b")
	a := startTestNode(tb, key, "node-a", b.addr)
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
	if err := b.n.sup.Start(benchSpec(tb, "recv", ctlPath, recvBatch)); err != nil {
		tb.Fatal(err)
	}
	if err := a.n.sup.Start(benchSpec(tb, "send", ctlPath, sendBatch)); err != nil {
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
	waitUntil(tb, "node b knows node a", func() bool {
		_, ok := b.n.mesh.Peer(a.n.id.ID)
		return ok
	})
	pp.send.sendf(tb, "target %s", string(b.n.id.ID))
	return pp
}
