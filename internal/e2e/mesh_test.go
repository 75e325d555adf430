package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/mesh"
)

// goneFrom waits until no node in nodes lists name as a peer, and returns
// how long that took from start.
func goneFrom(t *testing.T, nodes []*node, name string, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	waitFor(t, limit+5*time.Second, name+" gone from every peer table", func() error {
		for _, nd := range nodes {
			ps, err := nd.peers()
			if err != nil {
				return err
			}
			if peerNames(ps)[name] {
				return fmt.Errorf("%s still lists %s", nd.host.Name, name)
			}
		}
		return nil
	})
	took := time.Since(start)
	if took > limit {
		t.Errorf("%s gone after %v, want within %v", name, took, limit)
	}
	return took
}

// backIn waits until nodes form a full mesh again and returns how long
// that took from start.
func backIn(t *testing.T, c *cluster, nodes []*node, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	waitFor(t, limit+10*time.Second, "full mesh again", func() error { return c.fullMesh(nodes) })
	took := time.Since(start)
	if took > limit {
		t.Errorf("back after %v, want within %v", took, limit)
	}
	return took
}

// TestMeshFiveHosts: five hosts form a full mesh; a broadcast from one
// reaches the chat plugin on each other node exactly once; a sixth host
// with another mesh key never shows up anywhere and exchanges no data.
func TestMeshFiveHosts(t *testing.T) {
	c := newCluster(t, 5)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh of 5", func() error { return c.fullMesh(c.nodes) })
	for _, nd := range c.nodes {
		var ps []control.Peer
		if err := nd.cliJSON(&ps, "peers"); err != nil {
			t.Fatal(err)
		}
		if len(ps) != 4 {
			t.Fatalf("%s: nearby peers --json lists %d peers", nd.host.Name, len(ps))
		}
	}

	// A node of another mesh on the same LAN.
	other := c.addNode()
	k, _ := mesh.NewKey()
	other.key = k.String()
	other.start()

	// Plugins to count deliveries: the Go chat on h2..h5.
	drop(t, packExample(t, "chat-go", publisherKey(t), t.TempDir()), c.nodes[1].dist)
	for _, nd := range c.nodes[1:5] {
		waitFor(t, 5*time.Second, "chat-go listed", func() error { _, err := lsEntry(nd, "chat-go"); return err })
		runPlugin(t, nd, "chat-go")
		waitRunning(t, nd, "chat-go")
	}
	for i := range 3 {
		if _, _, err := c.nodes[0].cli(10*time.Second, "broadcast", "chat", fmt.Sprintf(`{"text":"mesh-broadcast-%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range c.nodes[1:5] {
		waitFor(t, 10*time.Second, "broadcasts on "+nd.host.Name, func() error {
			log := pluginLog(t, nd, "chat-go")
			for i := range 3 {
				if n := strings.Count(log, fmt.Sprintf("mesh-broadcast-%d", i)); n != 1 {
					return fmt.Errorf("mesh-broadcast-%d seen %d times", i, n)
				}
			}
			return nil
		})
	}

	// Give the stranger time to be heard over mDNS (its browses ran).
	time.Sleep(3 * time.Second)
	for _, nd := range c.nodes {
		ps, _ := nd.peers()
		seen, _ := discoveredBy(nd)
		if peerNames(ps)[other.host.Name] {
			t.Errorf("%s lists the other mesh's node as a peer", nd.host.Name)
		}
		if _, ok := seen[other.host.Name]; ok {
			t.Errorf("%s even lists the other mesh's node as discovered", nd.host.Name)
		}
	}
	if ps, _ := other.peers(); len(ps) != 0 {
		t.Errorf("the other mesh's node has peers: %+v", ps)
	}
	var st control.Status
	if err := other.get("/v1/status", &st); err != nil || st.Peers != 0 {
		t.Errorf("other mesh node status %+v %v", st, err)
	}
}

// TestMeshPeerLoss: kill -9 of a node: gone from every peer table within
// 5 s, back within 3 s of its restart; a cut link: gone within 15 s, back
// within 3 s of healing.
func TestMeshPeerLoss(t *testing.T) {
	c := newCluster(t, 4)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	rest := c.nodes[:3]
	victim := c.nodes[3]

	victim.proc.Kill()
	killed := time.Now()
	t.Logf("kill -9: gone from every peer table after %v", goneFrom(t, rest, victim.host.Name, killed, 5*time.Second))
	<-victim.proc.Exited()
	restarted := time.Now()
	victim.start(victim.args...)
	t.Logf("restart: back in every peer table after %v", backIn(t, c, c.nodes, restarted, 3*time.Second))

	if err := victim.host.Cut(); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	t.Logf("cut: gone after %v", goneFrom(t, rest, victim.host.Name, cut, 15*time.Second))
	time.Sleep(2 * time.Second) // let dial attempts back off a little
	if err := victim.host.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	t.Logf("heal: back after %v", backIn(t, c, c.nodes, healed, 3*time.Second))
}

// TestMeshCleanStop: SIGTERM says bye: the node is gone from every peer
// table at once (well within a keepalive) and its mDNS record is withdrawn.
func TestMeshCleanStop(t *testing.T) {
	c := newCluster(t, 3)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	stopped := time.Now()
	c.nodes[2].stop()
	t.Logf("SIGTERM: gone after %v", goneFrom(t, c.nodes[:2], "h3", stopped, 2*time.Second))
	if err := c.nodes[2].proc.Wait(); err != nil {
		t.Errorf("nearby up exited with %v after SIGTERM, want 0", err)
	}
	waitFor(t, 10*time.Second, "h3's record withdrawn", func() error {
		var got []struct {
			Name string `json:"name"`
		}
		if err := c.nodes[0].cliJSON(&got, "discover", "--timeout", "1s"); err != nil {
			return err
		}
		for _, g := range got {
			if g.Name == "h3" {
				return fmt.Errorf("h3 still answers")
			}
		}
		return nil
	})
}
