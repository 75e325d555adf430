package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/mesh"
)

// The floor of the plugin architecture: what "plugins are separate
// processes talking to their node over a local socket" costs before any
// of Nearby's plugin code runs. Two helper processes (the "plugins") and
// two bare meshes (the "nodes") in this process, joined by unix sockets;
// messages are length-prefixed bytes that nobody parses, the relays move
// whatever one read returned as one mesh message (the best batching
// there is) and keep the one thing a node must have: a queue and a writer
// goroutine per plugin, so a plugin that does not read cannot stall the
// mesh. Flow control is the plugin benchmark's: at most window messages
// in flight, the receiver acknowledging every window/4 through the same
// path back. So this is the most BenchmarkPluginToPlugin could measure on
// this machine; the gap between the two is what the plugin protocol (JSON
// lines, checked at every hop) and the SDK cost.

// floorFrame appends a frame: a 4-byte big-endian length, then p.
func floorFrame(dst, p []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...)
}

// floorQueue is a relay's queue to its plugin: pushes append under a
// lock, one goroutine writes what piled up.
type floorQueue struct {
	mu   sync.Mutex
	buf  []byte
	wake chan struct{}
}

func newFloorQueue(ctx context.Context, w io.Writer) *floorQueue {
	q := &floorQueue{wake: make(chan struct{}, 1)}
	go func() {
		var out []byte
		for {
			select {
			case <-q.wake:
			case <-ctx.Done():
				return
			}
			q.mu.Lock()
			out, q.buf = q.buf, out[:0]
			q.mu.Unlock()
			if len(out) > 0 {
				if _, err := w.Write(out); err != nil {
					return
				}
			}
		}
	}()
	return q
}

func (q *floorQueue) push(b []byte) {
	q.mu.Lock()
	q.buf = append(q.buf, b...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// floorRelay reads frames from a plugin's socket and sends each read's
// worth of whole frames to peer as one mesh message.
func floorRelay(m *mesh.Mesh, peer mesh.NodeID, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var msg []byte
	for {
		// Block for one frame, then take every whole frame already read.
		msg = msg[:0]
		for first := true; first || br.Buffered() >= 4; first = false {
			hdr, err := br.Peek(4)
			if err != nil {
				return err
			}
			n := int(binary.BigEndian.Uint32(hdr))
			if !first && br.Buffered() < 4+n {
				break
			}
			start := len(msg)
			msg = slices.Grow(msg, 4+n)[:start+4+n]
			if _, err := io.ReadFull(br, msg[start:]); err != nil {
				return err
			}
			if len(msg) > 48<<10 {
				break
			}
		}
		for {
			err := m.Send(peer, benchSub, msg, 0)
			if !errors.Is(err, mesh.ErrQueueFull) {
				if err != nil {
					return err
				}
				break
			}
			time.Sleep(50 * time.Microsecond) // backpressure: the mesh queue is full
		}
	}
}

type floorSide struct {
	m    *mesh.Mesh
	ln   *net.UnixListener
	conn net.Conn
	mu   sync.Mutex
	q    *floorQueue // the queue to this side's plugin, once it is there
}

// BenchmarkRelayFloor: b.N messages of 100 bytes from a helper process on
// one side to a helper process on the other through two meshes and unix
// sockets, with nothing parsed on the way, beside b.N mesh.Send between
// the same kind of bare meshes. The ratio is the most the plugin path can
// reach on this machine with plugins as processes.
func BenchmarkRelayFloor(b *testing.B) {
	key, window := benchSetup(b)
	mp := newMeshPair(b, key)
	mp.run(b, 20000, window)

	dir := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	var sides [2]*floorSide
	for i := range sides {
		sides[i] = &floorSide{}
	}
	for i, s := range sides {
		s.m = startBenchMesh(b, key, fmt.Sprintf("floor-%d", i), func(msg mesh.Message) error {
			s.mu.Lock()
			q := s.q
			s.mu.Unlock()
			if q == nil {
				return errors.New("no plugin")
			}
			q.push(msg.Payload)
			return nil
		})
		var err error
		s.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, fmt.Sprintf("s%d", i)), Net: "unix"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.ln.Close() })
	}
	sides[0].m.AddHint(mesh.Hint{ID: sides[1].m.ID(), Addrs: []netip.AddrPort{netip.MustParseAddrPort(sides[1].m.Addr().String())}})
	waitUntil(b, "the meshes connect", func() bool { return len(sides[0].m.Peers()) == 1 && len(sides[1].m.Peers()) == 1 })

	// The plugins: one helper process per side, started once per run.
	runOnce := func(n int) time.Duration {
		var procs []*exec.Cmd
		for i, role := range []string{"send", "recv"} {
			cmd := exec.Command(os.Args[0], "-test.run=^TestFloorHelper$")
			cmd.Env = append(os.Environ(), "NODEBENCH_FLOOR="+role, "NODEBENCH_FLOOR_SOCK="+sides[i].ln.Addr().String(),
				"NODEBENCH_FLOOR_N="+strconv.Itoa(n), "NODEBENCH_FLOOR_WINDOW="+strconv.Itoa(window))
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			procs = append(procs, cmd)
		}
		for i, s := range sides {
			c, err := s.ln.AcceptUnix()
			if err != nil {
				b.Fatal(err)
			}
			s.conn = c
			s.mu.Lock()
			s.q = newFloorQueue(ctx, c)
			s.mu.Unlock()
			go floorRelay(s.m, sides[1-i].m.ID(), c)
		}
		// The sender starts when it reads the first byte: "go".
		t0 := time.Now()
		sides[0].q.push([]byte{1})
		errs := make(chan error, 2)
		for _, p := range procs {
			go func() { errs <- p.Wait() }()
		}
		for range procs {
			select {
			case err := <-errs:
				if err != nil {
					b.Fatalf("floor helper: %v", err)
				}
			case <-time.After(benchWait):
				b.Fatal("floor helpers hung")
			}
		}
		el := time.Since(t0)
		for _, s := range sides {
			s.conn.Close()
			s.mu.Lock()
			s.q = nil
			s.mu.Unlock()
		}
		return el
	}
	runOnce(20000) // warm up
	meshEl := mp.run(b, b.N, window)
	b.ResetTimer()
	el := runOnce(b.N)
	b.StopTimer()
	reportRates(b, "floor", el, meshEl)
}

