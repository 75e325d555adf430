package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestEchoAndExit(t *testing.T) {
	transports(t, nil, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
		c := open(t, tr, alicePeer, "echo")
		info := c.Info()
		if !ValidID(info.Session) || info.Plugin != "echo" || info.Version != "1.0.0" || info.Host != hostPeer {
			t.Fatalf("opened %+v", info)
		}
		if _, err := c.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		readUntil(t, c, "hello\n")
		in := infoFor(t, h, info.Session)
		if in.State != StateOpen || in.Presenter != alicePeer || in.PID == 0 || in.Role != RoleHost {
			t.Fatalf("host table: %+v", in)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		e := waitEnd(t, c)
		if e.Code != CodeExited || !e.Normal() || e.Exit != "exit status 0" {
			t.Fatalf("end %+v: want exited with status 0", e)
		}
		ended := waitHostEnded(t, h, info.Session)
		if ended.End == nil || ended.End.Code != CodeExited || ended.BytesIn != 6 || ended.BytesOut != 6 {
			t.Fatalf("host table after end: %+v", ended)
		}
		if !gone(in.PID) {
			t.Fatalf("pid %d still exists", in.PID)
		}
		if _, err := c.Write([]byte("more")); !errors.Is(err, ErrEnded) {
			t.Fatalf("write after end: %v, want ErrEnded", err)
		}
	})
}

func TestEnvironment(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "who", "2.1.0", "whoami"))
	c := open(t, tr, bobPeer, "who")
	want := strings.Join([]string{c.Info().Session, bobPeer.ID, bobPeer.Name, hostPeer.Name, "who", "2.1.0"}, " ") + "\n"
	if got := readUntil(t, c, "\n"); got != want {
		t.Fatalf("program saw %q, want %q", got, want)
	}
}

// TestSessionsAreSeparate: two presenters, two programs; each gets only its
// own data back; killing one program ends only its session, and its
// presenter is told why.
func TestSessionsAreSeparate(t *testing.T) {
	transports(t, nil, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
		a := open(t, tr, alicePeer, "echo")
		b := open(t, tr, bobPeer, "echo")
		if a.Info().Session == b.Info().Session {
			t.Fatal("same session id twice")
		}
		a.Write([]byte("from alice\n"))
		b.Write([]byte("from bob\n"))
		if got := readUntil(t, a, "\n"); got != "from alice\n" {
			t.Fatalf("alice got %q", got)
		}
		if got := readUntil(t, b, "\n"); got != "from bob\n" {
			t.Fatalf("bob got %q", got)
		}
		ia, ib := infoFor(t, h, a.Info().Session), infoFor(t, h, b.Info().Session)
		if ia.PID == ib.PID || ia.Presenter != alicePeer || ib.Presenter != bobPeer {
			t.Fatalf("host table: %+v / %+v", ia, ib)
		}
		if err := syscall.Kill(ia.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		e := waitEnd(t, a)
		if e.Code != CodeCrashed || e.Normal() || !strings.Contains(e.Reason, "killed") {
			t.Fatalf("alice's end %+v: want crashed, killed", e)
		}
		b.Write([]byte("still here\n"))
		if got := readUntil(t, b, "\n"); got != "still here\n" {
			t.Fatalf("bob got %q after alice's program died", got)
		}
		if in := infoFor(t, h, b.Info().Session); in.State != StateOpen {
			t.Fatalf("bob's session: %+v", in)
		}
	})
}

func TestPresenterCloses(t *testing.T) {
	transports(t, nil, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "deaf", "1.0.0", "deaf"))
		c := open(t, tr, alicePeer, "deaf")
		pid := infoFor(t, h, c.Info().Session).PID
		c.Close()
		if e, _ := c.End(); e.Code != CodeClosed || !e.Normal() {
			t.Fatalf("end %+v", e)
		}
		in := waitHostEnded(t, h, c.Info().Session)
		if in.End.Code != CodeClosed || !gone(pid) {
			t.Fatalf("host: %+v, pid gone %v", in, gone(pid))
		}
	})
}

