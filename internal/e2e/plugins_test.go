package e2e

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netlab"
)

// repoRoot is the module root (this file is internal/e2e/plugins_test.go).
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// packExample packs examples/NAME (building chat-go first) into outDir,
// signed with key, and returns the archive path.
func packExample(t testing.TB, name string, key ed25519.PrivateKey, outDir string) string {
	t.Helper()
	src := filepath.Join(repoRoot(t), "examples", name)
	dir := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	if name == "chat-go" {
		bin := netlab.Binary(t, "github.com/nearbymesh/nearby/examples/chat-go")
		os.Remove(filepath.Join(dir, "chat-go"))
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "chat-go"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, err := distrib.Pack(dir, outDir, key)
	if err != nil {
		t.Fatalf("pack %s: %v", name, err)
	}
	return p
}

func requirePython(t testing.TB) {
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 missing")
		}
		t.Skip("python3 missing")
	}
}

// runPlugin runs `nearby run NAME` on a node and checks the result.
func runPlugin(t testing.TB, nd *node, name string) control.Result {
	t.Helper()
	var events []control.Event
	if err := decodeLines(nd, &events, "run", name); err != nil {
		t.Fatal(err)
	}
	return lastResult(t, events)
}

// plugin returns a node's status of one plugin.
func pluginStatus(nd *node, name string) (control.Plugin, error) {
	var ps []control.Plugin
	if err := nd.get("/v1/ps", &ps); err != nil {
		return control.Plugin{}, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return control.Plugin{}, fmt.Errorf("%s does not supervise %s", nd.host.Name, name)
}

func waitRunning(t testing.TB, nd *node, name string) control.Plugin {
	t.Helper()
	var p control.Plugin
	waitFor(t, 15*time.Second, name+" running on "+nd.host.Name, func() error {
		var err error
		p, err = pluginStatus(nd, name)
		if err == nil && p.State != "running" {
			err = fmt.Errorf("state %s (%s)", p.State, p.LastExit)
		}
		return err
	})
	return p
}

// pluginLog returns a plugin's captured output on a node.
func pluginLog(t testing.TB, nd *node, name string) string {
	o, _, err := nd.cli(10*time.Second, "logs", name)
	if err != nil {
		t.Fatalf("logs %s on %s: %v", name, nd.host.Name, err)
	}
	return o
}

// TestChatAcrossHosts: the Python chat on h1 broadcasts; the Go chat on h2
// and h3 (published on h2, fetched by h3) receives each broadcast exactly
// once and replies; the replies reach h1.
func TestChatAcrossHosts(t *testing.T) {
	requirePython(t)
	c := newCluster(t, 3)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	h1, h2, h3 := c.nodes[0], c.nodes[1], c.nodes[2]
	key := publisherKey(t)
	staging := t.TempDir()
	drop(t, packExample(t, "chat-py", key, staging), h1.dist)
	drop(t, packExample(t, "chat-go", key, staging), h2.dist)
	waitFor(t, 5*time.Second, "h3 lists both chats", func() error {
		for _, n := range []string{"chat-py", "chat-go"} {
			if _, err := lsEntry(h3, n); err != nil {
				return err
			}
		}
		return nil
	})

	if r := runPlugin(t, h2, "chat-go"); r.Version != "1.0.0" {
		t.Fatalf("h2 run chat-go: %+v", r)
	}
	if r := runPlugin(t, h3, "chat-go"); r.Node != "h2" {
		t.Fatalf("h3 should have fetched chat-go from h2: %+v", r)
	}
	waitRunning(t, h2, "chat-go")
	waitRunning(t, h3, "chat-go")
	runPlugin(t, h1, "chat-py") // broadcasts "hello #1 from h1" once welcomed
	waitRunning(t, h1, "chat-py")
	for range 2 { // two more greetings, through the plugin's own tray menu
		if err := h1.client().Post(t.Context(), "/v1/click", control.ClickRequest{Plugin: "chat-py", Item: "hello"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range []*node{h2, h3} {
		waitFor(t, 10*time.Second, "greetings on "+nd.host.Name, func() error {
			log := pluginLog(t, nd, "chat-go")
			for i := 1; i <= 3; i++ {
				if n := strings.Count(log, fmt.Sprintf("hello #%d from h1", i)); n != 1 {
					return fmt.Errorf("%q seen %d times in:\n%s", fmt.Sprintf("hello #%d from h1", i), n, log)
				}
			}
			return nil
		})
	}
	waitFor(t, 10*time.Second, "replies on h1", func() error {
		log := pluginLog(t, h1, "chat-py")
		for _, from := range []string{"h2", "h3"} {
			if n := strings.Count(log, from+" got your"); n != 3 {
				return fmt.Errorf("%d replies from %s in:\n%s", n, from, log)
			}
		}
		return nil
	})
	// Exactly once, still, after things settle.
	time.Sleep(500 * time.Millisecond)
	for _, nd := range []*node{h2, h3} {
		if n := strings.Count(pluginLog(t, nd, "chat-go"), "hello #1 from h1"); n != 1 {
			t.Errorf("%s got hello #1 %d times", nd.host.Name, n)
		}
	}
}

// TestPluginKilledIsRestarted: kill -9 of a plugin: it is back within 2 s
// with a new PID; the node and the other plugin are untouched.
func TestPluginKilledIsRestarted(t *testing.T) {
	requirePython(t)
	c := newCluster(t, 1)
	c.dumpOnFailure()
	c.startAll()
	h1 := c.nodes[0]
	key := publisherKey(t)
	staging := t.TempDir()
	drop(t, packExample(t, "chat-go", key, staging), h1.dist)
	drop(t, packExample(t, "chat-py", key, staging), h1.dist)
	waitFor(t, 5*time.Second, "archives listed", func() error {
		_, err := lsEntry(h1, "chat-py")
		return err
	})
	runPlugin(t, h1, "chat-go")
	runPlugin(t, h1, "chat-py")
	victim := waitRunning(t, h1, "chat-go")
	other := waitRunning(t, h1, "chat-py")
	nodePID := h1.proc.PID()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var back control.Plugin
	waitFor(t, 5*time.Second, "chat-go restarted", func() error {
		p, err := pluginStatus(h1, "chat-go")
		if err == nil && (p.State != "running" || p.PID == victim.PID) {
			err = fmt.Errorf("state %s pid %d", p.State, p.PID)
		}
		back = p
		return err
	})
	took := time.Since(killed)
	t.Logf("kill -9 to running again: %v (restarts %d)", took, back.Restarts)
	if took > 2*time.Second {
		t.Errorf("restart took %v, want under 2s", took)
	}
	if p, _ := pluginStatus(h1, "chat-py"); p.PID != other.PID || p.State != "running" {
		t.Errorf("the other plugin was disturbed: %+v -> %+v", other, p)
	}
	if h1.proc.PID() != nodePID || h1.status().Node.ID == "" {
		t.Error("node disturbed")
	}
}

// TestNodeKillLeavesNoOrphans: kill -9 of the node takes its plugins down.
func TestNodeKillLeavesNoOrphans(t *testing.T) {
	c := newCluster(t, 1)
	c.dumpOnFailure()
	c.startAll()
	h1 := c.nodes[0]
	drop(t, packExample(t, "chat-go", publisherKey(t), t.TempDir()), h1.dist)
	waitFor(t, 5*time.Second, "listed", func() error { _, err := lsEntry(h1, "chat-go"); return err })
	runPlugin(t, h1, "chat-go")
	p := waitRunning(t, h1, "chat-go")
	h1.proc.Kill()
	<-h1.proc.Exited()
	waitFor(t, 5*time.Second, "plugin gone with its node", func() error {
		if err := syscall.Kill(p.PID, 0); err == nil {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID)); strings.Contains(string(st), ") Z ") {
				return nil // a zombie: dead, waiting for a reaper
			}
			return fmt.Errorf("plugin pid %d still alive", p.PID)
		}
		return nil
	})
}
