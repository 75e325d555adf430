package supervisor

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// benchStart measures Start until the plugin's hello has been accepted,
// then stops it (not timed). It reports the median and 90th percentile.
func benchStart(b *testing.B, spec Spec) {
	m := newMesh(b)
	a := m.node("alpha", nil)
	events, cancel := a.sv.Subscribe(256)
	defer cancel()
	var took []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := a.sv.Start(spec); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(wait)
	waiting:
		for {
			select {
			case ev := <-events:
				if ev.Status.Name == spec.Name && ev.Status.Connected {
					break waiting
				}
			case <-deadline:
				b.Fatal("no hello")
			}
		}
		took = append(took, time.Since(t0))
		b.StopTimer()
		if err := a.sv.Stop(spec.Name); err != nil {
			b.Fatal(err)
		}
		for len(events) > 0 {
			<-events
		}
		b.StartTimer()
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*9/10]), "p90-ms")
}

func BenchmarkStartToHello(b *testing.B) {
	b.Run("go-sdk", func(b *testing.B) {
		benchStart(b, helperSpec(b, "hello", "hello"))
	})
	b.Run("go-example", func(b *testing.B) {
		dir := shortDir(b)
		build := exec.Command("go", "build", "-o", dir+"/chat-go", "../../examples/chat-go")
		if out, err := build.CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
		benchStart(b, Spec{Name: "chat-go", Version: "1.0.0", Dir: dir, Argv: []string{"./chat-go"}})
	})
	// python3 as found on PATH (here possibly a pyenv shim, a shell script),
	// and the system interpreter directly.
	for _, py := range []struct{ name, path string }{{"PATH", "python3"}, {"usr-bin", "/usr/bin/python3"}} {
		b.Run("python-example/"+py.name, func(b *testing.B) {
			path, err := exec.LookPath(py.path)
			if err != nil {
				b.Skip("no " + py.path)
			}
			dir, _ := filepath.Abs("../../examples/chat-py")
			benchStart(b, Spec{Name: "chat-py", Version: "1.0.0", Dir: dir, Argv: []string{path, "chat.py"}, Env: []string{"CHAT_INTERVAL=0"}})
		})
	}
}

// BenchmarkPluginToNode measures frames/s from one plugin process through
// the socket into Router.Broadcast (100-byte data).
func BenchmarkPluginToNode(b *testing.B) {
	m := newMesh(b)
	m.rec.ignoreBroadcasts.Store(true)
	a := m.node("alpha", nil)
	if err := a.sv.Start(helperSpec(b, "blast", "blast", "SUPTEST_REPORT="+m.rec.peer.ID)); err != nil {
		b.Fatal(err)
	}
	a.waitState(b, "blast", StateRunning)
	b.ResetTimer()
	t0 := time.Now()
	if err := a.sv.Deliver(m.rec.peer, "blast", fmt.Appendf(nil, `{"N":%d,"Size":100}`, b.N), false); err != nil {
		b.Fatal(err)
	}
	m.rec.expect(b, "done", func(r recMsg) bool { return num(r.Data["done"]) == b.N })
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "frames/s")
}

// BenchmarkNodeToPlugin measures Deliver into one plugin process until it
// has read every message (100-byte data; a full queue is retried).
func BenchmarkNodeToPlugin(b *testing.B) {
	m := newMesh(b)
	a := m.node("alpha", nil)
	if err := a.sv.Start(helperSpec(b, "count", "count", "SUPTEST_REPORT="+m.rec.peer.ID, fmt.Sprintf("SUPTEST_EVERY=%d", b.N))); err != nil {
		b.Fatal(err)
	}
	a.waitState(b, "count", StateRunning)
	payload := fmt.Appendf(nil, `"%098d"`, 0)
	b.ResetTimer()
	t0 := time.Now()
	retries := 0
	for i := 0; i < b.N; i++ {
		for {
			err := a.sv.Deliver(m.rec.peer, "count", payload, false)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) || retries > 10_000_000 {
				b.Fatal(err)
			}
			retries++
			time.Sleep(50 * time.Microsecond)
		}
	}
	m.rec.expect(b, "count", func(r recMsg) bool { return num(r.Data["count"]) == b.N })
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "frames/s")
	b.ReportMetric(float64(retries)/float64(b.N), "retries/op")
}
