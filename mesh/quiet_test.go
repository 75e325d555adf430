package mesh

import (
	"net/netip"
	"testing"
	"time"
)

// hintStranger hints a node that exists nowhere (its address refuses).
func hintStranger(t *testing.T, n *node) {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	n.AddHint(Hint{ID: id.ID, Name: "stranger", Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}})
}

// lowerPair returns configs for two nodes, a's id below b's: a dials b at
// once, without the wait the higher id of a pair makes (see dialLoop).
func lowerPair(t *testing.T) (a, b *Config) {
	t.Helper()
	a, b = testConfig(t, testKey), testConfig(t, testKey)
	for a.Identity.ID > b.Identity.ID {
		a = testConfig(t, testKey)
	}
	return a, b
}

// TestDialWaitsForQuiet: while new nodes keep being hinted in a burst (a
// LAN coming up), the first dial to a hinted node waits; once the hints
// stop for DialQuiet, it goes ahead.
func TestDialWaitsForQuiet(t *testing.T) {
	cfg, cfgB := lowerPair(t)
	cfg.DialQuiet, cfg.DialQuietMax = 2*time.Second, time.Minute
	a := startNode(t, cfg)
	b := startNode(t, cfgB)
	for range quietBurst {
		hintStranger(t, a)
	}
	a.hint(b)
	// New nodes every 100 ms for 1.5 s: never 2 s of quiet.
	for range 15 {
		time.Sleep(100 * time.Millisecond)
		hintStranger(t, a)
		if len(a.Peers()) != 0 || len(b.Peers()) != 0 {
			t.Fatal("a dialled b while new nodes were still being hinted")
		}
	}
	a.waitUp(b.ID())
	b.waitUp(a.ID())
}

// TestDialQuietMaxBounds: new nodes that never stop appearing hold a dial
// back DialQuietMax at most.
func TestDialQuietMaxBounds(t *testing.T) {
	cfg, cfgB := lowerPair(t)
	cfg.DialQuiet, cfg.DialQuietMax = time.Hour, 300*time.Millisecond
	a := startNode(t, cfg)
	b := startNode(t, cfgB)
	for range quietBurst {
		hintStranger(t, a)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				hintStranger(t, a)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	a.hint(b)
	a.waitUp(b.ID())
}

// TestStaticPeersDoNotWaitForQuiet: a configured peer is dialled at once,
// however long the quiet would be.
func TestStaticPeersDoNotWaitForQuiet(t *testing.T) {
	b := startNode(t, nil)
	cfg := testConfig(t, testKey)
	cfg.DialQuiet, cfg.DialQuietMax = time.Hour, time.Hour
	cfg.StaticPeers = []string{b.Addr().String()}
	a := startNode(t, cfg)
	hintStranger(t, a)
	a.waitUp(b.ID())
}

// TestFewNewNodesDialAtOnce: a node hinted with only a few others (a small
// LAN, one node joining) is dialled at once, however long the quiet.
func TestFewNewNodesDialAtOnce(t *testing.T) {
	cfg, cfgB := lowerPair(t)
	cfg.DialQuiet, cfg.DialQuietMax = time.Hour, time.Hour
	a := startNode(t, cfg)
	b := startNode(t, cfgB)
	for range quietBurst - 2 {
		hintStranger(t, a)
	}
	a.hint(b)
	a.waitUp(b.ID())
}
