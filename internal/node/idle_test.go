package node

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/mesh"
)

// TestControlIdleConnectionClosed: a keep-alive connection to the control
// socket that stays idle past IdleTimeout is closed by the node, so clients
// that open a connection per request cannot make it grow (found by the
// soak test). An event stream is a request in progress, never idle.
func TestControlIdleConnectionClosed(t *testing.T) {
	key, err := mesh.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	startTestNodeConfig(t, Config{StateDir: state, Name: "idle", Key: key, Listen: "127.0.0.1:0",
		NoDiscovery: true, IdleTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, nil)
	sock := filepath.Join(state, control.SocketName)

	get := func(c net.Conn, br *bufio.Reader, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://nearby"+path, nil)
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// An idle keep-alive connection: answered, then closed by the node.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	resp := get(c, br, "/v1/status")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("status: %d, close %v", resp.StatusCode, resp.Close)
	}
	c.SetReadDeadline(time.Now().Add(benchWait))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %v, want EOF (closed by the node)", err)
	}

	// An event stream outlives the idle timeout: it is a request in
	// progress, not an idle connection.
	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close() // not resp2.Body.Close: that would drain the stream
	br2 := bufio.NewReader(c2)
	resp2 := get(c2, br2, "/v1/events")
	if resp2.StatusCode != 200 {
		t.Fatalf("events: %d", resp2.StatusCode)
	}
	events := bufio.NewReader(resp2.Body)
	c2.SetReadDeadline(time.Now().Add(benchWait))
	if line, err := events.ReadString('\n'); err != nil || !strings.Contains(line, `"hello"`) {
		t.Fatalf("first event %q, %v; want hello", line, err)
	}
	// Wait several idle timeouts (a bound, not a measurement), then make
	// an event happen: an archive in dist (invalid, but a dist event).
	time.Sleep(4 * 300 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(filepath.Join(state, "dist"), "junk-1.0.0.tar.gz"), []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := events.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream closed while in use: %v", err)
		}
		if strings.Contains(line, `"type":"dist"`) {
			break
		}
	}
}
