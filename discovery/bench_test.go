package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkDiscoveryLatency starts n Services at once in one process (one
// network namespace, lo only) and measures the time until every one has a
// hint for every other. Multi-host figures come from the virtual-LAN
// harness (internal/netlab).
func BenchmarkDiscoveryLatency(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var all []time.Duration
			for b.Loop() {
				all = append(all, fullMesh(b, n))
			}
			slices.Sort(all)
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms-median")
			b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms-max")
		})
	}
}

// fullMesh runs one round: it returns how long n fresh Services took to all
// see each other. Setup and teardown are outside the timer.
func fullMesh(b *testing.B, n int) time.Duration {
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	svcs := make([]*Service, n)
	for i := range svcs {
		var err error
		svcs[i], err = New(Config{Port: 8000 + i, Record: testRecord(100 + i), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
	}
	var (
		wg, seen sync.WaitGroup
		runs     sync.WaitGroup
	)
	seen.Add(n)
	b.StartTimer()
	t0 := time.Now()
	for _, s := range svcs {
		runs.Go(func() { s.Run(ctx) })
		wg.Go(func() {
			got := map[string]bool{}
			for len(got) < n-1 {
				select {
				case h := <-s.Hints():
					got[h.Record.NodeID] = true
				case <-ctx.Done():
					return
				}
			}
			seen.Done()
		})
	}
	done := make(chan struct{})
	go func() { seen.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("%d services did not all see each other within 30 s", n)
	}
	d := time.Since(t0)
	b.StopTimer()
	cancel()
	wg.Wait()
	runs.Wait()
	b.StartTimer()
	return d
}
