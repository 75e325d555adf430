package node

import (
	"fmt"
	"testing"

	"github.com/nearbymesh/nearby/internal/netsafe"
	"github.com/nearbymesh/nearby/mesh"
)

// TestPluginToPluginMixedBatch is TestPluginToPluginAcrossNodes with the
// sender's and the receiver's SDK in different batch modes: a sender with
// batches whose receiver did not ask for them (node b splits each batch
// into message frames), and a sender without batches whose receiver asked
// for them; and a sender with batches whose node b predates batch payloads
// (it announces no featureBatch, so node a splits each batch into one mesh
// message per value). A few thousand messages arrive all, once each and in
// order; the mesh carries batches exactly when the sender uses them and
// node b takes them. The same for binary messages (SendBytes) to a
// receiver without them and through a node b without bin payloads.
func TestPluginToPluginMixedBatch(t *testing.T) {
	if err := netsafe.Check(); err != nil {
		t.Skip(err)
	}
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		send, recv     string
		legacy, noBinB bool
	}{
		{"on", "off", false, false}, {"off", "on", false, false}, {"on", "on", true, false},
		// Binary messages: to a receiver without them (node b turns them
		// into JSON), through a node b without bin payloads (node a
		// turns them into a batch, and they arrive as JSON), and through
		// one without batch payloads either (one mesh message each).
		{"bin", "on", false, false}, {"bin", "bin", false, true}, {"bin", "bin", true, true},
	} {
		name := fmt.Sprintf("send=%s/recv=%s", tt.send, tt.recv)
		if tt.legacy {
			name += "/node-b-without-batch-payloads"
		}
		if tt.noBinB {
			name += "/node-b-without-bin-payloads"
		}
		t.Run(name, func(t *testing.T) {
			pp := newPluginPairModes(t, key, pairModes{send: tt.send, recv: tt.recv, legacyB: tt.legacy, noBinB: tt.noBinB})
			var meshMsgs uint64
			// The last round of one message would see any stray
			// duplicate of the rounds before it ("error a message
			// outside a round").
			for _, r := range []struct{ n, window int }{{3000, 256}, {2000, benchWindow}, {1, 1}} {
				_, k := pp.run(t, r.n, r.window)
				meshMsgs += k
			}
			switch {
			case tt.legacy && meshMsgs != 5001:
				t.Errorf("5001 messages to a node without batch payloads took %d mesh messages, want one each", meshMsgs)
			case tt.send == "off" && meshMsgs != 5001:
				t.Errorf("5001 messages without batches took %d mesh messages", meshMsgs)
			case tt.send != "off" && !tt.legacy && meshMsgs >= 5001:
				t.Errorf("5001 messages took %d mesh messages: sends that piled up did not travel as batches", meshMsgs)
			}
			if want := map[bool]int{false: 0, true: 5001}[tt.recv == "bin" && !tt.noBinB]; pp.binary != want {
				t.Errorf("%d messages arrived in Message.Bytes, want %d", pp.binary, want)
			}
			t.Logf("5001 messages in %d mesh messages", meshMsgs)
		})
	}
}
