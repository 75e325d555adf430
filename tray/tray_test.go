package tray

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// fakeNode serves the control API on a real unix socket from scripted
// data: the tray's loop is tested here against every answer the node can
// give, including failures that a real node gives only rarely (the real
// node is exercised by internal/e2e's TestTray).
type fakeNode struct {
	t     *testing.T
	state string

	mu      sync.Mutex
	status  control.Status
	listing control.Listing
	plugins []control.Plugin
	peers   []control.Peer
	subs    map[chan control.Event]bool
	hellos  int
	// run scripts POST /v1/run; default: a result.
	run func(req control.FetchRequest, s *control.Stream)

	posts chan posted
	srv   *http.Server
	done  chan struct{}
}

type posted struct {
	path string
	body any
}

func newFakeNode(t *testing.T) *fakeNode {
	f := &fakeNode{t: t, state: t.TempDir(), subs: map[chan control.Event]bool{}, posts: make(chan posted, 32)}
	st := sampleState()
	f.status, f.listing, f.plugins, f.peers = st.Status, st.Listing, st.Plugins, st.Peers
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeNode) start() {
	ln, err := control.Listen(filepath.Join(f.state, control.SocketName))
	if err != nil {
		f.t.Fatal(err)
	}
	mux := http.NewServeMux()
	get := func(path string, v func() any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			control.WriteJSON(w, 200, v())
		})
	}
	get("/v1/status", func() any { return f.status })
	get("/v1/ls", func() any { return f.listing })
	get("/v1/ps", func() any { return f.plugins })
	get("/v1/peers", func() any { return f.peers })
	mux.HandleFunc("GET /v1/events", f.events)
	mux.HandleFunc("POST /v1/run", func(w http.ResponseWriter, r *http.Request) {
		var req control.FetchRequest
		if err := control.ReadJSON(r, &req); err != nil {
			control.WriteError(w, 400, err, "")
			return
		}
		f.posts <- posted{"/v1/run", req}
		f.mu.Lock()
		run := f.run
		f.mu.Unlock()
		s := control.NewStream(w)
		if run != nil {
			run(req, s)
			return
		}
		s.Send(control.Event{Type: control.EventResult, Result: &control.Result{OK: true, Message: req.Name + " started"}})
	})
	mux.HandleFunc("POST /v1/stop", func(w http.ResponseWriter, r *http.Request) {
		var req control.NameRequest
		control.ReadJSON(r, &req)
		f.posts <- posted{"/v1/stop", req}
		control.WriteJSON(w, 200, control.Result{OK: true, Message: "stopped " + req.Name})
	})
	mux.HandleFunc("POST /v1/click", func(w http.ResponseWriter, r *http.Request) {
		var req control.ClickRequest
		control.ReadJSON(r, &req)
		f.posts <- posted{"/v1/click", req}
		if req.Item == "gone" {
			control.WriteError(w, 404, errors.New("no such menu item"), "`nearby ps --json` shows each running plugin's menu")
			return
		}
		control.WriteJSON(w, 200, control.Result{OK: true})
	})
	f.srv = &http.Server{Handler: mux}
	f.done = make(chan struct{})
	srv, done := f.srv, f.done
	go func() { srv.Serve(ln); close(done) }()
}

func (f *fakeNode) stop() {
	f.srv.Close()
	<-f.done
}

func (f *fakeNode) events(w http.ResponseWriter, r *http.Request) {
	ch := make(chan control.Event, 16)
	f.mu.Lock()
	f.subs[ch] = true
	f.hellos++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	s := control.NewStream(w)
	s.Send(control.Event{Type: control.EventHello})
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-ch:
			if s.Send(e) != nil || e.Type == control.EventError {
				return
			}
		}
	}
}

// publish changes the node's data under its lock, then tells every event
// stream with an event of type typ.
func (f *fakeNode) publish(typ string, edit func(f *fakeNode)) {
	f.mu.Lock()
	if edit != nil {
		edit(f)
	}
	e := control.Event{Type: typ, Time: time.Now()}
	if typ == control.EventError {
		e.Error = &control.Error{Error: "update of chat failed: no space left on device"}
	}
	for ch := range f.subs {
		ch <- e
	}
	f.mu.Unlock()
}