// TestCloseWhileInputBlocked: a program that never reads its stdin uses up
// the presenter's credit; Write then blocks (a deadline ends it), and Close
// still gets through at once.
func TestCloseWhileInputBlocked(t *testing.T) {
	transports(t, func(c *Config) { c.Window = 64 << 10 }, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "deaf", "1.0.0", "deaf"))
		c := open(t, tr, alicePeer, "deaf")
		if w := c.Info().Window; w != 64<<10 {
			t.Fatalf("window %d", w)
		}
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		// The pipe to the program holds 64 KiB, the window another 64 KiB.
		n, err := c.Write(make([]byte, 1<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) || n < 64<<10 || n >= 1<<20 {
			t.Fatalf("write: %d bytes, %v; want a timeout after at least a window", n, err)
		}
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(wait):
			t.Fatal("Close stuck behind the blocked input")
		}
		if e, _ := c.End(); e.Code != CodeClosed {
			t.Fatalf("end %+v", e)
		}
	})
}

// TestBulkRoundTrip pushes 4 MiB through cat with a small window: flow
// control in both directions, every byte in order.
func TestBulkRoundTrip(t *testing.T) {
	transports(t, func(c *Config) { c.Window = 16 << 10 }, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
		c := open(t, tr, alicePeer, "echo")
		data := make([]byte, 4<<20)
		rand.Read(data)
		var got bytes.Buffer
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(&got, readerOf(c)) })
		if n, err := c.Write(data); err != nil || n != len(data) {
			t.Fatalf("write %d: %v", n, err)
		}
		c.CloseWrite()
		wg.Wait()
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("round trip: got %d bytes, want %d identical", got.Len(), len(data))
		}
		if e, _ := c.End(); e.Code != CodeExited {
			t.Fatalf("end %+v", e)
		}
		if in, out := c.Counts(); in != uint64(len(data)) || out != uint64(len(data)) {
			t.Fatalf("counts %d %d", in, out)
		}
	})
}

func TestPeerDownEndsItsSessions(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
	a := open(t, tr, alicePeer, "echo")
	b := open(t, tr, bobPeer, "echo")
	pid := infoFor(t, h, a.Info().Session).PID
	h.PeerDown(alicePeer.ID, alicePeer.Name)
	in := waitHostEnded(t, h, a.Info().Session)
	if in.End.Code != CodePresenterLeft || !strings.Contains(in.End.Reason, "alice") || !gone(pid) {
		t.Fatalf("alice's session: %+v (pid gone %v)", in, gone(pid))
	}
	b.Write([]byte("x\n"))
	readUntil(t, b, "x\n")
}

// TestRestartStopServe: a new version ends the old sessions (their
// presenters are told) and new opens get it at once; stop refuses opens.
func TestRestartStopServe(t *testing.T) {
	transports(t, nil, func(t *testing.T, h *Host, tr transport) {
		dir := installDir(t)
		mustServe(t, h, spec(dir, "echo", "1.0.0", "echo"))
		if n, err := h.Serve(spec(dir, "echo", "1.0.0", "echo")); n != 0 || err != nil {
			t.Fatalf("serving the same spec again: %d %v", n, err)
		}
		old := open(t, tr, alicePeer, "echo")
		if n, err := h.Serve(spec(dir, "echo", "1.1.0", "echo")); n != 1 || err != nil {
			t.Fatalf("serve 1.1.0: ended %d, %v", n, err)
		}
		fresh := open(t, tr, alicePeer, "echo") // at once, while the old one ends
		if fresh.Info().Version != "1.1.0" {
			t.Fatalf("new session runs %s", fresh.Info().Version)
		}
		e := waitEnd(t, old)
		if e.Code != CodeRestarted || !strings.Contains(e.Reason, "1.1.0") || e.Normal() {
			t.Fatalf("old session end %+v", e)
		}
		if n, err := h.Stop("echo"); n != 1 || err != nil {
			t.Fatalf("stop: %d %v", n, err)
		}
		if e := waitEnd(t, fresh); e.Code != CodeStopped {
			t.Fatalf("end %+v", e)
		}
		if _, err := tryOpen(t, tr, alicePeer, "echo"); errCode(err) != RefuseNotHosted {
			t.Fatalf("open after stop: %v", err)
		}
		if _, err := h.Stop("echo"); !errors.Is(err, ErrNotServed) {
			t.Fatalf("second stop: %v", err)
		}
	})
}

