package tray

import (
	"strings"
	"testing"

	"github.com/nearbymesh/nearby/internal/control"
)

func sampleState() State {
	return State{
		Connected: true,
		Have:      true,
		Status:    control.Status{Node: control.Node{ID: "3f2a9c41d0b7e85a", Name: "desk"}, MeshID: "a1b2c3d4e5f60718"},
		Listing: control.Listing{Subservices: []control.Subservice{
			{Name: "draw", Newest: "0.3.0", Local: "0.3.0", Description: "shared whiteboard",
				Offers: []control.Offer{{NodeName: "desk", Version: "0.3.0", Local: true}}},
			{Name: "chat", Newest: "1.2.0", Installed: "1.0.0", Running: "1.0.0", UpdateAvailable: true,
				Offers: []control.Offer{{NodeName: "h3", Version: "1.2.0"}, {NodeName: "h2", Version: "1.0.0"}}},
		}},
		Plugins: []control.Plugin{
			{Name: "chat", Version: "1.0.0", State: "running", PID: 42, Menu: []control.MenuItem{
				{ID: "hello", Label: "Say hello", Enabled: true},
				{ID: "mute", Label: "Mute", Enabled: false, Checked: true},
			}},
			{Name: "old", Version: "0.1.0", State: "stopped"},
			{Name: "flaky", Version: "2.0.0", State: "backoff"},
		},
		Peers: []control.Peer{
			{ID: "bbbbbbbbbbbb", Name: "h3", Addr: "10.77.0.3:7946", RTTMillis: 0.44, Subservices: 1},
			{ID: "aaaaaaaaaaaa", Name: "h2", Addr: "10.77.0.2:7946", RTTMillis: 1.5, Subservices: 2},
		},
		Activity: map[string]Activity{},
	}
}