func (f *fakeNode) subscribers() (open, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs), f.hellos
}

// nextPost waits (bounded) for the next POST.
func (f *fakeNode) nextPost(t *testing.T) posted {
	t.Helper()
	select {
	case p := <-f.posts:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no POST reached the node within 10 s")
	}
	return posted{}
}

// startTray runs the tray loop on a fake UI against f until the test ends.
func startTray(t *testing.T, f *fakeNode) (*fakeUI, chan error, context.CancelFunc) {
	ui := newFakeUI()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	cfg := Config{StateDir: f.state, Debounce: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	go func() { errc <- Run(ctx, cfg, ui) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-errc:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of cancel")
		}
	})
	return ui, errc, cancel
}

// waitMenu waits (bounded) until the rendered menu satisfies ok.
func waitMenu(t *testing.T, ui *fakeUI, what string, ok func(menu string) bool) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		m := ui.render()
		if ok(m) {
			return m
		}
		select {
		case <-ui.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; menu:\n%s", what, m)
		}
	}
}

func contains(s string) func(string) bool {
	return func(m string) bool { return strings.Contains(m, s) }
}

func containsAll(ss ...string) func(string) bool {
	return func(m string) bool {
		for _, s := range ss {
			if !strings.Contains(m, s) {
				return false
			}
		}
		return true
	}
}

// click clicks the visible item at path, waiting (bounded) for it to show:
// the loop may be between two backend calls of one rebuild.
func click(t *testing.T, ui *fakeUI, path ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if h, _, ok := ui.find(path...); ok {
			ui.clicks <- h
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no item %v in\n%s", path, ui.render())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTrayShowsNode(t *testing.T) {
	f := newFakeNode(t)
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the node's menu", containsAll("Nearby: desk · mesh a1b2c3d4 · 2 peers",
		"▶ chat 1.2.0 (network, running 1.0.0, update available)", "Stop chat", "Say hello", "h3 — 10.77.0.3:7946"))
	ui.mu.Lock()
	title := ui.title
	ui.mu.Unlock()
	if title != "Nearby: desk, 2 peers, 2 running" {
		t.Errorf("title %q", title)
	}
}

func TestTrayFollowsEvents(t *testing.T) {
	f := newFakeNode(t)
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Subservices (2)"))
	f.publish(control.EventCatalog, func(f *fakeNode) {
		f.listing.Subservices = append(f.listing.Subservices, control.Subservice{Name: "poll", Newest: "0.1.0"})
	})
	waitMenu(t, ui, "poll in the menu", contains("poll 0.1.0 (network)"))
	f.publish(control.EventPeerDown, func(f *fakeNode) { f.peers = f.peers[:1] })
	waitMenu(t, ui, "one peer left", func(m string) bool {
		return strings.Contains(m, "· 1 peer") && strings.Contains(m, "Peers (1)") && strings.Count(m, "10.77.0.") == 1
	})
}

func TestTrayRunShowsProgressAndOutcome(t *testing.T) {
	f := newFakeNode(t)
	release := make(chan struct{})
	f.run = func(req control.FetchRequest, s *control.Stream) {
		s.Send(control.Event{Type: control.EventProgress, Progress: &control.Progress{Name: req.Name, Version: "1.2.0", Node: "h3", Done: 50, Total: 100}})
		<-release
		s.Send(control.Event{Type: control.EventResult, Result: &control.Result{OK: true, Name: "chat", Version: "1.2.0", Message: "installed chat 1.2.0 from h3; started"}})
	}
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Subservices (2)"))
	click(t, ui, "Subservices", "▶ chat")
	if p := f.nextPost(t); p.path != "/v1/run" || p.body.(control.FetchRequest).Name != "chat" {
		t.Fatalf("posted %+v, want /v1/run chat", p)
	}
	waitMenu(t, ui, "progress on the item", contains("— fetching 1.2.0 from h3 50% [disabled]"))
	// The item is disabled while busy: a second click posts nothing. The
	// next POST must be the stop clicked after it.
	click(t, ui, "Subservices", "▶ chat")
	click(t, ui, "Running", "chat", "Stop")
	if p := f.nextPost(t); p.path != "/v1/stop" {
		t.Fatalf("posted %+v, want /v1/stop (the click on the busy item must do nothing)", p)
	}
	waitMenu(t, ui, "the stop's outcome", contains("stopped chat"))
	close(release)
	waitMenu(t, ui, "the outcome, and the progress gone", func(m string) bool {
		return strings.Contains(m, "installed chat 1.2.0 from h3; started") && !strings.Contains(m, "fetching")
	})
}