// TestFloorHelper is not a test: it is a plugin of BenchmarkRelayFloor.
// "send" waits for one byte, then sends N frames, at most WINDOW ahead of
// the acknowledgements; "recv" counts frames in order and acknowledges
// every WINDOW/4 and at the end. Both exit when done.
func TestFloorHelper(t *testing.T) {
	role := os.Getenv("NODEBENCH_FLOOR")
	if role == "" {
		t.Skip("a plugin of BenchmarkRelayFloor")
	}
	n, _ := strconv.Atoi(os.Getenv("NODEBENCH_FLOOR_N"))
	window, _ := strconv.Atoi(os.Getenv("NODEBENCH_FLOOR_WINDOW"))
	c, err := net.Dial("unix", os.Getenv("NODEBENCH_FLOOR_SOCK"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, role+":", err)
		os.Exit(3)
	}
	if role == "send" {
		if _, err := br.ReadByte(); err != nil {
			fail(err)
		}
		var acked atomic.Int64
		wake := make(chan struct{}, 1)
		go func() {
			for {
				// Acks arrive as frames holding an 8-byte count.
				var hdr [4]byte
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					return
				}
				var v [8]byte
				if _, err := io.ReadFull(br, v[:]); err != nil {
					return
				}
				acked.Store(int64(binary.BigEndian.Uint64(v[:])))
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
		p := make([]byte, benchPayload)
		frame := make([]byte, 0, 4+benchPayload)
		for i := range n {
			for int64(i)-acked.Load() >= int64(window) {
				if err := bw.Flush(); err != nil {
					fail(err)
				}
				select {
				case <-wake:
				case <-time.After(benchWait):
					fail(errors.New("no ack"))
				}
			}
			payloadAt(p, i)
			frame = floorFrame(frame[:0], p)
			if bw.Available() < len(frame) {
				if err := bw.Flush(); err != nil {
					fail(err)
				}
			}
			bw.Write(frame)
			if i%128 == 127 {
				// Write what piled up, as the SDK does (its batches
				// carry about 125 messages in BenchmarkPluginToPlugin).
				if err := bw.Flush(); err != nil {
					fail(err)
				}
			}
		}
		if err := bw.Flush(); err != nil {
			fail(err)
		}
		deadline := time.After(benchWait)
		for acked.Load() < int64(n) {
			select {
			case <-wake:
			case <-deadline:
				fail(errors.New("final ack missing"))
			}
		}
		os.Exit(0)
	}
	every := max(window/4, 1)
	ack := func(k int) {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(k))
		bw.Write(floorFrame(nil, v[:]))
		if err := bw.Flush(); err != nil {
			fail(err)
		}
	}
	var p []byte
	for k := 0; k < n; {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			fail(err)
		}
		m := int(binary.BigEndian.Uint32(hdr[:]))
		p = slices.Grow(p[:0], m)[:m]
		if _, err := io.ReadFull(br, p); err != nil {
			fail(err)
		}
		if seqOf(p) != k {
			fail(fmt.Errorf("message %d out of order (%d)", k, seqOf(p)))
		}
		k++
		if k%every == 0 || k == n {
			ack(k)
		}
	}
	os.Exit(0)
}
