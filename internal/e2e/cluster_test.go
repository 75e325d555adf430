package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netlab"
	"github.com/nearbymesh/nearby/mesh"
)

// cluster is a virtual LAN whose hosts run `nearby up`.
type cluster struct {
	t     testing.TB
	lan   *netlab.LAN
	bin   string
	key   string
	nodes []*node
}

// node is one host of a cluster and the node process running on it.
type node struct {
	c     *cluster
	host  *netlab.Host
	state string
	dist  string
	proc  *netlab.Proc
	args  []string
	key   string

	clMu sync.Mutex
	cl   *control.Client // the node's control client, reused (client)
}

// newCluster makes a LAN of n hosts (nodes are not started).
func newCluster(t testing.TB, n int, opts ...netlab.Option) *cluster {
	t.Helper()
	lan := netlab.New(t, n, opts...)
	k, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, lan: lan, bin: netlab.BuildNearby(t), key: k.String()}
	base := t.TempDir()
	for _, h := range lan.Hosts() {
		c.nodes = append(c.nodes, c.newNode(h, base))
	}
	return c
}

func (c *cluster) newNode(h *netlab.Host, base string) *node {
	nd := &node{c: c, host: h, state: filepath.Join(base, h.Name), key: c.key}
	nd.dist = filepath.Join(nd.state, "dist")
	if err := os.MkdirAll(nd.dist, 0o700); err != nil {
		c.t.Fatal(err)
	}
	return nd
}

// addNode grows the LAN by one host.
func (c *cluster) addNode() *node {
	h, err := c.lan.AddHost()
	if err != nil {
		c.t.Fatal(err)
	}
	nd := c.newNode(h, c.t.TempDir())
	c.nodes = append(c.nodes, nd)
	return nd
}

// startAll starts every node, in parallel.
func (c *cluster) startAll(args ...string) {
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		wg.Go(func() { nd.start(args...) })
	}
	wg.Wait()
}

// start runs `nearby up` on the node's host and waits for its control socket.
func (nd *node) start(args ...string) {
	t := nd.c.t
	nd.args = args
	argv := append([]string{"up", "--state", nd.state, "--name", nd.host.Name, "--listen", ":7946", "--log-level", "debug"}, args...)
	cmd := nd.host.Command(nd.c.bin, argv...)
	cmd.Env = append(cmd.Env, "NEARBY_MESH_KEY="+nd.key, "NEARBY_CONFIG=/nonexistent")
	p, err := nd.host.StartCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	nd.proc = p
	nd.dropClient() // its idle connections went to the previous process
	waitFor(t, 10*time.Second, nd.host.Name+" control socket", func() error {
		select {
		case <-p.Exited():
			t.Fatalf("%s: nearby up exited: %v\n%s", nd.host.Name, p.Wait(), tailStr(p.Stderr(), 3000))
		default:
		}
		var st control.Status
		return nd.get("/v1/status", &st)
	})
}

// stop stops the node with SIGTERM.
func (nd *node) stop() {
	if nd.proc != nil {
		nd.proc.Stop(5 * time.Second)
	}
}

// client returns the node's control API client (the socket is a file: it
// does not need the host's network namespace). It is one client per node,
// reused: a fresh client per request would leave its keep-alive connection
// idle on the node, a goroutine and a file descriptor there, which the
// scale and soak tests measure.
func (nd *node) client() *control.Client {
	nd.clMu.Lock()
	defer nd.clMu.Unlock()
	if nd.cl == nil {
		nd.cl = control.NewClient(nd.state)
	}
	return nd.cl
}

// dropClient closes the node's client's idle connections and forgets it.
func (nd *node) dropClient() {
	nd.clMu.Lock()
	defer nd.clMu.Unlock()
	if nd.cl != nil {
		nd.cl.Close()
		nd.cl = nil
	}
}

func (nd *node) get(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return nd.client().Get(ctx, path, v)
}

func (nd *node) status() control.Status {
	var st control.Status
	if err := nd.get("/v1/status", &st); err != nil {
		nd.c.t.Fatalf("%s: status: %v", nd.host.Name, err)
	}
	return st
}

func (nd *node) peers() ([]control.Peer, error) {
	var ps []control.Peer
	err := nd.get("/v1/peers", &ps)
	return ps, err
}

// cli runs the nearby CLI on the node's host, against its state dir.
func (nd *node) cli(timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append([]string{args[0], "--state", nd.state}, args[1:]...)
	cmd := nd.host.CommandContext(ctx, nd.c.bin, argv...)
	cmd.Env = append(cmd.Env, "NEARBY_MESH_KEY="+nd.key, "NEARBY_CONFIG=/nonexistent")
	o, e, err := nd.host.RunCommand(cmd)
	return string(o), string(e), err
}

// cliJSON runs a CLI command with --json and decodes its stdout into v.
func (nd *node) cliJSON(v any, args ...string) error {
	o, e, err := nd.cli(30*time.Second, append(args, "--json")...)
	if err != nil {
		return fmt.Errorf("%s: nearby %s: %v\nstderr: %s", nd.host.Name, strings.Join(args, " "), err, tailStr(e, 2000))
	}
	if err := json.Unmarshal([]byte(o), v); err != nil {
		return fmt.Errorf("%s: nearby %s: bad JSON: %v\n%s", nd.host.Name, strings.Join(args, " "), err, tailStr(o, 2000))
	}
	return nil
}

// id returns the node's id.
func (nd *node) id() string { return nd.status().Node.ID }

// dumpOnFailure prints every node's log tail when the test failed.
func (c *cluster) dumpOnFailure() {
	c.t.Cleanup(func() {
		if !c.t.Failed() {
			return
		}
		for _, nd := range c.nodes {
			if nd.proc != nil {
				c.t.Logf("---- %s stderr (tail) ----\n%s", nd.host.Name, tailStr(nd.proc.Stderr(), 4000))
			}
		}
	})
}

// waitFor polls f until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 20 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 250*time.Millisecond)
	}
}

func tailStr(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// peerNames returns the names of a node's peers.
func peerNames(ps []control.Peer) map[string]bool {
	m := map[string]bool{}
	for _, p := range ps {
		m[p.Name] = true
	}
	return m
}

// fullMesh returns nil when every running node lists every other as a peer.
func (c *cluster) fullMesh(nodes []*node) error {
	for _, nd := range nodes {
		ps, err := nd.peers()
		if err != nil {
			return err
		}
		names := peerNames(ps)
		for _, other := range nodes {
			if other != nd && !names[other.host.Name] {
				return fmt.Errorf("%s does not list %s (has %d peers)", nd.host.Name, other.host.Name, len(ps))
			}
		}
	}
	return nil
}

// decodeNDJSON decodes newline-delimited JSON.
func decodeNDJSON[T any](s string, out *[]T) error {
	dec := json.NewDecoder(strings.NewReader(s))
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("bad NDJSON: %v\n%s", err, tailStr(s, 2000))
		}
		*out = append(*out, v)
	}
	return nil
}