func TestTrayRunOutcomes(t *testing.T) {
	tests := []struct {
		name   string
		script func(s *control.Stream)
		want   string
	}{
		{"update failed", func(s *control.Stream) {
			s.Send(control.Event{Type: control.EventMessage, Message: "update failed (hash mismatch); running installed 1.0.0"})
			s.Send(control.Event{Type: control.EventResult, Result: &control.Result{OK: true, Message: "chat 1.0.0 is already installed and newest; started"}})
		}, "chat: update failed (hash mismatch); running installed 1.0.0 [disabled]"},
		{"error", func(s *control.Stream) {
			s.Send(control.Event{Type: control.EventError, Error: &control.Error{Error: "no subservice chat on the mesh", Hint: "`nearby ls` lists what the mesh offers"}})
		}, "chat: no subservice chat on the mesh [disabled]"},
		{"no result", func(s *control.Stream) {}, "chat: the node ended the run without a result"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeNode(t)
			f.run = func(_ control.FetchRequest, s *control.Stream) { tt.script(s) }
			ui, _, _ := startTray(t, f)
			waitMenu(t, ui, "the first menu", contains("Subservices (2)"))
			click(t, ui, "Subservices", "▶ chat")
			f.nextPost(t)
			waitMenu(t, ui, "the outcome", contains(tt.want))
		})
	}
}

func TestTrayPluginItemsAndStop(t *testing.T) {
	f := newFakeNode(t)
	f.plugins[0].Menu = append(f.plugins[0].Menu, control.MenuItem{ID: "gone", Label: "Vanished", Enabled: true})
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Say hello"))

	click(t, ui, "Running", "chat", "✓ Mute") // disabled by the plugin: nothing
	click(t, ui, "Running", "chat", "Say hello")
	p := f.nextPost(t)
	if p.path != "/v1/click" || p.body != (control.ClickRequest{Plugin: "chat", Item: "hello"}) {
		t.Fatalf("posted %+v, want a click on chat/hello", p)
	}
	click(t, ui, "Running", "chat", "Vanished")
	if p := f.nextPost(t); p.body != (control.ClickRequest{Plugin: "chat", Item: "gone"}) {
		t.Fatalf("posted %+v", p)
	}
	waitMenu(t, ui, "the click's error", contains("chat: no such menu item"))

	click(t, ui, "Running", "flaky", "Stop flaky")
	if p := f.nextPost(t); p.path != "/v1/stop" || p.body != (control.NameRequest{Name: "flaky"}) {
		t.Fatalf("posted %+v, want /v1/stop flaky", p)
	}
	waitMenu(t, ui, "the stop's outcome", contains("stopped flaky"))
}

func TestTrayIgnoresClicksOnInformation(t *testing.T) {
	f := newFakeNode(t)
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Peers (2)"))
	click(t, ui, "Nearby:")
	click(t, ui, "Peers", "h2")
	click(t, ui, "Subservices", "draw")
	if p := f.nextPost(t); p.path != "/v1/run" || p.body.(control.FetchRequest).Name != "draw" {
		t.Fatalf("first POST %+v, want the run of draw (clicks on information must do nothing)", p)
	}
}

func TestTrayQuit(t *testing.T) {
	f := newFakeNode(t)
	ui, errc, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Quit tray"))
	click(t, ui, "Quit tray")
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run after Quit: %v", err)
		}
		errc <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Quit")
	}
}

