package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// soakDuration is how long TestSoak churns: $NEARBY_SOAK (a Go duration,
// e.g. 10m) if set, else 60 s (20 s with -short).
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("NEARBY_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second || d > 2*time.Hour {
			t.Fatalf("NEARBY_SOAK=%q: want a duration from 10s to 2h", v)
		}
		return d
	}
	if testing.Short() {
		return 20 * time.Second
	}
	return 60 * time.Second
}

// Growth bounds of a stable node over the soak, between two samples taken
// in the same quiet state (full mesh, every plugin running, no traffic).
const (
	soakMaxGoroutines = 8       // goroutines
	soakMaxFDs        = 4       // open file descriptors
	soakMaxHeap       = 2 << 20 // bytes of live heap (after a GC)
	soakMaxRSS        = 16 << 20
)

// TestSoak: three stable nodes (h1-h3) and two that churn (h4 is stopped
// and started, h5 killed with kill -9 and started, in turn, every few
// seconds; every other round h4's link is cut instead, until the others
// drop it, and healed) while h1 and h2 broadcast continuously to the chat
// plugin on every node, which answers each broadcast. Every broadcast
// between stable nodes must arrive exactly once, and the stable nodes'
// goroutines, fds and memory must not grow beyond the bounds above
// between a quiet sample after a warm-up round and one at the end.
//
//	scripts/isolated.sh go test -run 'TestSoak$' -v ./internal/e2e/                       (60 s)
//	NEARBY_SOAK=10m scripts/isolated.sh go test -run 'TestSoak$' -v -timeout 30m ./internal/e2e/
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	c := newCluster(t, 5, e2eOptions()...)
	c.dumpOnFailure()
	stable, churn := c.nodes[:3], c.nodes[3:]
	c.startAll(scaleArgs()...)
	waitFor(t, 30*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	drop(t, packChat(t, "chat-go", "1.0.0", publisherKey(t), t.TempDir()), c.nodes[0].dist)
	waitFor(t, 15*time.Second, "every node lists chat-go", func() error {
		for _, nd := range c.nodes {
			if _, err := lsEntry(nd, "chat-go"); err != nil {
				return err
			}
		}
		return nil
	})
	for _, nd := range c.nodes {
		if err := runQuiet(nd, "chat-go"); err != nil {
			t.Fatal(err)
		}
		waitRunning(t, nd, "chat-go")
	}

	s := &soak{t: t, c: c}
	// Warm-up: one round of churn and traffic, so that lazily created
	// things (connection pools, buffers, the churners' first restarts)
	// exist before the first sample.
	s.traffic(stable[:2], 3*time.Second, func() { s.churnRound(churn, 0) })
	before := s.quietSample(stable)

	t0 := time.Now()
	rounds := 0
	s.traffic(stable[:2], dur, func() {
		for round := 1; time.Since(t0) < dur; round++ {
			s.churnRound(churn, round)
			rounds = round
		}
	})
	after := s.quietSample(stable)
	t.Logf("soak: %v, %d churn rounds, %d broadcasts sent", time.Since(t0).Round(time.Second), rounds, s.sent.Load())

	// Every broadcast between stable nodes arrived exactly once.
	for _, from := range stable[:2] {
		for _, to := range stable {
			if to == from {
				continue
			}
			log, err := to.client().GetText(t.Context(), "/v1/logs/chat-go")
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			prefix := "to all: soak " + from.host.Name + " "
			for _, line := range strings.Split(string(log), "\n") {
				if _, msg, ok := strings.Cut(line, prefix); ok {
					seen[msg]++
				}
			}
			n := int(s.count(from))
			for i := range n {
				if got := seen[fmt.Sprint(i)]; got != 1 {
					t.Errorf("%s got broadcast %d from %s %d times", to.host.Name, i, from.host.Name, got)
					break
				}
			}
			t.Logf("%s got all %d broadcasts from %s exactly once", to.host.Name, n, from.host.Name)
		}
	}

	for i, nd := range stable {
		b, a := before[i], after[i]
		t.Logf("%s: goroutines %d -> %d, fds %d -> %d, heap %.0f -> %.0f KB, RSS %.1f -> %.1f MB, threads %d -> %d",
			nd.host.Name, b.rt.Goroutines, a.rt.Goroutines, b.fds, a.fds,
			float64(b.rt.HeapAlloc)/1024, float64(a.rt.HeapAlloc)/1024, b.rssMB, a.rssMB, b.threads, a.threads)
		if a.rt.Goroutines-b.rt.Goroutines > soakMaxGoroutines {
			t.Errorf("%s: %d more goroutines after the soak (bound %d)", nd.host.Name, a.rt.Goroutines-b.rt.Goroutines, soakMaxGoroutines)
		}
		if a.fds-b.fds > soakMaxFDs {
			t.Errorf("%s: %d more fds after the soak (bound %d)", nd.host.Name, a.fds-b.fds, soakMaxFDs)
		}
		if int64(a.rt.HeapAlloc)-int64(b.rt.HeapAlloc) > soakMaxHeap {
			t.Errorf("%s: live heap grew by %d bytes (bound %d)", nd.host.Name, int64(a.rt.HeapAlloc)-int64(b.rt.HeapAlloc), soakMaxHeap)
		}
		if (a.rssMB-b.rssMB)*(1<<20) > soakMaxRSS {
			t.Errorf("%s: RSS grew by %.1f MB (bound %d MB)", nd.host.Name, a.rssMB-b.rssMB, soakMaxRSS>>20)
		}
	}
}

