package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// discoveredBy returns the names a node has seen over mDNS.
func discoveredBy(nd *node) (map[string]control.Discovered, error) {
	var ds []control.Discovered
	if err := nd.get("/v1/discovered", &ds); err != nil {
		return nil, err
	}
	m := map[string]control.Discovered{}
	for _, d := range ds {
		m[d.Name] = d
	}
	return m, nil
}

// allDiscovered returns nil when every node has seen every other over mDNS.
func (c *cluster) allDiscovered() error {
	for _, nd := range c.nodes {
		seen, err := discoveredBy(nd)
		if err != nil {
			return err
		}
		for _, other := range c.nodes {
			if other == nd {
				continue
			}
			if _, ok := seen[other.host.Name]; !ok {
				return fmt.Errorf("%s has not seen %s (%d seen)", nd.host.Name, other.host.Name, len(seen))
			}
		}
	}
	return nil
}

// TestDiscoverThreeHosts: three hosts running `nearby up` see each other
// with `nearby discover --json`, with addresses, port and subservices.
func TestDiscoverThreeHosts(t *testing.T) {
	c := newCluster(t, 3)
	c.dumpOnFailure()
	packPlugin(t, c.nodes[0].dist, "chat", "1.2.0", nil)
	c.startAll()
	for _, nd := range c.nodes {
		var got []struct {
			Name        string            `json:"name"`
			ID          string            `json:"id"`
			Addrs       []string          `json:"addrs"`
			Port        int               `json:"port"`
			Subservices map[string]string `json:"subservices"`
		}
		waitFor(t, 10*time.Second, nd.host.Name+" discovers all", func() error {
			if err := nd.cliJSON(&got, "discover", "--timeout", "1s"); err != nil {
				return err
			}
			if len(got) < 3 {
				return fmt.Errorf("%s saw %d nodes: %+v", nd.host.Name, len(got), got)
			}
			return nil
		})
		byName := map[string]int{}
		for i, g := range got {
			byName[g.Name] = i
		}
		for _, other := range c.nodes {
			i, ok := byName[other.host.Name]
			if !ok {
				t.Fatalf("%s: discover did not list %s: %+v", nd.host.Name, other.host.Name, got)
			}
			g := got[i]
			if g.Port != 7946 || len(g.ID) != 32 {
				t.Errorf("%s sees %s with port %d id %q", nd.host.Name, g.Name, g.Port, g.ID)
			}
			if !strings.Contains(strings.Join(g.Addrs, " "), other.host.IPv4.String()) {
				t.Errorf("%s sees %s at %v, want %s among them", nd.host.Name, g.Name, g.Addrs, other.host.IPv4)
			}
		}
		if v := got[byName["h1"]].Subservices["chat"]; v != "1.2.0" {
			t.Errorf("%s sees h1 offering chat %q, want 1.2.0", nd.host.Name, v)
		}
	}
	// The nodes' own continuous discovery sees everyone too.
	waitFor(t, 5*time.Second, "every node discovers every other", c.allDiscovered)
}

// TestDiscoverManySubservices: a node with 150 subservices in its dist
// folder is still discoverable; the TXT record says how many did not fit.
func TestDiscoverManySubservices(t *testing.T) {
	c := newCluster(t, 2)
	c.dumpOnFailure()
	for i := range 150 {
		packPlugin(t, c.nodes[0].dist, fmt.Sprintf("plugin-number-%c%c", 'a'+i/26, 'a'+i%26), "1.0.0", nil)
	}
	c.startAll()
	waitFor(t, 10*time.Second, "h2 discovers h1", func() error {
		seen, err := discoveredBy(c.nodes[1])
		if err != nil {
			return err
		}
		d, ok := seen["h1"]
		if !ok {
			return fmt.Errorf("not seen yet")
		}
		if d.Subservices+d.More != 150 || d.More == 0 {
			return fmt.Errorf("h1 advertises %d subservices + %d more, want 150 in all with some left out", d.Subservices, d.More)
		}
		return nil
	})
	// The rest is reachable through the mesh catalog.
	waitFor(t, 10*time.Second, "h2 lists all 150 through the mesh", func() error {
		var l control.Listing
		if err := c.nodes[1].get("/v1/ls", &l); err != nil {
			return err
		}
		if len(l.Subservices) != 150 {
			return fmt.Errorf("h2 lists %d subservices", len(l.Subservices))
		}
		return nil
	})
}

