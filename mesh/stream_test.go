package mesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func echoHandler(from NodeID, c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
}

func TestStreams(t *testing.T) {
	checkGoroutines(t)
	cb := testConfig(t, testKey)
	var gotFrom sync.Map
	cb.Handlers = map[string]StreamHandler{
		"echo": func(from NodeID, c net.Conn) {
			gotFrom.Store(from, true)
			echoHandler(from, c)
		},
	}
	a, b := startNode(t, nil), startNode(t, cb)
	connect(t, a, b)
	ctx := context.Background()

	t.Run("echo", func(t *testing.T) {
		c, err := a.OpenStream(ctx, b.ID(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		msg := strings.Repeat("round and round ", 10000)
		go func() {
			io.WriteString(c, msg)
		}()
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo: %v", err)
		}
		if _, ok := gotFrom.Load(a.ID()); !ok {
			t.Error("handler did not learn the caller")
		}
	})
	t.Run("unknown service", func(t *testing.T) {
		_, err := a.OpenStream(ctx, b.ID(), "nope")
		if !errors.Is(err, ErrUnknownService) || !strings.Contains(err.Error(), `no service "nope"`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		if _, err := a.OpenStream(ctx, b.ID(), ""); !errors.Is(err, ErrBadName) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := a.OpenStream(cctx, b.ID(), "echo"); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("both directions", func(t *testing.T) {
		// b has the handler; a opened streams; a stream the other way hits
		// a's empty handler table.
		if _, err := b.OpenStream(ctx, a.ID(), "echo"); !errors.Is(err, ErrUnknownService) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("many at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				c, err := a.OpenStream(ctx, b.ID(), "echo")
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				fmt.Fprintf(c, "line %d\n", i)
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != fmt.Sprintf("line %d\n", i) {
					t.Errorf("stream %d: %q %v", i, line, err)
				}
			})
		}
		wg.Wait()
	})
	t.Run("session loss fails open streams", func(t *testing.T) {
		c, err := a.OpenStream(ctx, b.ID(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b.stop()
		c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read on a stream of a closed session succeeded")
		}
	})
}

func TestBadStreamHeader(t *testing.T) {
	checkGoroutines(t)
	cb := testConfig(t, testKey)
	cb.Handlers = map[string]StreamHandler{"echo": echoHandler}
	b := startNode(t, cb)
	r := newRawPeer(t, testKey)
	sess, _ := r.fullPeer(t, b)
	s, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(wait))
	s.Write([]byte{streamControl}) // a second control stream
	ans, _ := io.ReadAll(s)
	if len(ans) < 2 || ans[0] != streamRefused || !strings.Contains(string(ans[2:]), "bad stream header") {
		t.Fatalf("answer %q", ans)
	}
	// The session survives a bad stream.
	s2, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s2.SetDeadline(time.Now().Add(wait))
	if err := requestService(context.Background(), s2, "echo", wait); err != nil {
		t.Fatal(err)
	}
	s2.Write([]byte("ok"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(s2, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("%q %v", buf, err)
	}
}

// chanListener turns a stream handler into a net.Listener for http.Server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

func (l *chanListener) handle(_ NodeID, c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func TestHTTPOverMesh(t *testing.T) {
	checkGoroutines(t)
	ln := &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: &net.TCPAddr{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from %s", r.URL.Path, r.Host)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cb := testConfig(t, testKey)
	cb.Handlers = map[string]StreamHandler{"http": ln.handle}
	a, b := startNode(t, nil), startNode(t, cb)
	connect(t, a, b)
	tr := &http.Transport{DialContext: a.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: wait}
	for i := range 3 {
		url := fmt.Sprintf("http://%s/file%d", StreamHost(b.ID(), "http"), i)
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("hello /file%d from %s.http", i, b.ID())
		if string(body) != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
	if _, err := a.DialContext(context.Background(), "udp", StreamHost(b.ID(), "http")); err == nil {
		t.Error("udp accepted")
	}
	if _, err := a.DialContext(context.Background(), "tcp", "example.com:80"); !errors.Is(err, ErrBadAddress) {
		t.Errorf("got %v", err)
	}
}

func TestParseStreamAddr(t *testing.T) {
	id := NodeID(strings.Repeat("ab", 16))
	tests := []struct {
		addr    string
		id      NodeID
		service string
		ok      bool
	}{
		{string(id) + ".http:80", id, "http", true},
		{string(id) + ".http", id, "http", true},
		{string(id) + ".sub.svc:0", id, "sub.svc", true},
		{string(id) + ":80", "", "", false},
		{string(id) + ".:80", "", "", false},
		{"short.http:80", "", "", false},
		{strings.ToUpper(string(id)) + ".http:80", "", "", false},
		{"[::1]:80", "", "", false},
		{"a:b:c", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		gotID, gotSvc, err := ParseStreamAddr(tt.addr)
		if (err == nil) != tt.ok || gotID != tt.id || gotSvc != tt.service {
			t.Errorf("ParseStreamAddr(%q) = %q, %q, %v", tt.addr, gotID, gotSvc, err)
		}
		if err != nil && !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseStreamAddr(%q): error %v is not ErrBadAddress", tt.addr, err)
		}
	}
}