func TestBuildMenu(t *testing.T) {
	ui := newFakeUI()
	NewMenu(ui).Apply(Build(sampleState()))
	want := `Nearby: desk · mesh a1b2c3d4 · 2 peers [disabled]
---
Subservices (2)
  ▶ chat 1.2.0 (network, running 1.0.0, update available)
  draw 0.3.0 (local)
Running (2)
  chat 1.0.0
    Stop chat
    Say hello
    ✓ Mute [disabled]
  flaky 2.0.0 (backoff)
    Stop flaky
Peers (2)
  h2 — 10.77.0.2:7946, 1.5 ms, 2 subservices [disabled]
  h3 — 10.77.0.3:7946, 0.4 ms, 1 subservice [disabled]
---
Quit tray
`
	if got := ui.render(); got != want {
		t.Fatalf("menu:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuildActions(t *testing.T) {
	root := Build(sampleState())
	find := func(path ...string) *Item {
		items := root.Children
		var cur *Item
		for _, k := range path {
			cur = nil
			for _, it := range items {
				if it.Key == k {
					cur = it
				}
			}
			if cur == nil {
				t.Fatalf("no item %v", path)
			}
			items = cur.Children
		}
		return cur
	}
	tests := []struct {
		path []string
		want Action
	}{
		{[]string{KeySubservices, "chat"}, Action{Kind: ActionRun, Name: "chat"}},
		{[]string{KeyRunning, "chat", KeyStop}, Action{Kind: ActionStop, Name: "chat"}},
		{[]string{KeyRunning, "chat", ItemKeyPrefix + "hello"}, Action{Kind: ActionClick, Name: "chat", Item: "hello"}},
		{[]string{KeyQuit}, Action{Kind: ActionQuit}},
		{[]string{KeyStatus}, Action{}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.path, "/"), func(t *testing.T) {
			if got := find(tt.path...).Action; got != tt.want {
				t.Fatalf("action %+v, want %+v", got, tt.want)
			}
		})
	}
	if tip := find(KeySubservices, "chat").Tooltip; tip != "offered by h3 1.2.0, h2 1.0.0" {
		t.Errorf("chat tooltip %q", tip)
	}
	if tip := find(KeySubservices, "draw").Tooltip; tip != "shared whiteboard\noffered by this node 0.3.0" {
		t.Errorf("draw tooltip %q", tip)
	}
}

// TestBuildTopLevelFixed: whatever the state, the top level has the same
// keys in the same order (new top-level items could only be appended).
func TestBuildTopLevelFixed(t *testing.T) {
	want := []string{KeyStatus, KeyNotice, KeySep1, KeySubservices, KeyRunning, KeyPeers, KeySep2, KeyQuit}
	states := map[string]State{
		"zero":         {},
		"no node":      {Problem: "not running"},
		"full":         sampleState(),
		"disconnected": func() State { s := sampleState(); s.Connected = false; return s }(),
		"notice":       func() State { s := sampleState(); s.Notice = "chat 1.2.0 started"; return s }(),
	}
	for name, st := range states {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, it := range Build(st).Children {
				got = append(got, it.Key)
				if it.Key == KeySubservices || it.Key == KeyRunning || it.Key == KeyPeers {
					if len(it.Children) == 0 {
						t.Errorf("%s has no children (want a placeholder)", it.Key)
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("top level %v, want %v", got, want)
			}
		})
	}
}

func TestBuildStates(t *testing.T) {
	tests := []struct {
		name string
		edit func(*State)
		path []string // labels from the top
		want string   // label prefix of the last element
		off  bool     // disabled
	}{
		{"connecting", func(s *State) { *s = State{} }, []string{"Nearby"}, "Nearby: connecting…", true},
		{"no node", func(s *State) { *s = State{Problem: "not running"} }, []string{"Nearby"}, "Nearby: no node (not running)", true},
		{"unreachable", func(s *State) { s.Connected = false }, []string{"Nearby"}, "Nearby: desk unreachable, retrying…", true},
		{"unreachable disables runs", func(s *State) { s.Connected = false }, []string{"Subservices", "draw"}, "draw 0.3.0", true},
		{"busy", func(s *State) { s.Activity["draw"] = Activity{Busy: true, Text: "fetching 0.3.0 from h3 45%"} },
			[]string{"Subservices", "draw"}, "draw 0.3.0 (local) — fetching 0.3.0 from h3 45%", true},
		{"notice", func(s *State) { s.Notice = "chat: update failed (hash mismatch); running installed 1.0.0\nhint: x" },
			[]string{"chat: update failed"}, "chat: update failed (hash mismatch); running installed 1.0.0", true},
		{"label", func(s *State) { s.Listing.Subservices[0].Label = "Whiteboard" }, []string{"Subservices", "Whiteboard"}, "Whiteboard [draw] 0.3.0 (local)", false},
		{"installed not running", func(s *State) { s.Listing.Subservices[1].Running = "" }, []string{"Subservices", "chat"}, "chat 1.2.0 (network, installed 1.0.0, update available)", false},
		{"nothing", func(s *State) { s.Listing.Subservices = nil; s.Plugins = nil; s.Peers = nil },
			[]string{"Subservices (0)", "nothing published"}, "nothing published on the mesh yet", true},
		{"nothing running", func(s *State) { s.Plugins = nil }, []string{"Running (0)", "nothing"}, "nothing running", true},
		{"no peers", func(s *State) { s.Peers = nil }, []string{"Peers (0)", "no"}, "no peers", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := sampleState()
			tt.edit(&st)
			if st.Activity == nil {
				st.Activity = map[string]Activity{}
			}
			ui := newFakeUI()
			NewMenu(ui).Apply(Build(st))
			_, it, ok := ui.find(tt.path...)
			if !ok {
				t.Fatalf("no visible item %v in\n%s", tt.path, ui.render())
			}
			if !strings.HasPrefix(it.Label, tt.want) || it.Disabled != tt.off {
				t.Fatalf("item %q disabled=%v, want %q disabled=%v", it.Label, it.Disabled, tt.want, tt.off)
			}
		})
	}
}

func TestTitle(t *testing.T) {
	st := sampleState()
	if got, want := Title(st), "Nearby: desk, 2 peers, 2 running"; got != want {
		t.Errorf("Title %q, want %q", got, want)
	}
	st.Connected = false
	if got, want := Title(st), "Nearby: desk (unreachable)"; got != want {
		t.Errorf("Title %q, want %q", got, want)
	}
	if got := Title(State{}); got != "Nearby" {
		t.Errorf("Title %q", got)
	}
}

func TestOneLine(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"short", "short"},
		{"two\nlines", "two"},
		{strings.Repeat("é", 10), "éééé…"},
	} {
		if got := oneLine(tt.in, 5); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
