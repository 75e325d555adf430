package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netlab"
	"github.com/nearbymesh/nearby/internal/netsafe"
)

// BenchmarkDiscovery measures time-to-full-discovery on a virtual LAN: from
// launching N processes at once until every one has seen every other over
// mDNS. "nearby" runs `nearby up` (seen = the node's first sighting in
// /v1/discovered); the baseline "grandcat" runs grandcat/zeroconf alone
// (RegisterProxy + one Browse per process, the library's own best case).
// Both use the clock of this machine, so the figures are comparable.
//
//	make bench-discovery   (go test -run '^$' -bench Discovery -benchtime 5x ./internal/e2e/)
func BenchmarkDiscovery(b *testing.B) {
	for _, n := range []int{3, 10, 30} {
		for _, impl := range []string{"grandcat", "nearby", "nearby-mesh"} {
			b.Run(fmt.Sprintf("hosts=%d/%s", n, impl), func(b *testing.B) {
				var full, mdns []time.Duration
				incomplete := 0
				for b.Loop() {
					b.StopTimer()
					switch impl {
					case "nearby":
						known, viaMDNS := nearbyDiscoveryRun(b, n)
						full, mdns = append(full, known), append(mdns, viaMDNS)
					case "nearby-mesh":
						full = append(full, nearbyMeshRun(b, n))
					default:
						d, ok := grandcatDiscoveryRun(b, n)
						if ok {
							full = append(full, d)
						} else {
							incomplete++
						}
					}
					b.StartTimer()
				}
				report := func(ds []time.Duration, unit string) {
					if len(ds) == 0 {
						return
					}
					slices.Sort(ds)
					b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, unit+"-p50")
					b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, unit+"-max")
				}
				report(full, "full-ms")
				report(mdns, "mdns-ms")
				if impl == "grandcat" {
					// grandcat never re-queries: an answer lost in the start-up
					// burst leaves that pair undiscovered for good. full-ms
					// counts the complete runs only; all-ms counts an
					// incomplete one as its 20 s deadline, as nearby's runs
					// (which always complete) are counted.
					b.ReportMetric(float64(incomplete), "incomplete-runs")
					all := slices.Clone(full)
					for range incomplete {
						all = append(all, grandcatDeadline)
					}
					report(all, "all-ms")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkDiscoveryInterleaved is BenchmarkDiscovery at 30 hosts with the
// baseline and nearby taking turns (grandcat, nearby, grandcat, …), so that
// a change in the machine's load hits both alike: on shared vCPUs two sets
// run one after the other can differ by a third. grandcat's incomplete
// runs count as its 20 s deadline, as in all-ms.
//
//	scripts/isolated.sh go test -run '^$' -bench DiscoveryInterleaved -benchtime 8x ./internal/e2e/
func BenchmarkDiscoveryInterleaved(b *testing.B) {
	const n = 30
	var base, subject []time.Duration
	incomplete := 0
	for b.Loop() {
		b.StopTimer()
		d, ok := grandcatDiscoveryRun(b, n)
		if !ok {
			d = grandcatDeadline
			incomplete++
		}
		base = append(base, d)
		known, _ := nearbyDiscoveryRun(b, n)
		subject = append(subject, known)
		b.StartTimer()
	}
	gc, nb := median(base), median(subject)
	b.ReportMetric(float64(gc.Microseconds())/1000, "grandcat-all-ms-p50")
	b.ReportMetric(float64(incomplete), "grandcat-incomplete-runs")
	b.ReportMetric(float64(nb.Microseconds())/1000, "nearby-ms-p50")
	b.ReportMetric(nb.Seconds()/gc.Seconds(), "ratio")
	b.ReportMetric(0, "ns/op")
}

// median returns the middle of ds (the upper one of two), sorting ds.
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// nearbyMeshRun measures until every node lists every other as a connected
// peer (discovery plus peer exchange plus the TLS handshakes). The time is
// taken by polling every 20 ms, so it is an upper bound.
func nearbyMeshRun(b *testing.B, n int) time.Duration {
	c := newCluster(b, n)
	defer c.lan.Close()
	t0 := time.Now()
	c.startAll("--no-tray")
	deadline := time.Now().Add(60 * time.Second)
	for c.fullMesh(c.nodes) != nil {
		if time.Now().After(deadline) {
			b.Fatalf("no full mesh after 60s: %v", c.fullMesh(c.nodes))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(t0)
}

// nearbyDiscoveryRun returns how long after launch every node knew every
// other (over mDNS or from a peer), and how long until every node had seen
// every other over mDNS itself.
func nearbyDiscoveryRun(b *testing.B, n int) (known, viaMDNS time.Duration) {
	c := newCluster(b, n)
	defer c.lan.Close()
	t0 := time.Now()
	c.startAll("--no-tray")
	waitFor(b, 60*time.Second, "every node knows every other", c.allDiscovered)
	waitFor(b, 60*time.Second, "every node saw every other over mDNS", func() error {
		for _, nd := range c.nodes {
			seen, err := discoveredBy(nd)
			if err != nil {
				return err
			}
			for _, d := range seen {
				if d.Via != control.ViaMDNS {
					return fmt.Errorf("%s knows %s only from a peer", nd.host.Name, d.Name)
				}
			}
		}
		return nil
	})
	var lastKnown, lastMDNS time.Time
	for _, nd := range c.nodes {
		var ds []control.Discovered
		if err := nd.get("/v1/discovered", &ds); err != nil {
			b.Fatal(err)
		}
		for _, d := range ds {
			if d.FirstSeen.After(lastKnown) {
				lastKnown = d.FirstSeen
			}
			if d.FirstMDNS.After(lastMDNS) {
				lastMDNS = d.FirstMDNS
			}
		}
	}
	return lastKnown.Sub(t0), lastMDNS.Sub(t0)
}

func grandcatDiscoveryRun(b *testing.B, n int) (time.Duration, bool) {
	lan := netlab.New(b, n)
	defer lan.Close()
	type helper struct {
		proc  *netlab.Proc
		lines chan sighting
	}
	hs := make([]*helper, n)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, h := range lan.Hosts() {
		wg.Go(func() {
			cmd := h.Command(os.Args[0], "-test.run=^TestHelperGrandcat$")
			cmd.Env = append(cmd.Env, "NEARBY_E2E_HELPER=grandcat", fmt.Sprintf("NEARBY_E2E_PEERS=%d", n-1))
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Error(err)
				return
			}
			p, err := h.StartCommand(cmd)
			if err != nil {
				b.Error(err)
				return
			}
			hp := &helper{proc: p, lines: make(chan sighting, n)}
			hs[i] = hp
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					var s sighting
					if json.Unmarshal(sc.Bytes(), &s) == nil {
						hp.lines <- s
					}
				}
				close(hp.lines)
			}()
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	var last time.Time
	deadline := time.After(grandcatDeadline)
	for _, hp := range hs {
		seen := map[string]bool{}
		for len(seen) < n-1 {
			select {
			case s, ok := <-hp.lines:
				if !ok {
					b.Fatalf("grandcat helper exited early: %s", hp.proc.Stderr())
				}
				seen[s.Instance] = true
				if t := time.Unix(0, s.T); t.After(last) {
					last = t
				}
			case <-deadline:
				b.Logf("grandcat baseline: a process saw %d of %d others in %v", len(seen), n-1, grandcatDeadline)
				return 0, false
			}
		}
		hp.proc.Kill()
	}
	return last.Sub(t0), true
}

// grandcatDeadline is how long a grandcat baseline run may take before it
// counts as incomplete.
const grandcatDeadline = 20 * time.Second

type sighting struct {
	Instance string `json:"instance"`
	T        int64  `json:"t"`
}

// helperLAN is where a helper process on a virtual host starts: it checks
// that it is isolated and returns the host's LAN interface, or exits 2.
func helperLAN() *net.Interface {
	if err := netsafe.Check(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ifi, err := net.InterfaceByName("lan0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return ifi
}

// TestHelperGrandcat is not a test: it is the baseline process of
// BenchmarkDiscovery, started on a virtual host with
// NEARBY_E2E_HELPER=grandcat. It registers with plain grandcat/zeroconf and
// browses, printing each instance it sees first as a JSON line.
func TestHelperGrandcat(t *testing.T) {
	if os.Getenv("NEARBY_E2E_HELPER") != "grandcat" {
		t.Skip("helper process for BenchmarkDiscovery")
	}
	ifi := helperLAN()
	host, _ := os.Hostname()
	var ips []string
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
			ips = append(ips, ipn.IP.String())
		}
	}
	ifs := []net.Interface{*ifi}
	srv, err := zeroconf.RegisterProxy(host, "_gcbase._tcp", "local.", 1, host, ips, []string{"v=1"}, ifs)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer srv.Shutdown()
	r, err := zeroconf.NewResolver(zeroconf.SelectIfaces(ifs))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry, 64)
	if err := r.Browse(ctx, "_gcbase._tcp", "local.", entries); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	seen := map[string]bool{}
	enc := json.NewEncoder(os.Stdout)
	for e := range entries {
		if e.Instance == host || seen[e.Instance] || strings.Contains(e.Instance, ".") {
			continue
		}
		seen[e.Instance] = true
		enc.Encode(sighting{Instance: e.Instance, T: time.Now().UnixNano()})
	}
	_ = exec.ErrNotFound
}
