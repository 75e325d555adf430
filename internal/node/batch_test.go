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
// node b takes them.
func TestPluginToPluginMixedBatch(t *testing.T) {
	if err := netsafe.Check(); err != nil {
		t.Skip(err)
	}
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ send, recv, legacy bool }{{true, false, false}, {false, true, false}, {true, true, true}} {
		name := fmt.Sprintf("send=%s/recv=%s", batchMode(tt.send), batchMode(tt.recv))
		if tt.legacy {
			name += "/node-b-without-batch-payloads"
		}
		t.Run(name, func(t *testing.T) {
			pp := newPluginPairModes(t, key, pairModes{sendBatch: tt.send, recvBatch: tt.recv, legacyB: tt.legacy})
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
			case !tt.send && meshMsgs != 5001:
				t.Errorf("5001 messages without batches took %d mesh messages", meshMsgs)
			case tt.send && !tt.legacy && meshMsgs >= 5001:
				t.Errorf("5001 messages took %d mesh messages: sends that piled up did not travel as batches", meshMsgs)
			}
			t.Logf("5001 messages in %d mesh messages", meshMsgs)
		})
	}
}