func TestRefusals(t *testing.T) {
	h := newHost(t, func(c *Config) {
		c.NotServed = func(p string) Refusal { return Refusal{Error: p + " is hosted elsewhere", Hint: "ask around"} }
	})
	tr := newPipeTransport(t, h)
	dir := installDir(t)
	mustServe(t, h, spec(dir, "echo", "1.0.0", "echo"))

	_, err := tryOpen(t, tr, alicePeer, "nope")
	if errCode(err) != RefuseNotHosted || !strings.Contains(err.Error(), "hosted elsewhere (ask around)") {
		t.Fatalf("not served: %v", err)
	}
	ctx := context.Background()
	_, err = Open(ctx, tr.dial(t, alicePeer, Service), Request{Plugin: "echo", Version: "9.9.9"}, wait)
	if errCode(err) != RefuseVersion || !strings.Contains(err.Error(), "runs echo 1.0.0") {
		t.Fatalf("wrong version: %v", err)
	}
	if _, err := Open(ctx, tr.dial(t, alicePeer, Service), Request{Plugin: "Bad Name"}, wait); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad name is checked before sending: %v", err)
	}
	// The program disappeared after Serve checked it.
	mustServe(t, h, spec(dir, "gone", "1.0.0", "exit3"))
	os.Remove(dir + "/exit3")
	if _, err := tryOpen(t, tr, alicePeer, "gone"); errCode(err) != RefuseSpawn {
		t.Fatalf("missing program: %v", err)
	}
	if _, err := h.Serve(spec(dir, "other", "1.0.0", "no-such-file")); !errors.Is(err, ErrBadSpec) {
		t.Fatalf("serve a missing command: %v", err)
	}
	for _, bad := range []Spec{
		{Name: "BAD", Version: "1.0.0", Dir: dir, Argv: []string{"./echo"}},
		{Name: "x", Version: "", Dir: dir, Argv: []string{"./echo"}},
		{Name: "x", Version: "1.0.0", Dir: "relative", Argv: []string{"./echo"}},
		{Name: "x", Version: "1.0.0", Dir: dir},
	} {
		if _, err := h.Serve(bad); !errors.Is(err, ErrBadSpec) {
			t.Errorf("Serve(%+v): %v, want ErrBadSpec", bad, err)
		}
	}
}

// TestBadRequests: garbage instead of a request gets a refusal, never a
// program.
func TestBadRequests(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
	for name, raw := range map[string][]byte{
		"not a frame":    []byte("GET / HTTP/1.1\r\n\r\n"),
		"data first":     appendFrame(nil, frameData, []byte("hi")),
		"bad json":       appendFrame(nil, frameOpen, []byte("{")),
		"old version":    encodeJSON(frameOpen, Request{V: 0, Plugin: "echo"}),
		"oversized":      append([]byte{frameOpen, 0, 0x10, 0, 0}, make([]byte, 16)...),
		"trailing bytes": appendFrame(nil, frameOpen, []byte(`{"v":1,"plugin":"echo"} {}`)),
	} {
		t.Run(name, func(t *testing.T) {
			c := tr.dial(t, alicePeer, Service)
			go c.Write(raw)
			_, err := ReadAnswer(context.Background(), c, wait)
			if code := errCode(err); code != RefuseBadRequest {
				t.Fatalf("got %v", err)
			}
		})
	}
	if s := h.Sessions(); len(s) != 0 {
		t.Fatalf("sessions after bad requests: %+v", s)
	}
}

