package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestoreAfterRestart: the plugins a user ran and did not stop, local
// and hosted, run again when the node restarts; one stopped with `nearby
// stop` does not; --no-restore starts none; a corrupt running.json is
// reported and the node comes up anyway.
func TestRestoreAfterRestart(t *testing.T) {
	requirePython(t)
	c := newCluster(t, 1)
	c.dumpOnFailure()
	c.startAll()
	h1 := c.nodes[0]
	key := publisherKey(t)
	staging := t.TempDir()
	drop(t, packExample(t, "chat-go", key, staging), h1.dist)
	drop(t, packExample(t, "chat-py", key, staging), h1.dist)
	drop(t, packRev(t, key, staging, "rev", "1.0.0", nil), h1.dist)
	waitFor(t, 5*time.Second, "archives listed", func() error {
		for _, n := range []string{"chat-go", "chat-py", "rev"} {
			if _, err := lsEntry(h1, n); err != nil {
				return err
			}
		}
		return nil
	})
	runPlugin(t, h1, "chat-go")
	runPlugin(t, h1, "chat-py")
	runPlugin(t, h1, "rev")
	waitRunning(t, h1, "chat-go")
	waitRunning(t, h1, "chat-py")
	if _, stderr, err := h1.cli(10*time.Second, "stop", "chat-py"); err != nil {
		t.Fatalf("stop chat-py: %v\n%s", err, stderr)
	}

	// notRunning fails the test if name runs on h1 (the node restores
	// before its control socket answers, so this is not a race).
	notRunning := func(name string) {
		t.Helper()
		if p, err := pluginStatus(h1, name); err == nil && p.State != "stopped" {
			t.Errorf("%s: %s is %s, want not running", h1.host.Name, name, p.State)
		}
	}
	restart := func(args ...string) {
		t.Helper()
		h1.stop()
		h1.start(args...)
	}

	restart()
	waitRunning(t, h1, "chat-go")
	notRunning("chat-py")
	if e, err := lsEntry(h1, "rev"); err != nil || e.Running != "1.0.0" {
		t.Errorf("hosted rev after restart: %+v, %v; want served (running 1.0.0)", e, err)
	}
	if !strings.Contains(h1.proc.Stderr(), "restored plugin") {
		t.Error("the node did not log what it restored")
	}

	restart("--no-restore")
	notRunning("chat-go")
	if e, _ := lsEntry(h1, "rev"); e.Running != "" {
		t.Errorf("--no-restore: rev served (%s)", e.Running)
	}

	// A corrupt running.json: reported, nothing restored, the node is up;
	// the next run rewrites it.
	h1.stop()
	if err := os.WriteFile(filepath.Join(h1.state, "running.json"), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	h1.start()
	notRunning("chat-go")
	if !strings.Contains(h1.proc.Stderr(), "cannot read the plugins to restore") {
		t.Error("a corrupt running.json was not reported")
	}
	runPlugin(t, h1, "chat-go")
	restart()
	waitRunning(t, h1, "chat-go")
}
