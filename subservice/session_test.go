package subservice_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/session"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/subservice"
)

var hostNode = subservice.Peer{ID: "host0000000000000000000000000000", Name: "hostnode"}

// pipeOpener is the node's SessionOpener for the tests: node "hostnode" is a
// real session.Host reached over net.Pipe; any other node is unknown.
type pipeOpener struct{ h *session.Host }

func (o pipeOpener) OpenSession(ctx context.Context, owner, to, plugin, version string) (*session.Conn, error) {
	if to != hostNode.ID && to != hostNode.Name {
		return nil, fmt.Errorf("%w: no connected peer %q", supervisor.ErrNoPeer, to)
	}
	a, b := net.Pipe()
	go o.h.HandleStream(self, b)
	return session.Open(ctx, a, session.Request{Plugin: plugin, Version: version}, wait)
}

// startSessions runs a supervisor whose node can open sessions on a host
// serving "echo" (cat), "utf" (writes "é" in two pieces), "exit3" and
// "bin" (writes the bytes ff 00 fe, then cat), and
// starts a helper plugin; it returns the env and the host.
func startSessions(t *testing.T) (*env, *session.Host) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ss")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	scripts := map[string]string{
		"echo":  "#!/bin/sh\nexec cat\n",
		"utf":   "#!/bin/sh\nprintf '\\303'\nsleep 0.2\nprintf '\\251\\n'\nexec cat\n",
		"exit3": "#!/bin/sh\nread line\nexit 3\n",
		"bin":   "#!/bin/sh\nprintf '\\377\\000\\376'\nexec cat\n",
	}
	h, err := session.NewHost(session.Config{Self: hostNode, Logger: slog.New(slog.DiscardHandler), StopGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Serve(session.Spec{Name: name, Version: "1.0.0", Dir: dir, Argv: []string{"./" + name}}); err != nil {
			t.Fatal(err)
		}
	}
	r := &router{sent: make(chan sent, 64), gate: make(chan struct{}), peers: []subservice.Peer{peerB}}
	sv, err := supervisor.New(supervisor.Config{SocketPath: filepath.Join(dir, "s.sock"), Router: r, Sessions: pipeOpener{h}})
	if err != nil {
		t.Fatal(err)
	}
	r.sv = sv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		sv.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		close(r.gate)
		cancel()
		<-done
		h.Close()
	})
	exe, _ := os.Executable()
	leak := filepath.Join(dir, "leak.json")
	err = sv.Start(supervisor.Spec{Name: "presenter", Version: "1.0.0", Dir: dir,
		Argv: []string{exe, "-test.run=^TestHelperProcess$"}, Env: []string{"SUBTEST_LEAK=" + leak, "GORACE=atexit_sleep_ms=0"}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	deadline := time.Now().Add(wait)
	for {
		if b, err := os.ReadFile(leak); err == nil && json.Unmarshal(b, &got) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("helper plugin did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &env{sv: sv, r: r, socket: got["socket"], token: got["token"]}, h
}

func openSession(t *testing.T, p *subservice.Plugin, plugin string) *subservice.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := p.Open(ctx, hostNode.Name, plugin)
	if err != nil {
		t.Fatalf("open %s: %v", plugin, err)
	}
	return s
}

// readSession reads a session's Data until it holds want.
func readSession(t *testing.T, s *subservice.Session, want string) string {
	t.Helper()
	var got strings.Builder
	timeout := time.After(wait)
	for !strings.Contains(got.String(), want) {
		select {
		case d, ok := <-s.Data():
			if !ok {
				e, _ := s.End()
				t.Fatalf("session ended (%+v) with %q, want %q", e, got.String(), want)
			}
			got.WriteString(d)
		case <-timeout:
			t.Fatalf("got %q, want %q", got.String(), want)
		}
	}
	return got.String()
}

func sessionEnd(t *testing.T, s *subservice.Session) subservice.SessionEnd {
	t.Helper()
	go func() {
		for range s.Data() {
		}
	}()
	select {
	case <-s.Done():
	case <-time.After(wait):
		t.Fatal("session did not end")
	}
	e, _ := s.End()
	return e
}

func TestPluginOpensSession(t *testing.T) {
	e, h := startSessions(t)
	p := e.dial(t)
	s := openSession(t, p, "echo")
	if s.Plugin() != "echo" || s.Version() != "1.0.0" || s.Host() != hostNode || !session.ValidID(s.ID()) {
		t.Fatalf("session %s %s on %+v id %q", s.Plugin(), s.Version(), s.Host(), s.ID())
	}
	if err := s.Write("héllo wörld\n"); err != nil {
		t.Fatal(err)
	}
	if got := readSession(t, s, "\n"); got != "héllo wörld\n" {
		t.Fatalf("echo %q", got)
	}
	in, ok := h.Session(s.ID())
	if !ok || in.Presenter != self || in.State != session.StateOpen {
		t.Fatalf("host table %+v", in)
	}
	if err := s.CloseInput(); err != nil {
		t.Fatal(err)
	}
	if end := sessionEnd(t, s); end.Code != "exited" || !end.Normal() || end.Exit != "exit status 0" {
		t.Fatalf("end %+v", end)
	}
	if err := s.Write("late"); !errors.Is(err, subservice.ErrSessionEnded) {
		t.Fatalf("write after end: %v", err)
	}

	// Output split inside a character arrives whole.
	u := openSession(t, p, "utf")
	if got := readSession(t, u, "\n"); got != "é\n" {
		t.Fatalf("split character: %q", got)
	}
	u.Close()
	if end := sessionEnd(t, u); end.Code != "closed" {
		t.Fatalf("end %+v", end)
	}

	// The program is killed: the plugin is told.
	k := openSession(t, p, "echo")
	in, _ = h.Session(k.ID())
	syscall.Kill(in.PID, syscall.SIGKILL)
	if end := sessionEnd(t, k); end.Code != "crashed" || !strings.Contains(end.Reason, "killed") {
		t.Fatalf("end %+v", end)
	}
}

func TestPluginOpenRefused(t *testing.T) {
	e, _ := startSessions(t)
	p := e.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := p.Open(ctx, hostNode.Name, "nope")
	var pe *subservice.Error
	if !errors.As(err, &pe) || pe.Code != subservice.CodeSessionRefused || !strings.Contains(pe.Message, "nope") {
		t.Fatalf("open of a plugin not hosted: %v", err)
	}
	_, err = p.Open(ctx, "ghost", "echo")
	if !errors.As(err, &pe) || pe.Code != subservice.CodeNoPeer {
		t.Fatalf("open on an unknown node: %v", err)
	}
}

// TestPluginGoneClosesSessions: a plugin's connection ends; its sessions
// end on the host.
func TestPluginGoneClosesSessions(t *testing.T) {
	e, h := startSessions(t)
	p := e.dial(t)
	s := openSession(t, p, "echo")
	id := s.ID()
	p.Close()
	if end := sessionEnd(t, s); end.Code != "lost" {
		t.Fatalf("the SDK's end %+v", end)
	}
	deadline := time.Now().Add(wait)
	for {
		in, _ := h.Session(id)
		if in.State == session.StateEnded {
			if in.End.Code != session.CodeClosed {
				t.Fatalf("host: %+v", in.End)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host still has the session: %+v", in)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSessionFramesRaw speaks the protocol by hand, as a plugin in another
// language would, including the errors.
func TestSessionFramesRaw(t *testing.T) {
	e, _ := startSessions(t)
	send, recv := rawPlugin(t, e)
	send(`{"op":"open","id":1,"to":"hostnode","plugin":"echo"}`)
	m := recv()
	if m["op"] != "session" || m["event"] != "opened" || m["id"] != 1.0 || m["plugin"] != "echo" {
		t.Fatalf("open answer %v", m)
	}
	sid := m["session"].(string)
	send(`{"op":"session-data","session":"` + sid + `","data":"ping\n"}`)
	if m := recv(); m["op"] != "session-data" || m["session"] != sid || m["data"] != "ping\n" {
		t.Fatalf("data %v", m)
	}
	for _, tc := range []struct{ line, code string }{
		{`{"op":"session-data","session":"nope","data":"x"}`, subservice.CodeNoSession},
		{`{"op":"session-data","session":"` + sid + `","data":{"x":1}}`, subservice.CodeBadFrame},
		{`{"op":"open","id":2,"plugin":"echo"}`, subservice.CodeBadFrame},
		{`{"op":"session-close","session":"nope"}`, subservice.CodeNoSession},
	} {
		send(tc.line)
		if m := recv(); m["op"] != "error" || m["code"] != tc.code {
			t.Fatalf("%s: got %v, want error %s", tc.line, m, tc.code)
		}
	}
	send(`{"op":"session-eof","session":"` + sid + `"}`)
	m = recv()
	if m["op"] != "session" || m["event"] != "closed" || m["code"] != "exited" || m["session"] != sid {
		t.Fatalf("end %v", m)
	}
}

// TestBinarySession: a session opened with OpenBinary carries any bytes
// both ways (base64 on the plugin socket); the same program opened as text
// shows its non-UTF-8 bytes as U+FFFD, as documented.
func TestBinarySession(t *testing.T) {
	e, _ := startSessions(t)
	p := e.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := p.OpenBinary(ctx, hostNode.Name, "bin")
	if err != nil {
		t.Fatal(err)
	}
	if got := readSession(t, s, "\xfe"); got != "\xff\x00\xfe" {
		t.Fatalf("binary output %q, want ff 00 fe", got)
	}
	in := "\x80\x00\xc3" + strings.Repeat("\xff", 100<<10) + "end" // over one write chunk
	if err := s.Write(in); err != nil {
		t.Fatal(err)
	}
	if got := readSession(t, s, "end"); got != in {
		t.Fatalf("echoed %d bytes, want the %d written byte for byte", len(got), len(in))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	text := openSession(t, p, "bin")
	if got := readSession(t, text, "\ufffd\x00\ufffd"); got != "\ufffd\x00\ufffd" {
		t.Fatalf("text output %q", got)
	}
}

// TestBinarySessionFramesRaw: the wire form of a binary session, and its
// bad input: an unknown encoding, data that is not base64.
func TestBinarySessionFramesRaw(t *testing.T) {
	e, _ := startSessions(t)
	send, recv := rawPlugin(t, e)
	send(`{"op":"open","id":1,"to":"hostnode","plugin":"echo","encoding":"hex"}`)
	if m := recv(); m["op"] != "error" || m["code"] != subservice.CodeBadFrame || m["id"] != 1.0 {
		t.Fatalf("unknown encoding: %v", m)
	}
	send(`{"op":"open","id":2,"to":"hostnode","plugin":"echo","encoding":"base64"}`)
	m := recv()
	if m["op"] != "session" || m["event"] != "opened" || m["encoding"] != "base64" {
		t.Fatalf("open answer %v", m)
	}
	sid := m["session"].(string)
	send(`{"op":"session-data","session":"` + sid + `","data":"/wD+"}`) // ff 00 fe
	if m := recv(); m["op"] != "session-data" || m["data"] != "/wD+" {
		t.Fatalf("echo %v, want data /wD+", m)
	}
	send(`{"op":"session-data","session":"` + sid + `","data":"not base64!"}`)
	if m := recv(); m["op"] != "error" || m["code"] != subservice.CodeBadFrame {
		t.Fatalf("bad base64: %v", m)
	}
	send(`{"op":"session-eof","session":"` + sid + `"}`)
	if m := recv(); m["op"] != "session" || m["event"] != "closed" || m["code"] != "exited" {
		t.Fatalf("end %v", m)
	}
}

// TestOpenBinaryOnOldNode: a node that answers an OpenBinary with a text
// session (it predates binary sessions) makes it fail with ErrNoBinary,
// and the SDK closes that session.
func TestOpenBinaryOnOldNode(t *testing.T) {
	fn, p := dialFake(t, welcomeBatch)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := p.OpenBinary(ctx, "gpu-box", "rev")
		errc <- err
	}()
	open := fn.frame()
	if open.Op != subservice.OpOpen || open.Encoding != subservice.EncodingBase64 {
		t.Fatalf("open frame %+v, want encoding base64", open)
	}
	fn.write(fmt.Sprintf(`{"op":"session","id":%d,"session":"5e55aaaaaaaaaaaaaaaaaaaaaaaaaaaa","event":"opened","plugin":"rev","version":"1.0.0","node":{"id":"n2","name":"gpu-box"}}`, open.ID))
	select {
	case err := <-errc:
		if !errors.Is(err, subservice.ErrNoBinary) {
			t.Fatalf("OpenBinary on an old node: %v, want ErrNoBinary", err)
		}
	case <-time.After(wait):
		t.Fatal("OpenBinary did not return")
	}
	if f := fn.frame(); f.Op != subservice.OpSessionClose || f.Session != "5e55aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
		t.Errorf("after the refusal: %+v, want session-close of that session", f)
	}
}

// rawPlugin connects to the node as the helper plugin, speaking raw
// frames: it says hello and returns a function that writes a line and one
// that reads a frame as a map.
func rawPlugin(t *testing.T, e *env) (send func(string), recv func() map[string]any) {
	t.Helper()
	c, err := net.Dial("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	br := bufio.NewReader(c)
	send = func(line string) {
		t.Helper()
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	recv = func() map[string]any {
		t.Helper()
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return m
	}
	send(`{"op":"hello","token":"` + e.token + `","protocol":1}`)
	if m := recv(); m["op"] != "welcome" {
		t.Fatalf("got %v", m)
	}
	return send, recv
}