func TestLimits(t *testing.T) {
	t.Run("max-sessions", func(t *testing.T) {
		h := newHost(t, func(c *Config) { c.Defaults.MaxSessions = 5 })
		tr := newPipeTransport(t, h)
		s := spec(installDir(t), "echo", "1.0.0", "echo")
		s.Limits.MaxSessions = 1
		mustServe(t, h, s)
		first := open(t, tr, alicePeer, "echo")
		_, err := tryOpen(t, tr, bobPeer, "echo")
		if errCode(err) != RefuseLimit || !strings.Contains(err.Error(), "max_sessions") || !strings.Contains(err.Error(), "close one") {
			t.Fatalf("second session: %v", err)
		}
		first.Close()
		waitHostEnded(t, h, first.Info().Session)
		open(t, tr, bobPeer, "echo") // room again
	})
	t.Run("max-total", func(t *testing.T) {
		h := newHost(t, func(c *Config) { c.MaxTotal = 1 })
		tr := newPipeTransport(t, h)
		dir := installDir(t)
		mustServe(t, h, spec(dir, "echo", "1.0.0", "echo"))
		mustServe(t, h, spec(dir, "deaf", "1.0.0", "deaf"))
		open(t, tr, alicePeer, "echo")
		if _, err := tryOpen(t, tr, bobPeer, "deaf"); errCode(err) != RefuseLimit {
			t.Fatalf("over the node's total: %v", err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		h := newHost(t, nil)
		tr := newPipeTransport(t, h)
		s := spec(installDir(t), "echo", "1.0.0", "echo")
		s.Limits.IdleTimeout = 300 * time.Millisecond
		mustServe(t, h, s)
		c := open(t, tr, alicePeer, "echo")
		e := waitEnd(t, c)
		if e.Code != CodeIdle || !strings.Contains(e.Reason, "idle_timeout") {
			t.Fatalf("end %+v", e)
		}
	})
	t.Run("output-overflow", func(t *testing.T) {
		transports(t, nil, func(t *testing.T, h *Host, tr transport) {
			s := spec(installDir(t), "spam", "1.0.0", "spam")
			s.Limits.OutputBuffer = 64 << 10
			mustServe(t, h, s)
			c := open(t, tr, alicePeer, "spam")
			// Read nothing: the stream's window, then the buffer fill up.
			select {
			case <-c.Done():
			case <-time.After(wait):
				t.Fatal("no overflow")
			}
			e, _ := c.End()
			if e.Code != CodeOverflow || !strings.Contains(e.Reason, "output_buffer") {
				t.Fatalf("end %+v", e)
			}
		})
	})
}

// TestControl: the presenter's node may write to and close its session over
// the control service; another node is refused, and its data never reaches
// the program; an unknown session looks the same as someone else's.
func TestControl(t *testing.T) {
	transports(t, nil, func(t *testing.T, h *Host, tr transport) {
		mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
		c := open(t, tr, alicePeer, "echo")
		id := c.Info().Session
		ctl := func(p Peer, req CtlRequest) error {
			return Control(context.Background(), tr.dial(t, p, CtlService), req, wait)
		}
		err := ctl(bobPeer, CtlRequest{Op: CtlWrite, Session: id, Data: []byte("intruder\n")})
		if errCode(err) != RefuseNotPresenter {
			t.Fatalf("bob writing into alice's session: %v", err)
		}
		unknown := ctl(bobPeer, CtlRequest{Op: CtlWrite, Session: newID(), Data: []byte("x")})
		if errCode(unknown) != RefuseNotPresenter || strings.Contains(err.Error(), alicePeer.Name) {
			t.Fatalf("unknown session: %v / %v", unknown, err)
		}
		if err := ctl(bobPeer, CtlRequest{Op: CtlClose, Session: id}); errCode(err) != RefuseNotPresenter {
			t.Fatalf("bob closing alice's session: %v", err)
		}
		if got := h.RefusedControls(); got != 3 {
			t.Fatalf("refused %d control requests, want 3", got)
		}
		if err := ctl(alicePeer, CtlRequest{Op: CtlWrite, Session: id, Data: []byte("by control\n")}); err != nil {
			t.Fatalf("alice's own control write: %v", err)
		}
		c.Write([]byte("by stream\n"))
		got := readUntil(t, c, "by stream\n")
		if got != "by control\nby stream\n" {
			t.Fatalf("program echoed %q", got)
		}
		if err := ctl(alicePeer, CtlRequest{Op: CtlClose, Session: id}); err != nil {
			t.Fatal(err)
		}
		if e := waitEnd(t, c); e.Code != CodeClosed {
			t.Fatalf("end %+v", e)
		}
		if err := ctl(alicePeer, CtlRequest{Op: "explode", Session: id}); !errors.Is(err, ErrProtocol) {
			t.Fatalf("bad op is checked before sending: %v", err)
		}
	})
}

func TestHostCloseTellsPresenters(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	dir := installDir(t)
	mustServe(t, h, spec(dir, "echo", "1.0.0", "echo"))
	mustServe(t, h, spec(dir, "stubborn", "1.0.0", "stubborn"))
	a := open(t, tr, alicePeer, "echo")
	b := open(t, tr, bobPeer, "stubborn")
	readUntil(t, b, "ready\n")
	pids := []int{infoFor(t, h, a.Info().Session).PID, infoFor(t, h, b.Info().Session).PID}
	h.Close()
	for _, c := range []*Conn{a, b} {
		if e := waitEnd(t, c); e.Code != CodeShutdown || !strings.Contains(e.Reason, "hostnode") {
			t.Fatalf("end %+v", e)
		}
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Fatalf("pid %d survived Close", pid)
		}
	}
	if _, err := tryOpen(t, tr, alicePeer, "echo"); errCode(err) != RefuseShutdown {
		t.Fatalf("open after close: %v", err)
	}
	if _, err := h.Serve(spec(dir, "echo", "2.0.0", "echo")); !errors.Is(err, ErrClosed) {
		t.Fatalf("serve after close: %v", err)
	}
}

func TestStderrGoesToLog(t *testing.T) {
	h := newHost(t, nil)
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "exit3", "1.0.0", "exit3"))
	c := open(t, tr, alicePeer, "exit3")
	c.Write([]byte("ping\n"))
	e := waitEnd(t, c)
	if e.Code != CodeCrashed || e.Exit != "exit status 3" {
		t.Fatalf("end %+v", e)
	}
	waitHostEnded(t, h, c.Info().Session)
	log, err := os.ReadFile(h.LogPath("exit3"))
	if err != nil {
		t.Fatal(err)
	}
	id := c.Info().Session[:8]
	for _, want := range []string{"session " + id + ": got ping\n", "session " + id + ": started for alice", "session " + id + ": ended: the program ended: exit status 3"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestOnChangeAndListing(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	h := newHost(t, func(c *Config) {
		c.History = 2
		c.OnChange = func(in Info) {
			mu.Lock()
			seen = append(seen, in.State)
			mu.Unlock()
		}
	})
	tr := newPipeTransport(t, h)
	mustServe(t, h, spec(installDir(t), "echo", "1.0.0", "echo"))
	var ids []string
	for range 3 {
		c := open(t, tr, alicePeer, "echo")
		ids = append(ids, c.Info().Session)
		c.Close()
		waitHostEnded(t, h, c.Info().Session)
	}
	live := open(t, tr, bobPeer, "echo")
	list := h.Sessions()
	if len(list) != 3 || list[0].ID != live.Info().Session || list[1].ID != ids[1] || list[2].ID != ids[2] {
		t.Fatalf("listing %+v: want the live one, then the last 2 ended", list)
	}
	if srv := h.Served(); len(srv) != 1 || srv[0].Sessions != 1 || srv[0].Limits.MaxSessions != DefaultMaxSessions {
		t.Fatalf("served %+v", srv)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "open,ended,open,ended,open,ended,open" {
		t.Fatalf("changes %v", seen)
	}
}

// TestEndWithUnreadOutput: a presenter that stopped reading cannot keep an
// ended session (or the host's Close) waiting beyond EndTimeout.
func TestEndWithUnreadOutput(t *testing.T) {
	transports(t, func(c *Config) { c.EndTimeout = 300 * time.Millisecond }, func(t *testing.T, h *Host, tr transport) {
		s := spec(installDir(t), "flood", "1.0.0", "flood")
		s.Limits.OutputBuffer = 64 << 20 // no overflow: the output just waits
		mustServe(t, h, s)
		c := open(t, tr, alicePeer, "flood")
		id := c.Info().Session
		// Wait until the host's writes stall: the presenter reads nothing.
		var last uint64
		for still, deadline := 0, time.Now().Add(wait); still < 3; {
			if time.Now().After(deadline) {
				t.Fatal("output never stalled")
			}
			time.Sleep(20 * time.Millisecond)
			in := infoFor(t, h, id)
			if in.BytesOut > 0 && in.BytesOut == last {
				still++
			} else {
				still = 0
			}
			last = in.BytesOut
		}
		h.Stop("flood")
		if in := waitHostEnded(t, h, id); in.End.Code != CodeStopped {
			t.Fatalf("end %+v", in.End)
		}
		closed := make(chan struct{})
		go func() { h.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(wait):
			t.Fatal("Close waits for a presenter that does not read")
		}
	})
}
