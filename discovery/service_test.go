package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

)

// These tests multicast: they run only inside scripts/isolated.sh (a network
// namespace holding only lo), which netsafe enforces.

const testMesh = "0123456789abcdef"

func testID(i int) string { return fmt.Sprintf("%032x", 0xabc000+i) }

func testRecord(i int) Record {
	return Record{
		Proto:  ProtocolVersion,
		NodeID: testID(i),
		Name:   fmt.Sprintf("node %d", i),
		MeshID: testMesh,
		Digest: fmt.Sprintf("%064x", i),
		Subservices: []Sub{
			{Name: "chat", Version: "1.2.0"},
			{Name: "files", Version: fmt.Sprintf("0.%d.0", i)},
		},
	}
}

// logBuffer collects debug logs for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type running struct {
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

// stop cancels Run and waits for it (bounded); it returns Run's error.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // let a second stop see it too
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel")
		return nil
	}
}

func start(t testing.TB, cfg Config) *running {
	t.Helper()
	if cfg.Port == 0 {
		cfg.Port = 7000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitHint reads r's hints until one satisfies ok, or fails after d.
func waitHint(t testing.TB, r *running, d time.Duration, ok func(Hint) bool) Hint {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case h := <-r.svc.Hints():
			if ok(h) {
				return h
			}
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned early: %v", err)
		case <-deadline:
			t.Fatalf("no matching hint within %v (stats %+v)", d, r.svc.Stats())
		}
	}
}

func fromNode(id string) func(Hint) bool {
	return func(h Hint) bool { return h.Record.NodeID == id }
}

func TestServicesFindEachOther(t *testing.T) {
	const n = 3
	rs := make([]*running, n)
	for i := range rs {
		rs[i] = start(t, Config{Port: 7000 + i, Record: testRecord(i), MeshID: testMesh})
	}
	for i, r := range rs {
		for j := range rs {
			if i == j {
				continue
			}
			h := waitHint(t, r, 10*time.Second, fromNode(testID(j)))
			want := testRecord(j)
			if h.Port != 7000+j || h.Record.Name != want.Name || h.Record.Digest != want.Digest ||
				len(h.Record.Subservices) != 2 || h.Record.Subservices[1] != want.Subservices[1] {
				t.Errorf("node %d sees node %d as %+v", i, j, h)
			}
			if h.Instance != InstanceName(want.Name, want.NodeID) || h.Host != h.Instance+".local." {
				t.Errorf("instance %q host %q", h.Instance, h.Host)
			}
			if len(h.Addrs) == 0 || !h.Addrs[0].IsLoopback() {
				t.Errorf("addrs %v, want loopback (the namespace holds only lo)", h.Addrs)
			}
			if aps := h.AddrPorts(); len(aps) != len(h.Addrs) || aps[0].Port() != uint16(7000+j) {
				t.Errorf("AddrPorts %v", aps)
			}
		}
	}
	for i, r := range rs {
		if err := r.stop(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Run %d returned %v, want context.Canceled", i, err)
		}
	}
}
