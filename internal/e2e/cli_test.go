package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStaticPeers: with mDNS off, --peer joins nodes (as across subnets).
func TestStaticPeers(t *testing.T) {
	c := newCluster(t, 3)
	c.dumpOnFailure()
	h1 := c.nodes[0]
	h1.start("--no-discovery")
	peer := "--peer=" + h1.host.IPv4.String() + ":7946"
	c.nodes[1].start("--no-discovery", peer)
	c.nodes[2].start("--no-discovery", peer)
	// h2 and h3 know only h1; peer exchange needs mDNS sightings, so they
	// stay a star: that is the documented behaviour of static peers.
	waitFor(t, 10*time.Second, "h2 and h3 connect to h1", func() error {
		ps, err := h1.peers()
		if err != nil {
			return err
		}
		if n := peerNames(ps); !n["h2"] || !n["h3"] {
			return fmt.Errorf("h1 peers: %v", n)
		}
		return nil
	})
	var seen []any
	if err := h1.get("/v1/discovered", &seen); err != nil || len(seen) != 0 {
		t.Errorf("mDNS is off but h1 discovered %v (%v)", seen, err)
	}
}

// TestDistHTTP: --dist-http serves the dist folder read-only to plain HTTP
// clients (browsers, curl) on the LAN.
func TestDistHTTP(t *testing.T) {
	c := newCluster(t, 2)
	c.dumpOnFailure()
	h1, h2 := c.nodes[0], c.nodes[1]
	packPlugin(t, h1.dist, "chat", "1.0.0", publisherKey(t))
	h1.start("--dist-http", ":8080")
	h2.start()
	url := fmt.Sprintf("http://%s:8080/", h1.host.IPv4)
	// A curl-like client in h2's namespace (the test process is not in
	// it): this test binary's TestHelperHTTPGet.
	get := func(u string) ([]byte, error) {
		cmd := h2.host.CommandContext(context.Background(), os.Args[0], "-test.run=^TestHelperHTTPGet$")
		cmd.Env = append(cmd.Env, "NEARBY_E2E_HELPER=httpget", "NEARBY_E2E_URL="+u)
		o, _, err := h2.host.RunCommand(cmd)
		return o, err
	}
	var body string
	waitFor(t, 5*time.Second, "index over plain HTTP from h2", func() error {
		o, err := get(url + "index.json")
		body = string(o)
		if err == nil && !strings.Contains(body, `"chat"`) {
			err = fmt.Errorf("index lacks chat: %s", body)
		}
		return err
	})
	var idx struct {
		Entries []struct{ Name, Version, File string } `json:"entries"`
	}
	if err := json.Unmarshal([]byte(body), &idx); err != nil || len(idx.Entries) != 1 || idx.Entries[0].File != "chat-1.0.0.tar.gz" {
		t.Fatalf("index %s: %v", body, err)
	}
	o, err := get(url + "files/chat-1.0.0.tar.gz")
	if err != nil || len(o) < 100 || o[0] != 0x1f || o[1] != 0x8b {
		t.Fatalf("archive over plain HTTP: %d bytes, %v", len(o), err)
	}
	for _, bad := range []string{"files/../node.key", "files/%2e%2e%2fnode.key", "node.key", "files/chat-1.0.0.tar.gz.tmp"} {
		if o, err := get(url + bad); err == nil {
			t.Errorf("GET %s succeeded: %q", bad, o)
		}
	}
}

// TestHelperHTTPGet is not a test: it is a tiny HTTP client run inside a
// virtual host (NEARBY_E2E_HELPER=httpget), printing the body of
// NEARBY_E2E_URL and exiting 1 on any non-200 answer.
func TestHelperHTTPGet(t *testing.T) {
	if os.Getenv("NEARBY_E2E_HELPER") != "httpget" {
		t.Skip("helper process for TestDistHTTP")
	}
	resp, err := http.Get(os.Getenv("NEARBY_E2E_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, resp.Status)
		os.Exit(1)
	}
	io.Copy(os.Stdout, resp.Body)
	os.Exit(0)
}

// TestDoctor: on a healthy virtual host every network check passes; the
// tray check warns (no session bus) and the verdict is still success.
func TestDoctor(t *testing.T) {
	c := newCluster(t, 2)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 10*time.Second, "mesh", func() error { return c.fullMesh(c.nodes) })
	var checks []struct{ Name, Status, Detail, Fix string }
	if err := c.nodes[0].cliJSON(&checks, "doctor"); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ch := range checks {
		got[ch.Name] = ch.Status
	}
	for _, name := range []string{"multicast interface", "multicast route", "node", "clock skew"} {
		if got[name] != "ok" {
			t.Errorf("doctor %q = %q, want ok (%+v)", name, got[name], checks)
		}
	}
	if got["tray (session bus)"] != "warn" {
		t.Errorf("no session bus here, want a warning: %+v", checks)
	}
}
