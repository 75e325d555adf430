package mesh

// Benchmarks, each beside its baseline in the same run. Run them inside the
// isolated namespace:
//
//	scripts/isolated.sh go test -run '^$' -bench . -benchmem ./mesh/
//
// Quote ratios of the sub-benchmarks (mesh/baseline), and the GOMAXPROCS
// (-cpu) used: sender and receivers share the CPUs.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// benchNode starts a quiet mesh for a benchmark.
func benchNode(b *testing.B, cfg *Config) *Mesh {
	b.Helper()
	if cfg == nil {
		cfg = testConfig(b, testKey)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return m
}

func hintOf(m *Mesh) Hint {
	return Hint{ID: m.ID(), Addrs: []netip.AddrPort{netip.MustParseAddrPort(m.Addr().String())}}
}

// waitPeers waits until m has n peers.
func waitPeers(b *testing.B, m *Mesh, n int) {
	b.Helper()
	deadline := time.Now().Add(wait)
	for len(m.Peers()) < n {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d peers", len(m.Peers()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// --- Bulk throughput: one stream vs TLS alone --------------------------------

// bulkChunks are the write sizes: 32 KiB is what io.Copy (and so HTTP file
// serving) writes, 1 MiB a large application buffer.
var bulkChunks = []int{32 << 10, 1 << 20}

func BenchmarkBulk(b *testing.B) {
	for _, chunk := range bulkChunks {
		b.Run(fmt.Sprintf("chunk=%dK", chunk>>10), func(b *testing.B) { benchBulk(b, chunk) })
	}
}

func benchBulk(b *testing.B, chunk int) {
	b.Run("tls", func(b *testing.B) {
		id, _ := NewIdentity()
		cert, err := newCertificate(id)
		if err != nil {
			b.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		done := make(chan int64, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- -1
				return
			}
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			done <- n
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		runBulk(b, chunk, c, c.CloseWrite, done)
	})
	b.Run("tls+yamux", func(b *testing.B) {
		// yamux as the mesh configures it, without the mesh: where the
		// mesh's cost comes from.
		id, _ := NewIdentity()
		cert, err := newCertificate(id)
		if err != nil {
			b.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		ycfg := yamux.DefaultConfig()
		ycfg.MaxStreamWindowSize = 16 << 20
		ycfg.LogOutput = io.Discard
		done := make(chan int64, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- -1
				return
			}
			sess, _ := yamux.Server(c, ycfg)
			defer sess.Close()
			s, err := sess.Accept()
			if err != nil {
				done <- -1
				return
			}
			n, _ := io.Copy(io.Discard, s)
			done <- n
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		sess, _ := yamux.Client(c, ycfg)
		defer sess.Close()
		s, err := sess.Open()
		if err != nil {
			b.Fatal(err)
		}
		runBulk(b, chunk, s, s.Close, done)
	})
	b.Run("mesh", func(b *testing.B) {
		done := make(chan int64, 1)
		cb := testConfig(b, testKey)
		cb.Handlers = map[string]StreamHandler{"sink": func(_ NodeID, c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			done <- n
		}}
		srv := benchNode(b, cb)
		cli := benchNode(b, nil)
		cli.AddHint(hintOf(srv))
		waitPeers(b, cli, 1)
		c, err := cli.OpenStream(context.Background(), srv.ID(), "sink")
		if err != nil {
			b.Fatal(err)
		}
		runBulk(b, chunk, c, c.Close, done)
	})
}

func runBulk(b *testing.B, chunk int, c net.Conn, closeWrite func() error, done <-chan int64) {
	buf := make([]byte, chunk)
	b.SetBytes(int64(chunk))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	closeWrite()
	n := <-done
	b.StopTimer()
	if n != int64(b.N)*int64(chunk) {
		b.Fatalf("received %d bytes, sent %d", n, int64(b.N)*int64(chunk))
	}
	c.Close()
}

// --- 64-byte round trip: Send vs raw TCP -------------------------------------

func BenchmarkRoundTrip64(b *testing.B) {
	payload := make([]byte, 64)
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, 64)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 64)
		roundTrips(b, func() {
			c.Write(payload)
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("mesh-stream", func(b *testing.B) {
		cb := testConfig(b, testKey)
		cb.Handlers = map[string]StreamHandler{"echo": func(_ NodeID, c net.Conn) {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}}
		srv, cli := benchNode(b, cb), benchNode(b, nil)
		cli.AddHint(hintOf(srv))
		waitPeers(b, cli, 1)
		c, err := cli.OpenStream(context.Background(), srv.ID(), "echo")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 64)
		roundTrips(b, func() {
			c.Write(payload)
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("mesh-send", func(b *testing.B) {
		var srv *Mesh
		cs := testConfig(b, testKey)
		cs.OnMessage = func(m Message) error { return srv.Send(m.From, "pong", m.Payload, 0) }
		srv = benchNode(b, cs)
		got := make(chan struct{}, 1)
		cc := testConfig(b, testKey)
		cc.OnMessage = func(Message) error { got <- struct{}{}; return nil }
		cli := benchNode(b, cc)
		cli.AddHint(hintOf(srv))
		waitPeers(b, cli, 1)
		waitPeers(b, srv, 1)
		roundTrips(b, func() {
			if err := cli.Send(srv.ID(), "ping", payload, 0); err != nil {
				b.Fatal(err)
			}
			<-got
		})
	})
}

// roundTrips runs f b.N times and reports the median and 99th percentile.
func roundTrips(b *testing.B, f func()) {
	for range 100 { // warm up
		f()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		f()
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	us := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Microsecond)
	}
	b.ReportMetric(us(0.50), "p50-µs")
	b.ReportMetric(us(0.99), "p99-µs")
}

// --- Broadcast fan-out: mesh vs embedded NATS --------------------------------

const (
	fanoutSize   = 256
	fanoutWindow = 4096 // messages in flight at most, for both systems
)

// fanout is one system under test: a publisher and n receivers that count
// deliveries and, when asked, record latencies.
type fanout struct {
	publish func([]byte)
	flush   func()
	recv    []*receiver
}

type receiver struct {
	n   atomic.Int64
	lat []time.Duration // written by the receiver's single delivery goroutine
}

var benchEpoch = time.Now()

func stamp(p []byte) { binary.BigEndian.PutUint64(p, uint64(time.Since(benchEpoch))) }

func (r *receiver) deliver(p []byte, record bool) {
	if record && len(p) >= 8 {
		r.lat = append(r.lat, time.Since(benchEpoch)-time.Duration(binary.BigEndian.Uint64(p)))
	}
	r.n.Add(1)
}

func (f *fanout) minReceived() int64 {
	m := int64(-1)
	for _, r := range f.recv {
		if n := r.n.Load(); m < 0 || n < m {
			m = n
		}
	}
	return m
}

func (f *fanout) waitAll(b *testing.B, n int64) {
	deadline := time.Now().Add(5 * wait)
	for f.minReceived() < n {
		if time.Now().After(deadline) {
			b.Fatalf("deliveries stalled at %d of %d", f.minReceived(), n)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

func newMeshFanout(b *testing.B, peers int, record *atomic.Bool) *fanout {
	cfg := testConfig(b, testKey)
	cfg.QueueSize = 16 << 20
	hub := benchNode(b, cfg)
	f := &fanout{}
	for range peers {
		r := &receiver{}
		f.recv = append(f.recv, r)
		c := testConfig(b, testKey)
		c.OnMessage = func(m Message) error { r.deliver(m.Payload, record.Load()); return nil }
		benchNode(b, c).AddHint(hintOf(hub))
	}
	waitPeers(b, hub, peers)
	f.publish = func(p []byte) {
		if n := hub.Broadcast("bench", p); n != peers {
			b.Fatalf("broadcast reached %d of %d peers", n, peers)
		}
	}
	f.flush = func() {}
	return f
}

func newNATSFanout(b *testing.B, peers int, record *atomic.Bool) *fanout {
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		b.Fatal("nats server not ready")
	}
	b.Cleanup(s.Shutdown)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	f := &fanout{}
	for range peers {
		r := &receiver{}
		f.recv = append(f.recv, r)
		nc := connect()
		sub, err := nc.Subscribe("bench", func(m *nats.Msg) { r.deliver(m.Data, record.Load()) })
		if err != nil {
			b.Fatal(err)
		}
		sub.SetPendingLimits(-1, -1)
		nc.Flush()
	}
	pub := connect()
	f.publish = func(p []byte) {
		if err := pub.Publish("bench", p); err != nil {
			b.Fatal(err)
		}
	}
	f.flush = func() { pub.Flush() }
	return f
}

// BenchmarkBroadcast measures deliveries per second of 256-byte messages to
// 8 and 32 peers, at most fanoutWindow messages in flight.
func BenchmarkBroadcast(b *testing.B) {
	for _, peers := range []int{8, 32} {
		for _, sys := range []string{"nats", "mesh"} {
			b.Run(fmt.Sprintf("%s/peers=%d", sys, peers), func(b *testing.B) {
				var record atomic.Bool
				f := newSystem(b, sys, peers, &record)
				p := make([]byte, fanoutSize)
				b.ResetTimer()
				t0 := time.Now()
				for i := range b.N {
					if i%256 == 0 {
						for int64(i)-f.minReceived() > fanoutWindow {
							f.flush()
							time.Sleep(20 * time.Microsecond)
						}
					}
					f.publish(p)
				}
				f.flush()
				f.waitAll(b, int64(b.N))
				el := time.Since(t0)
				b.StopTimer()
				b.ReportMetric(float64(b.N*peers)/el.Seconds(), "deliveries/s")
			})
		}
	}
}

// BenchmarkBroadcastLatency measures delivery latency of 256-byte
// broadcasts sent at a steady 5000 per second.
func BenchmarkBroadcastLatency(b *testing.B) {
	const interval = 200 * time.Microsecond
	for _, peers := range []int{8, 32} {
		for _, sys := range []string{"nats", "mesh"} {
			b.Run(fmt.Sprintf("%s/peers=%d", sys, peers), func(b *testing.B) {
				var record atomic.Bool
				f := newSystem(b, sys, peers, &record)
				p := make([]byte, fanoutSize)
				// No flush per message: for NATS that is a round trip to the
				// server; its client flushes on its own at once.
				for range 200 { // warm up
					stamp(p)
					f.publish(p)
				}
				f.waitAll(b, 200)
				record.Store(true)
				b.ResetTimer()
				next := time.Now()
				for range b.N {
					for time.Now().Before(next) {
						time.Sleep(time.Until(next))
					}
					next = next.Add(interval)
					stamp(p)
					f.publish(p)
				}
				f.flush()
				f.waitAll(b, int64(b.N)+200)
				b.StopTimer()
				var lat []time.Duration
				for _, r := range f.recv {
					lat = append(lat, r.lat...)
				}
				reportLatency(b, lat)
			})
		}
	}
}

func newSystem(b *testing.B, sys string, peers int, record *atomic.Bool) *fanout {
	if sys == "nats" {
		return newNATSFanout(b, peers, record)
	}
	return newMeshFanout(b, peers, record)
}

// --- Heap per idle peer ------------------------------------------------------

// BenchmarkIdlePeerHeap measures the heap a node spends per connected idle
// peer. The peers run in a child process, so only the hub's side counts.
func BenchmarkIdlePeerHeap(b *testing.B) {
	const peers = 64
	hub := benchNode(b, nil)
	// Settle the hub alone first.
	before := heapInUse()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPeers$", "-test.v")
	cmd.Env = append(os.Environ(),
		"MESH_HELPER_PEERS="+strconv.Itoa(peers),
		"MESH_HELPER_HUB="+hub.Addr().String(),
		"MESH_HELPER_ID="+string(hub.ID()),
		"MESH_HELPER_KEY="+testKey.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	waitPeers(b, hub, peers)
	// Let the catalog exchange and a couple of keepalives pass.
	time.Sleep(3 * DefaultKeepAliveInterval)
	after := heapInUse()
	b.ReportMetric(float64(after-before)/peers, "heap-B/peer")
	b.ReportMetric(float64(runtime.NumGoroutine())/peers, "goroutines/peer")
}

func heapInUse() int64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestHelperPeers is the child process of BenchmarkIdlePeerHeap: it runs
// MESH_HELPER_PEERS meshes that connect to the hub until stdin closes.
func TestHelperPeers(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MESH_HELPER_PEERS"))
	if n == 0 {
		t.Skip("helper process for BenchmarkIdlePeerHeap")
	}
	key, err := ParseKey(os.Getenv("MESH_HELPER_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	hint := Hint{ID: NodeID(os.Getenv("MESH_HELPER_ID")), Addrs: []netip.AddrPort{netip.MustParseAddrPort(os.Getenv("MESH_HELPER_HUB"))}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		cfg := testConfig(t, key)
		cfg.Logger = slog.New(slog.DiscardHandler)
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { m.Run(ctx) })
		m.AddHint(hint)
	}
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	cancel()
	wg.Wait()
}
