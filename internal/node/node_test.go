package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netsafe"
	"github.com/nearbymesh/nearby/mesh"
)

// startNode runs a node in this process (discovery on, inside the isolated
// namespace) and returns its control client and a stop function that waits
// for Run to return.
func startNode(t *testing.T, key mesh.Key, name string) (*control.Client, func() error) {
	t.Helper()
	if err := netsafe.Check(); err != nil {
		t.Skip(err) // run with `make test`
	}
	state := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan control.Status, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{StateDir: state, Name: name, Key: key, Listen: "127.0.0.1:0",
			Ready: func(s control.Status) { ready <- s }})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("node exited: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("node not ready after 10s")
	}
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			return fmt.Errorf("Run did not return 15s after cancel")
		}
	}
	return control.NewClient(state), stop
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRunStopsCleanly: two nodes in one process find each other and
// connect; after both stop, no goroutine or file descriptor they started is
// left (bounded polling: some library sockets close just after Run returns).
func TestRunStopsCleanly(t *testing.T) {
	key, _ := mesh.NewKey()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)

	a, stopA := startNode(t, key, "alpha")
	_, stopB := startNode(t, key, "beta")
	deadline := time.Now().Add(15 * time.Second)
	for {
		var ps []control.Peer
		if err := a.Get(context.Background(), "/v1/peers", &ps); err != nil {
			t.Fatal(err)
		}
		if len(ps) == 1 && ps[0].Name == "beta" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alpha never connected to beta: %+v", ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	a.Close()

	deadline = time.Now().Add(10 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), openFDs(t)
		if g <= g0 && fd <= fd0 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("leak after stop: goroutines %d -> %d, fds %d -> %d\n%s\nfds: %s", g0, g, fd0, fd, buf, fdList())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"->"+l)
	}
	return strings.Join(out, " ")
}

// TestSecondNodeSameState: a second node on the same state directory is
// refused with a clear error, and the first keeps running.
func TestSecondNodeSameState(t *testing.T) {
	if err := netsafe.Check(); err != nil {
		t.Skip(err)
	}
	key, _ := mesh.NewKey()
	state := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan control.Status, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{StateDir: state, Key: key, Listen: "127.0.0.1:0", NoDiscovery: true,
			Ready: func(s control.Status) { ready <- s }})
	}()
	<-ready
	err := Run(context.Background(), Config{StateDir: state, Key: key, Listen: "127.0.0.1:0", NoDiscovery: true})
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second node on the same state dir: err = %v, want 'already running'", err)
	}
	var st control.Status
	if err := control.NewClient(state).Get(context.Background(), "/v1/status", &st); err != nil {
		t.Fatalf("first node hurt: %v", err)
	}
	cancel()
	<-done
}