func TestTrayCancel(t *testing.T) {
	f := newFakeNode(t)
	ui, errc, cancel := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Quit tray"))
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after cancel: %v", err)
		}
		errc <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if open, _ := f.subscribers(); open != 0 {
		// The server notices the closed stream asynchronously.
		deadline := time.Now().Add(5 * time.Second)
		for open != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			open, _ = f.subscribers()
		}
		if open != 0 {
			t.Fatalf("%d event streams still open after Run returned", open)
		}
	}
}

func TestTrayReconnects(t *testing.T) {
	f := newFakeNode(t)
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Nearby: desk ·"))
	f.stop()
	waitMenu(t, ui, "the node unreachable, runs disabled", containsAll("Nearby: desk unreachable, retrying…",
		"▶ chat 1.2.0 (network, running 1.0.0, update available) [disabled]"))
	f.mu.Lock()
	f.status.Node.Name = "desk2"
	f.mu.Unlock()
	f.start()
	waitMenu(t, ui, "the restarted node", contains("Nearby: desk2 ·"))
}

func TestTrayNoNodeYet(t *testing.T) {
	state := t.TempDir()
	ui := newFakeUI()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Config{StateDir: state, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}, ui)
	}()
	waitMenu(t, ui, "no node", contains("Nearby: no node (not running)"))
	waitMenu(t, ui, "the placeholder", contains("(waiting for the node)"))
	// A node that appears later is picked up.
	f := &fakeNode{t: t, state: state, subs: map[chan control.Event]bool{}, posts: make(chan posted, 32)}
	st := sampleState()
	f.status, f.listing, f.plugins, f.peers = st.Status, st.Listing, st.Plugins, st.Peers
	f.start()
	defer f.stop()
	waitMenu(t, ui, "the node", contains("Nearby: desk ·"))
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestTrayErrorEventShowsAndStreamResumes(t *testing.T) {
	f := newFakeNode(t)
	ui, _, _ := startTray(t, f)
	waitMenu(t, ui, "the first menu", contains("Nearby: desk ·"))
	_, before := f.subscribers()
	f.publish(control.EventError, nil)
	m := waitMenu(t, ui, "the error notice", contains("update of chat failed: no space left on device"))
	if strings.Contains(m, "unreachable") {
		t.Errorf("an error event made the node look unreachable:\n%s", m)
	}
	// The client ends the stream on an error event; the tray reconnects.
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, total := f.subscribers()
		if open == 1 && total > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event stream was not reopened (open %d, opened %d times)", open, total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.publish(control.EventCatalog, func(f *fakeNode) {
		f.listing.Subservices = append(f.listing.Subservices, control.Subservice{Name: "after", Newest: "1.0.0"})
	})
	waitMenu(t, ui, "an event after the reconnect", contains("after 1.0.0"))
}

func TestConfigVerify(t *testing.T) {
	var c Config
	if err := c.Verify(); !errors.Is(err, ErrNoStateDir) {
		t.Fatalf("Verify without state: %v", err)
	}
	c = Config{StateDir: "/x", Debounce: time.Second, MaxDelay: time.Millisecond, RetryMin: time.Second, RetryMax: time.Millisecond}
	if err := c.Verify(); err != nil {
		t.Fatal(err)
	}
	if c.MaxDelay != time.Second || c.RetryMax != time.Second || c.Client == nil || c.Logger == nil || c.RequestTimeout <= 0 {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if err := Run(context.Background(), Config{StateDir: "/x"}, nil); !errors.Is(err, ErrNilUI) {
		t.Fatalf("Run with nil UI: %v", err)
	}
}

func TestProblem(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "event stream ended"},
		{fmt.Errorf("x: %w", control.ErrNoNode), "not running"},
		{fmt.Errorf("control: GET /v1/events: %w", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}), "connection reset by peer"},
	}
	for _, tt := range tests {
		if got := problem(tt.err); got != tt.want {
			t.Errorf("problem(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
