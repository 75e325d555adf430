package tray

// Handle names one item created on a Backend. 0 is the top level.
type Handle uint32

// Backend draws menu items. It mirrors what fyne.io/systray can do: items
// are only ever appended to their parent, can be updated, hidden and shown,
// and never move; separators cannot be changed once added. Package
// desktop implements it over fyne.io/systray. Menu calls it from one
// goroutine at a time.
type Backend interface {
	// Add appends a new item to parent (0: the top level) and returns its
	// handle, which is never 0. it.Checkable is fixed from now on.
	Add(parent Handle, it *Item) Handle
	// AddSeparator appends a separator to parent.
	AddSeparator(parent Handle)
	// Update sets the item's label, tooltip, enabled and checked state.
	Update(h Handle, it *Item)
	// Hide hides the item (and so its submenu).
	Hide(h Handle)
	// Show shows a hidden item again.
	Show(h Handle)
}

// Menu keeps a Backend's items in step with a model tree (see Build), with
// stable identity: an item with the same key under the same parent stays
// on the same slot, so a click always means what its label said. Slots
// that are no longer needed are hidden and reused for the next new key of
// the same kind under the same parent; new slots are appended only when no
// hidden one is free. So a menu that is rebuilt forever does not grow
// beyond the largest size it ever had.
//
// Menu is not safe for concurrent use: the tray's event loop owns it.
type Menu struct {
	b     Backend
	root  slot
	slots map[Handle]*slot
}

// slot is one item on the backend.
type slot struct {
	h        Handle
	sep      bool
	check    bool
	parent   *slot
	key      string // "" when free
	shown    bool   // visible on the backend
	cur      Item   // what the backend shows (Children unused)
	children []*slot
}

// NewMenu returns an empty menu drawn on b.
func NewMenu(b Backend) *Menu {
	return &Menu{b: b, slots: make(map[Handle]*slot)}
}

// Apply makes the backend show root's children as the top level.
func (m *Menu) Apply(root *Item) {
	m.apply(&m.root, root.Children)
}

func (m *Menu) apply(parent *slot, items []*Item) {
	// want maps each key of items to its first item: a key names one slot.
	want := make(map[string]*Item, len(items))
	for _, it := range items {
		if it != nil && want[it.Key] == nil {
			want[it.Key] = it
		}
	}
	// reserved reports whether slot s will keep its key in this pass.
	reserved := func(s *slot) bool {
		it := want[s.key]
		return s.key != "" && it != nil && sameKind(s, it)
	}
	used := make(map[*slot]bool, len(items))
	for _, it := range items {
		if it == nil || want[it.Key] != it {
			continue
		}
		var s *slot
		for _, c := range parent.children {
			if c.key == it.Key && sameKind(c, it) {
				s = c
				break
			}
		}
		if s == nil {
			// A new key: the first free slot of its kind, else a new one.
			for _, c := range parent.children {
				if !used[c] && !c.sep && sameKind(c, it) && !reserved(c) {
					s = c
					break
				}
			}
		}
		if s == nil {
			s = m.add(parent, it)
		}
		used[s] = true
		m.set(s, it)
	}
	for _, s := range parent.children {
		if used[s] || s.sep {
			continue // separators cannot be hidden; they stay
		}
		s.key = ""
		if s.shown {
			m.b.Hide(s.h)
			s.shown = false
		}
	}
}

func sameKind(s *slot, it *Item) bool { return s.sep == it.Separator && s.check == it.Checkable }

// add appends a new slot for it to parent.
func (m *Menu) add(parent *slot, it *Item) *slot {
	s := &slot{parent: parent, sep: it.Separator, check: it.Checkable}
	if it.Separator {
		m.b.AddSeparator(parent.h)
	} else {
		s.cur = *it
		s.cur.Children = nil
		s.cur.Hidden = false
		s.h = m.b.Add(parent.h, &s.cur)
		s.shown = true
		m.slots[s.h] = s
	}
	parent.children = append(parent.children, s)
	return s
}

// set shows it on slot s.
func (m *Menu) set(s *slot, it *Item) {
	s.key = it.Key
	if s.sep {
		return
	}
	next := *it
	next.Children = nil
	next.Hidden = false
	if !sameItem(next, s.cur) {
		m.b.Update(s.h, &next)
		s.cur = next
	}
	if it.Hidden && s.shown {
		m.b.Hide(s.h)
		s.shown = false
	} else if !it.Hidden && !s.shown {
		m.b.Show(s.h)
		s.shown = true
	}
	if it.Children != nil {
		m.apply(s, it.Children)
	} else if len(s.children) > 0 {
		m.apply(s, nil)
	}
}

// Lookup returns the item shown on h, if it is visible, enabled, and not a
// separator. Clicks are resolved with it: the backend delivers clicks on
// disabled and hidden items too (fyne.io/systray does), and they must do
// nothing.
func (m *Menu) Lookup(h Handle) (Item, bool) {
	s := m.slots[h]
	if s == nil || s.key == "" || !s.shown || s.cur.Disabled || !m.visible(s) {
		return Item{}, false
	}
	return s.cur, true
}

// visible reports whether every ancestor of s is shown too.
func (m *Menu) visible(s *slot) bool {
	for p := s.parent; p != nil && p != &m.root; p = p.parent {
		if !p.shown || p.key == "" {
			return false
		}
	}
	return true
}

// sameItem compares what a backend shows of two items.
func sameItem(a, b Item) bool {
	return a.Key == b.Key && a.Label == b.Label && a.Tooltip == b.Tooltip && a.Disabled == b.Disabled &&
		a.Checkable == b.Checkable && a.Checked == b.Checked && a.Separator == b.Separator && a.Action == b.Action
}

// Size returns the number of slots (items and separators) created so far.
func (m *Menu) Size() int {
	n := 0
	var walk func(p *slot)
	walk = func(p *slot) {
		for _, c := range p.children {
			n++
			walk(c)
		}
	}
	walk(&m.root)
	return n
}
