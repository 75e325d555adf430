package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// TestBrowseAsksOnOneFamily: a node's browse asks over IPv4 only on a dual
// stack LAN (a query on both families makes every responder answer twice),
// while its answers still go out on both families, so IPv6-only browsers
// see it; and nodes still learn each other's IPv6 addresses. A third host
// listens to mDNS on both families and reports what it heard.
func TestBrowseAsksOnOneFamily(t *testing.T) {
	c := newCluster(t, 3)
	listener := c.nodes[2].host
	cmd := listener.Command(os.Args[0], "-test.run=^TestHelperMDNSListener$")
	cmd.Env = append(cmd.Env, "NEARBY_E2E_HELPER=mdns-listener")
	p, err := listener.StartCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the listener", func() error {
		if !strings.Contains(p.Stdout(), `"ready"`) {
			return errors.New("not listening yet")
		}
		return nil
	})
	a, b := c.nodes[0], c.nodes[1]
	var wg sync.WaitGroup
	wg.Go(func() { a.start("--no-tray") })
	wg.Go(func() { b.start("--no-tray") })
	wg.Wait()
	waitFor(t, 20*time.Second, "the two nodes see each other", func() error {
		for _, pair := range [][2]*node{{a, b}, {b, a}} {
			seen, err := discoveredBy(pair[0])
			if err != nil {
				return err
			}
			d, ok := seen[pair[1].host.Name]
			if !ok {
				return fmt.Errorf("%s has not seen %s", pair[0].host.Name, pair[1].host.Name)
			}
			if !strings.Contains(strings.Join(d.Addrs, " "), ":") {
				return fmt.Errorf("%s knows no IPv6 address of %s: %v", pair[0].host.Name, pair[1].host.Name, d.Addrs)
			}
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // a late packet of the first browse
	heard := map[string]int{}
	for l := range strings.Lines(p.Stdout()) {
		var ev struct{ Family, Kind string }
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Family != "" {
			heard[ev.Family+" "+ev.Kind]++
		}
	}
	t.Logf("heard: %v", heard)
	if heard["v4 browse"] < 2 {
		t.Errorf("%d browse queries over IPv4, want one per node at least", heard["v4 browse"])
	}
	if heard["v6 answer"] == 0 {
		t.Errorf("no answer over IPv6: IPv6-only browsers would not see the nodes")
	}
	if heard["v6 browse"] != 0 {
		t.Errorf("%d browse queries over IPv6: a dual-stack node should ask on IPv4 only", heard["v6 browse"])
	}
}

// TestHelperMDNSListener is not a test: started on a virtual host by
// TestBrowseAsksOnOneFamily, it listens to mDNS on lan0 over IPv4 and IPv6
// and prints a JSON line per packet about _nearby._tcp: its family, and
// whether it is a browse query or an answer.
func TestHelperMDNSListener(t *testing.T) {
	if os.Getenv("NEARBY_E2E_HELPER") != "mdns-listener" {
		t.Skip("helper process for TestBrowseAsksOnOneFamily")
	}
	ifi := helperLAN()
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(v)
	}
	const service = "_nearby._tcp.local."
	for _, g := range []struct {
		family, network string
		ip              net.IP
	}{{"v4", "udp4", net.IPv4(224, 0, 0, 251)}, {"v6", "udp6", net.ParseIP("ff02::fb")}} {
		conn, err := net.ListenMulticastUDP(g.network, ifi, &net.UDPAddr{IP: g.ip, Port: 5353})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		go func() {
			buf := make([]byte, 65536)
			for {
				n, _, err := conn.ReadFromUDP(buf)
				if err != nil {
					os.Exit(3)
				}
				var m dnsmessage.Message
				if m.Unpack(buf[:n]) != nil {
					continue
				}
				kind := ""
				if m.Header.Response {
					for _, rr := range m.Answers {
						if rr.Header.Name.String() == service {
							kind = "answer"
						}
					}
				} else {
					for _, q := range m.Questions {
						if q.Name.String() == service && q.Type == dnsmessage.TypePTR {
							kind = "browse"
						}
					}
				}
				if kind != "" {
					emit(map[string]string{"family": g.family, "kind": kind})
				}
			}
		}()
	}
	emit(map[string]string{"ready": "1"})
	time.Sleep(60 * time.Second)
	os.Exit(0)
}
