package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// relayed opens a session as alice through a Relay, the way a node serves
// `nearby open`: the returned Conn is the CLI's side.
func relayed(t *testing.T, tr transport, plugin string) (cli *Conn, r *Relay, ended <-chan End) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, err := Handshake(ctx, tr.dial(t, alicePeer, Service), Request{Plugin: plugin}, wait)
	if err != nil {
		t.Fatal(err)
	}
	cliSide, nodeSide := net.Pipe()
	r = p.Relay(nodeSide)
	ch := make(chan End, 1)
	go func() { ch <- r.Run() }()
	pc, err := ReadAnswer(ctx, cliSide, wait)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Opened != p.Opened {
		t.Fatalf("the presenter got %+v, the node %+v", pc.Opened, p.Opened)
	}
	cli = pc.Conn()
	t.Cleanup(func() { cli.Close() })
	return cli, r, ch
}

func relayEnd(t *testing.T, ch <-chan End) End {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(wait):
		t.Fatal("relay did not end")
	}
	return End{}
}

func TestRelayBulkAndExit(t *testing.T) {
	transports(t, func(c *Config) { c.Window = 32 << 10 }, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
		cli, r, ended := relayed(t, tr, "echo")
		data := make([]byte, 1<<20)
		rand.Read(data)
		var got bytes.Buffer
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(&got, readerOf(cli)) })
		if _, err := cli.Write(data); err != nil {
			t.Fatal(err)
		}
		cli.CloseWrite()
		wg.Wait()
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("got %d bytes back, want %d identical", got.Len(), len(data))
		}
		if e, _ := cli.End(); e.Code != CodeExited {
			t.Fatalf("presenter's end %+v", e)
		}
		if e := relayEnd(t, ended); e.Code != CodeExited {
			t.Fatalf("relay's end %+v", e)
		}
		if in, out := r.Counts(); in != 1<<20 || out != 1<<20 {
			t.Fatalf("relay counts %d %d", in, out)
		}
	})
}

// TestRelayPresenterVanishes: the local presenter process dies without a
// word; the relay closes the session on the host.
func TestRelayPresenterVanishes(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "deaf", "1.0.0", "deaf"))
	cli, _, ended := relayed(t, tr, "deaf")
	id := cli.Info().Session
	cli.c.Close() // the process is gone: its socket closes
	if e := relayEnd(t, ended); e.Code != CodeClosed {
		t.Fatalf("relay end %+v", e)
	}
	if in := waitHostEnded(t, h, id); in.End.Code != CodeClosed || !gone(in.PID) {
		t.Fatalf("host: %+v", in)
	}
}

// TestRelayCloseByNode: the node closes the session (`nearby sessions
// close`); the presenter is told.
func TestRelayCloseByNode(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
	cli, r, ended := relayed(t, tr, "echo")
	cli.Write([]byte("a\n"))
	readUntil(t, cli, "a\n")
	r.Close()
	if e := relayEnd(t, ended); e.Code != CodeClosed {
		t.Fatalf("relay end %+v", e)
	}
	if e := waitEnd(t, cli); e.Code != CodeClosed {
		t.Fatalf("presenter told %+v", e)
	}
}

// TestRelayCloseWith: the node closes the session for a reason of its own;
// the presenter hears that reason.
func TestRelayCloseWith(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
	cli, r, ended := relayed(t, tr, "echo")
	r.CloseWith(End{Code: CodeShutdown, Reason: "the presenter's node is shutting down"})
	if e := relayEnd(t, ended); e.Code != CodeShutdown {
		t.Fatalf("relay end %+v", e)
	}
	if e := waitEnd(t, cli); e.Code != CodeShutdown || !strings.Contains(e.Reason, "shutting down") {
		t.Fatalf("presenter told %+v", e)
	}
	if in := waitHostEnded(t, h, cli.Info().Session); in.End.Code != CodeClosed {
		t.Fatalf("host: %+v", in.End)
	}
}

// TestRelayHostGone: the host's stream breaks; the presenter hears "lost".
func TestRelayHostGone(t *testing.T) {
	h := newHost(t, nil)
	mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
	a, b := net.Pipe()
	go h.HandleStream(alicePeer, b)
	p, err := Handshake(context.Background(), a, Request{Plugin: "echo"}, wait)
	if err != nil {
		t.Fatal(err)
	}
	cliSide, nodeSide := net.Pipe()
	ended := make(chan End, 1)
	go func() { ended <- p.Relay(nodeSide).Run() }()
	pc, err := ReadAnswer(context.Background(), cliSide, wait)
	if err != nil {
		t.Fatal(err)
	}
	cli := pc.Conn()
	defer cli.Close()
	b.Close() // the mesh session died under the stream
	if e := relayEnd(t, ended); e.Code != CodeLost {
		t.Fatalf("relay end %+v", e)
	}
	if e := waitEnd(t, cli); e.Code != CodeLost || !strings.Contains(e.Reason, "lost") {
		t.Fatalf("presenter told %+v", e)
	}
}

func TestRegistry(t *testing.T) {
	var mu sync.Mutex
	var changes []string
	r := NewRegistry(2, func(in Info) {
		mu.Lock()
		changes = append(changes, in.ID[:2]+":"+in.State)
		mu.Unlock()
	})
	closed := map[string]int{}
	add := func(id string) func(End) {
		return r.Add(Info{ID: id, Plugin: "rev", Started: time.Now()},
			func() { mu.Lock(); closed[id]++; mu.Unlock() },
			func() (uint64, uint64) { return 1, 2 })
	}
	endA := add("aa" + strings.Repeat("0", 30))
	add("ab" + strings.Repeat("0", 30))
	if _, err := r.Find("a"); err == nil || !strings.Contains(err.Error(), "8 characters") {
		t.Fatalf("short prefix: %v", err)
	}
	if in, err := r.Find("aa000000"); err != nil || in.BytesOut != 2 || in.Role != RolePresenter {
		t.Fatalf("find by prefix: %+v %v", in, err)
	}
	if err := r.Close("ab" + strings.Repeat("0", 30)); err != nil || closed["ab"+strings.Repeat("0", 30)] != 1 {
		t.Fatalf("close: %v %v", err, closed)
	}
	if err := r.Close("zz"); err == nil {
		t.Fatal("closed an unknown session")
	}
	endA(End{Code: CodeClosed, Reason: "bye"})
	endA(End{Code: CodeLost, Reason: "ignored: the first end counts"})
	if _, err := r.Find("aa000000"); err == nil {
		t.Fatal("an ended session is still open")
	}
	list := r.List()
	if len(list) != 2 || list[1].End == nil || list[1].End.Code != CodeClosed || list[1].State != StateEnded {
		t.Fatalf("list %+v", list)
	}
	r.CloseAll(time.Second)
	add("cc" + strings.Repeat("0", 30)) // after CloseAll: closed at once
	deadline := time.Now().Add(wait)
	for {
		mu.Lock()
		n := closed["cc"+strings.Repeat("0", 30)]
		nb := closed["ab"+strings.Repeat("0", 30)]
		mu.Unlock()
		if n == 1 && nb == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closers: %v", closed)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(changes, " ") != "aa:open ab:open aa:ended cc:open" {
		t.Fatalf("changes %v", changes)
	}
}