// soak holds the soak's traffic counters.
type soak struct {
	t    *testing.T
	c    *cluster
	sent atomic.Int64
	mu   sync.Mutex
	seq  map[*node]int64 // next broadcast number per sender
}

func (s *soak) count(nd *node) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq[nd]
}

// traffic runs f while every sender broadcasts "soak NAME SEQ" to chat
// every 50 ms, then waits for the broadcasts to stop.
func (s *soak) traffic(senders []*node, limit time.Duration, f func()) {
	// A broadcast is never cancelled half-way, so that every number the
	// node accepted is counted and none is sent twice.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait() // also when f fails the test
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	defer halt()
	deadline := time.Now().Add(limit + 2*time.Minute)
	errs := make(chan error, len(senders))
	for _, nd := range senders {
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				s.mu.Lock()
				if s.seq == nil {
					s.seq = map[*node]int64{}
				}
				i := s.seq[nd]
				s.mu.Unlock()
				req := control.SendRequest{Subservice: "chat", Data: []byte(fmt.Sprintf(`{"text":"soak %s %d"}`, nd.host.Name, i))}
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := nd.client().Post(rctx, "/v1/broadcast", req, nil)
				rcancel()
				if err != nil {
					errs <- fmt.Errorf("%s: broadcast %d: %w", nd.host.Name, i, err)
					return
				}
				s.mu.Lock()
				s.seq[nd] = i + 1
				s.mu.Unlock()
				s.sent.Add(1)
			}
		})
	}
	f()
	halt()
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Error(err)
	}
	if s.t.Failed() {
		s.t.FailNow()
	}
}

// churnRound takes the churning nodes down and back up: h4 with SIGTERM
// (or, every other round, a cut link until its peers drop it, then a
// heal), h5 with kill -9. Each comes back and runs its plugin again.
func (s *soak) churnRound(churn []*node, round int) {
	t := s.t
	soft, hard := churn[0], churn[1]
	if round%2 == 1 {
		if err := soft.host.Cut(); err != nil {
			t.Fatal(err)
		}
	} else {
		soft.stop()
	}
	hard.proc.Kill()
	<-hard.proc.Exited()
	others := []*node{}
	for _, nd := range s.c.nodes {
		if nd != soft && nd != hard {
			others = append(others, nd)
		}
	}
	waitFor(t, 20*time.Second, "churned nodes gone", func() error {
		for _, nd := range others {
			var ps []control.Peer
			err := nd.get("/v1/peers", &ps)
			if err != nil {
				return err
			}
			if names := peerNames(ps); names[soft.host.Name] || names[hard.host.Name] {
				return fmt.Errorf("%s still lists them", nd.host.Name)
			}
		}
		return nil
	})
	if round%2 == 1 {
		if err := soft.host.Heal(); err != nil {
			t.Fatal(err)
		}
	} else {
		soft.start(soft.args...)
	}
	hard.start(hard.args...)
	waitFor(t, 30*time.Second, "full mesh after churn", func() error { return s.c.fullMesh(s.c.nodes) })
	for _, nd := range churn {
		if p, err := pluginStatus(nd, "chat-go"); err == nil && p.State == "running" {
			continue
		}
		if err := runQuiet(nd, "chat-go"); err != nil {
			t.Fatal(err)
		}
	}
}

// quietSample waits for the quiet state (full mesh, chat-go running
// everywhere, traffic stopped and drained) and samples the nodes.
func (s *soak) quietSample(nodes []*node) []sample {
	waitFor(s.t, 30*time.Second, "full mesh", func() error { return s.c.fullMesh(s.c.nodes) })
	for _, nd := range s.c.nodes {
		waitRunning(s.t, nd, "chat-go")
	}
	time.Sleep(3 * time.Second) // replies drained, idle HTTP connections settled
	return sampleAll(s.t, nodes)
}
