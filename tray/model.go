package tray

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nearbymesh/nearby/internal/control"
)

// ActionKind says what picking a menu item does.
type ActionKind int

// The actions a menu item can carry.
const (
	ActionNone  ActionKind = iota // informational item
	ActionRun                     // POST /v1/run {Name}: fetch newer, install, start
	ActionStop                    // POST /v1/stop {Name}
	ActionClick                   // POST /v1/click {Plugin: Name, Item}
	ActionQuit                    // quit the tray (never the node)
)

// String returns the action's name, e.g. "run".
func (k ActionKind) String() string {
	switch k {
	case ActionNone:
		return "none"
	case ActionRun:
		return "run"
	case ActionStop:
		return "stop"
	case ActionClick:
		return "click"
	case ActionQuit:
		return "quit"
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is what happens when an item is picked.
type Action struct {
	Kind ActionKind
	// Name is the subservice (plugin) the action is about.
	Name string
	// Item is the plugin's own menu item id, for ActionClick.
	Item string
}

// Item is one entry of the menu model: a tree of items that Build derives
// from the control API's answers and Menu draws on a Backend.
type Item struct {
	// Key identifies the item among its siblings across rebuilds: the same
	// subservice, plugin or peer keeps the same key, so it keeps the same
	// item on screen.
	Key     string
	Label   string
	Tooltip string
	// Disabled items are greyed out; clicks on them are ignored.
	Disabled bool
	// Hidden items keep their place in the menu but are not shown. Items
	// that come and go at the top level are hidden rather than left out,
	// because an item that is new to the menu can only be appended at the
	// end of its level.
	Hidden bool
	// Checkable items show a check mark when Checked. Whether an item is
	// checkable is fixed when its slot is created (a systray limit), so it
	// depends only on the item's kind, never on its state.
	Checkable bool
	Checked   bool
	// Separator items are a line; they cannot be hidden (a systray limit),
	// so Build uses them only at fixed places of the top level.
	Separator bool
	Action    Action
	// Children, when non-nil, make the item a submenu.
	Children []*Item
}

// Activity is an action of the tray in flight (or just finished) for one
// subservice, shown on its item.
type Activity struct {
	// Busy is true while the action runs; the item is disabled meanwhile.
	Busy bool
	// Text is shown after the item's label, e.g. "fetching 1.2.0 from h3 45%".
	Text string
}

// State is everything the menu shows.
type State struct {
	// Connected is true while the tray holds an event stream from the node.
	Connected bool
	// Problem says why the node is not reachable, when it is not.
	Problem string
	// Have is true once the node answered at least once; the fields below
	// are its last answers.
	Have    bool
	Status  control.Status
	Listing control.Listing
	Plugins []control.Plugin
	Peers   []control.Peer
	// Activity holds the tray's own actions, by subservice name.
	Activity map[string]Activity
	// Notice is the outcome of the last action (or a node-side failure such
	// as an automatic update that did not work); empty hides its line.
	Notice string
}

// Keys of the top-level items, in menu order.
const (
	KeyStatus      = "status"
	KeyNotice      = "notice"
	KeySep1        = "sep1"
	KeySubservices = "subservices"
	KeyRunning     = "running"
	KeyPeers       = "peers"
	KeySep2        = "sep2"
	KeyQuit        = "quit"
	// KeyEmpty is the placeholder child of an empty submenu.
	KeyEmpty = "-"
	// KeyStop is the first child of a running plugin's submenu.
	KeyStop = "stop"
	// ItemKeyPrefix prefixes the keys of a plugin's own menu items.
	ItemKeyPrefix = "item:"
)

// Build returns the menu for st: a root item whose children are the top
// level. The shape of the top level never changes (so slots never move);
// lists that grow and shrink live in submenus.
func Build(st State) *Item {
	root := &Item{Key: "", Children: []*Item{}}
	add := func(it *Item) { root.Children = append(root.Children, it) }

	add(&Item{Key: KeyStatus, Label: statusLine(st), Tooltip: statusTooltip(st), Disabled: true})
	add(&Item{Key: KeyNotice, Label: oneLine(st.Notice, 120), Tooltip: st.Notice, Disabled: true, Hidden: st.Notice == ""})
	add(&Item{Key: KeySep1, Separator: true})
	add(subservicesMenu(st))
	add(runningMenu(st))
	add(peersMenu(st))
	add(&Item{Key: KeySep2, Separator: true})
	add(&Item{Key: KeyQuit, Label: "Quit tray", Tooltip: "Close this menu; the node keeps running", Action: Action{Kind: ActionQuit}})
	return root
}

// ShortID returns the first 8 characters of an id.
func ShortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func statusLine(st State) string {
	switch {
	case !st.Have && st.Problem != "":
		return "Nearby: no node (" + oneLine(st.Problem, 60) + ")"
	case !st.Have:
		return "Nearby: connecting…"
	case !st.Connected:
		return fmt.Sprintf("Nearby: %s unreachable, retrying…", st.Status.Node.Name)
	}
	return fmt.Sprintf("Nearby: %s · mesh %s · %s", st.Status.Node.Name, ShortID(st.Status.MeshID), plural(len(st.Peers), "peer", "peers"))
}

func statusTooltip(st State) string {
	if !st.Have {
		return st.Problem
	}
	s := st.Status
	t := fmt.Sprintf("node %s (%s), listening on %s, state %s", s.Node.Name, s.Node.ID, s.Listen, s.StateDir)
	if !st.Connected && st.Problem != "" {
		t += "; " + st.Problem
	}
	return t
}

// Title is the icon's title and tooltip text for st.
func Title(st State) string {
	switch {
	case !st.Have:
		return "Nearby"
	case !st.Connected:
		return "Nearby: " + st.Status.Node.Name + " (unreachable)"
	}
	running := 0
	for _, p := range st.Plugins {
		if active(p.State) {
			running++
		}
	}
	return fmt.Sprintf("Nearby: %s, %s, %d running", st.Status.Node.Name, plural(len(st.Peers), "peer", "peers"), running)
}

func subservicesMenu(st State) *Item {
	subs := st.Listing.Subservices
	m := &Item{Key: KeySubservices, Label: fmt.Sprintf("Subservices (%d)", len(subs)),
		Tooltip: "Everything the mesh offers; pick one to run it here (newest version first)"}
	for _, s := range sortedSubs(subs) {
		it := &Item{
			Key:      s.Name,
			Label:    subLabel(s, st.Activity[s.Name]),
			Tooltip:  subTooltip(s),
			Disabled: !st.Connected || st.Activity[s.Name].Busy,
			Action:   Action{Kind: ActionRun, Name: s.Name},
		}
		m.Children = append(m.Children, it)
	}
	if len(m.Children) == 0 {
		text := "nothing published on the mesh yet"
		if !st.Have {
			text = "(waiting for the node)"
		}
		m.Children = []*Item{{Key: KeyEmpty, Label: text, Disabled: true}}
	}
	return m
}

func sortedSubs(in []control.Subservice) []control.Subservice {
	out := append([]control.Subservice(nil), in...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// RunningMark starts the label of a subservice that runs on this node. A
// check box would look like a toggle, and clicking the item runs it (again),
// it never stops it.
const RunningMark = "▶ "

// CheckedMark starts the label of a plugin's menu item that is checked.
// Plugins say only whether an item is checked, not whether it is a check
// box, and an empty check box on a plain action would mislead; an item that
// became checkable would also need another slot (see Item.Checkable).
const CheckedMark = "✓ "

// subLabel is e.g. "▶ chat 1.2.0 (network, running 1.0.0, update available)".
func subLabel(s control.Subservice, a Activity) string {
	name := s.Name
	if s.Running != "" {
		name = RunningMark + name
	}
	if s.Label != "" && s.Label != s.Name {
		name = s.Label + " [" + s.Name + "]"
		if s.Running != "" {
			name = RunningMark + name
		}
	}
	var parts []string
	if s.Local != "" {
		parts = append(parts, "local")
	} else {
		parts = append(parts, "network")
	}
	switch {
	case s.Running != "" && s.Running != s.Newest:
		parts = append(parts, "running "+s.Running)
	case s.Running != "":
		parts = append(parts, "running")
	case s.Installed != "" && s.Installed != s.Newest:
		parts = append(parts, "installed "+s.Installed)
	case s.Installed != "":
		parts = append(parts, "installed")
	}
	if s.UpdateAvailable {
		parts = append(parts, "update available")
	}
	l := fmt.Sprintf("%s %s (%s)", name, s.Newest, strings.Join(parts, ", "))
	if a.Text != "" {
		l += " — " + a.Text
	}
	return l
}

func subTooltip(s control.Subservice) string {
	var where []string
	for _, o := range s.Offers {
		n := o.NodeName
		if o.Local {
			n = "this node"
		}
		where = append(where, n+" "+o.Version)
	}
	t := s.Description
	if len(where) > 0 {
		if t != "" {
			t += "\n"
		}
		t += "offered by " + strings.Join(where, ", ")
	}
	return t
}

// active reports whether a plugin in this state belongs under "Running".
func active(state string) bool {
	switch state {
	case "starting", "running", "backoff":
		return true
	}
	return false
}

func runningMenu(st State) *Item {
	m := &Item{Key: KeyRunning, Tooltip: "Plugins running on this node"}
	ps := append([]control.Plugin(nil), st.Plugins...)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	for _, p := range ps {
		if !active(p.State) {
			continue
		}
		label := p.Name + " " + p.Version
		if p.State != "running" {
			label += " (" + p.State + ")"
		}
		pm := &Item{Key: p.Name, Label: label, Disabled: !st.Connected,
			Tooltip: fmt.Sprintf("pid %d, %d restarts", p.PID, p.Restarts)}
		pm.Children = append(pm.Children, &Item{Key: KeyStop, Label: "Stop " + p.Name,
			Disabled: !st.Connected, Action: Action{Kind: ActionStop, Name: p.Name}})
		for _, mi := range p.Menu {
			label := oneLine(mi.Label, 128)
			if mi.Checked {
				label = CheckedMark + label
			}
			pm.Children = append(pm.Children, &Item{
				Key:      ItemKeyPrefix + mi.ID,
				Label:    label,
				Disabled: !mi.Enabled || !st.Connected,
				Action:   Action{Kind: ActionClick, Name: p.Name, Item: mi.ID},
			})
		}
		m.Children = append(m.Children, pm)
	}
	m.Label = fmt.Sprintf("Running (%d)", len(m.Children))
	if len(m.Children) == 0 {
		m.Children = []*Item{{Key: KeyEmpty, Label: "nothing running", Disabled: true}}
	}
	return m
}

func peersMenu(st State) *Item {
	m := &Item{Key: KeyPeers, Label: fmt.Sprintf("Peers (%d)", len(st.Peers)), Tooltip: "Nodes connected to this one"}
	ps := append([]control.Peer(nil), st.Peers...)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	for _, p := range ps {
		m.Children = append(m.Children, &Item{
			Key:      p.ID,
			Label:    fmt.Sprintf("%s — %s, %.1f ms, %s", p.Name, p.Addr, p.RTTMillis, plural(p.Subservices, "subservice", "subservices")),
			Tooltip:  "node " + p.ID,
			Disabled: true,
		})
	}
	if len(m.Children) == 0 {
		m.Children = []*Item{{Key: KeyEmpty, Label: "no peers", Disabled: true}}
	}
	return m
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// oneLine keeps the first line of s, at most max runes.
func oneLine(s string, max int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}
