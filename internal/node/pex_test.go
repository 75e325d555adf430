package node

import (
	"fmt"
	"testing"

	"github.com/nearbymesh/nearby/mesh"
)

// TestStaticChainBecomesFullMesh: without mDNS, nodes that each know one
// other node (a chain of static peers, as across subnets) end as a full
// mesh through the peer exchange: each node passes on the nodes it learns
// of from a peer it has not seen over mDNS.
func TestStaticChainBecomesFullMesh(t *testing.T) {
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	nodes := make([]*testNode, n)
	nodes[0] = startTestNode(t, key, "n0")
	for i := 1; i < n; i++ {
		nodes[i] = startTestNode(t, key, fmt.Sprintf("n%d", i), nodes[i-1].addr)
	}
	// The peer exchange of the last sessions may still be on its way when
	// the mesh is full: wait for both.
	waitUntil(t, "a full mesh of 5 from a chain of static peers, each knowing the others", func() bool {
		for _, nd := range nodes {
			if len(nd.n.mesh.Peers()) != n-1 || len(nd.n.discovered()) < n-2 {
				return false
			}
		}
		return true
	})
	// Each knows every other, with how far the news came.
	for i, nd := range nodes {
		known := nd.n.discovered()
		if len(known) < n-2 { // its own static peer may be known only as a peer
			t.Errorf("n%d knows %d nodes, want at least %d: %+v", i, len(known), n-2, known)
		}
		for _, d := range known {
			if d.Hops < 1 || d.Hops > maxPexHops {
				t.Errorf("n%d: %s learned with hops %d", i, d.Name, d.Hops)
			}
		}
	}
}