// TestDiscoverThirtyHosts: 30 hosts all see all others. The pairwise
// discovery latency is logged (docs/PERFORMANCE.md has the benchmark).
func TestDiscoverThirtyHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("30 hosts: skipped in -short")
	}
	c := newCluster(t, 30)
	c.dumpOnFailure()
	c.startAll("--no-tray")
	waitFor(t, 30*time.Second, "30 hosts discover each other", c.allDiscovered)
	lat := c.discoveryLatencies(t)
	t.Logf("30 hosts: pairwise discovery latency p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	waitFor(t, 30*time.Second, "30 hosts form a full mesh", func() error { return c.fullMesh(c.nodes) })
}

// discoveryLatencies returns, sorted, for every ordered pair (i, j) how long
// after j's node was up i first saw j over mDNS.
func (c *cluster) discoveryLatencies(t testing.TB) []time.Duration {
	started := map[string]time.Time{}
	for _, nd := range c.nodes {
		started[nd.host.Name] = nd.status().Started
	}
	var lat []time.Duration
	for _, nd := range c.nodes {
		seen, err := discoveredBy(nd)
		if err != nil {
			t.Fatal(err)
		}
		for name, d := range seen {
			// Seen before the node itself says it was up: discovery
			// raced its own start log, count as zero.
			lat = append(lat, max(0, d.FirstSeen.Sub(started[name])))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

// TestDiscoverCutHeal: a host whose link is cut drops out of its peers'
// tables; once healed it is found again without restarting anything.
func TestDiscoverCutHeal(t *testing.T) {
	c := newCluster(t, 3)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 10*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	pid := c.nodes[2].proc.PID()
	if err := c.nodes[2].host.Cut(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "h3 gone from h1 and h2", func() error {
		for _, nd := range c.nodes[:2] {
			ps, err := nd.peers()
			if err != nil {
				return err
			}
			if peerNames(ps)["h3"] {
				return fmt.Errorf("%s still lists h3", nd.host.Name)
			}
		}
		return nil
	})
	if err := c.nodes[2].host.Heal(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "h3 back in the mesh", func() error { return c.fullMesh(c.nodes) })
	if c.nodes[2].proc.PID() != pid {
		t.Fatal("h3 was restarted")
	}
	select {
	case <-c.nodes[2].proc.Exited():
		t.Fatal("h3's node exited")
	default:
	}
}

// TestAvahiBrowse: a standard DNS-SD browser (avahi-browse, with a private
// avahi-daemon in a host namespace) lists a node with the right TXT.
func TestAvahiBrowse(t *testing.T) {
	for _, tool := range []string{"avahi-daemon", "avahi-browse", "dbus-daemon"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI must install avahi-daemon avahi-utils dbus)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	c := newCluster(t, 2)
	c.dumpOnFailure()
	packPlugin(t, c.nodes[0].dist, "chat", "1.2.0", nil)
	c.nodes[0].start()
	id := c.nodes[0].id()
	out := avahiBrowse(t, c.nodes[1].host, "_nearby._tcp", func(out string) bool {
		return strings.Contains(out, "id="+id) && strings.Contains(out, "s=chat@1.2.0")
	})
	// avahi-browse -p: "=;lan0;IPv4;NAME;_nearby._tcp;local;HOST;ADDR;PORT;TXT..."
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "=") && strings.Contains(l, "IPv4") && strings.Contains(l, "id="+id) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no resolved IPv4 entry for h1 in:\n%s", out)
	}
	f := strings.Split(line, ";")
	if len(f) < 10 || f[7] != c.nodes[0].host.IPv4.String() || f[8] != "7946" {
		t.Errorf("avahi resolved h1 as %q, want address %s port 7946", line, c.nodes[0].host.IPv4)
	}
	for _, want := range []string{"\"v=1\"", "\"n=h1\"", "\"m=", "\"d="} {
		if !strings.Contains(f[9], want) {
			t.Errorf("TXT %s lacks %s", f[9], want)
		}
	}
	if !strings.HasPrefix(f[3], "h1-") || strings.Contains(f[3], ".") {
		t.Errorf("instance name %q: want h1-<id8> without dots", f[3])
	}
	_ = filepath.Join
}
