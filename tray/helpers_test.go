package tray

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// fakeUI is a Backend and UI that keeps the items it was given, like
// fyne.io/systray does: append-only, with hide and show.
type fakeUI struct {
	mu     sync.Mutex
	items  map[Handle]*fakeItem
	top    []*fakeItem
	next   Handle
	ops    int // Add, AddSeparator, Update, Hide, Show calls
	adds   int
	title  string
	clicks chan Handle
	// changed is signalled (non-blocking) after every call.
	changed chan struct{}
}

type fakeItem struct {
	h        Handle
	sep      bool
	item     Item
	hidden   bool
	children []*fakeItem
}

func newFakeUI() *fakeUI {
	return &fakeUI{items: map[Handle]*fakeItem{}, clicks: make(chan Handle, 16), changed: make(chan struct{}, 1)}
}

func (f *fakeUI) touch() {
	f.ops++
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeUI) appendTo(parent Handle, it *fakeItem) {
	if parent == 0 {
		f.top = append(f.top, it)
		return
	}
	p := f.items[parent]
	if p == nil {
		panic(fmt.Sprintf("fakeUI: add to unknown parent %d", parent))
	}
	p.children = append(p.children, it)
}

func (f *fakeUI) Add(parent Handle, it *Item) Handle {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	fi := &fakeItem{h: f.next, item: *it}
	fi.item.Children = nil
	f.items[f.next] = fi
	f.appendTo(parent, fi)
	f.adds++
	f.touch()
	return f.next
}

func (f *fakeUI) AddSeparator(parent Handle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appendTo(parent, &fakeItem{sep: true})
	f.adds++
	f.touch()
}

func (f *fakeUI) get(h Handle) *fakeItem {
	fi := f.items[h]
	if fi == nil {
		panic(fmt.Sprintf("fakeUI: unknown handle %d", h))
	}
	return fi
}

func (f *fakeUI) Update(h Handle, it *Item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi := f.get(h)
	if fi.item.Checkable != it.Checkable {
		panic("fakeUI: Update changed whether an item is checkable")
	}
	fi.item = *it
	fi.item.Children = nil
	f.touch()
}

func (f *fakeUI) Hide(h Handle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(h).hidden = true
	f.touch()
}

func (f *fakeUI) Show(h Handle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(h).hidden = false
	f.touch()
}

func (f *fakeUI) Clicks() <-chan Handle { return f.clicks }

func (f *fakeUI) SetTitle(t string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.title = t
	f.touch()
}

// render returns the visible menu as indented lines "label" (separators as
// "---"), in backend order.
func (f *fakeUI) render() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	var walk func(items []*fakeItem, depth int)
	walk = func(items []*fakeItem, depth int) {
		for _, it := range items {
			if it.hidden {
				continue
			}
			b.WriteString(strings.Repeat("  ", depth))
			switch {
			case it.sep:
				b.WriteString("---")
			default:
				b.WriteString(it.item.Label)
				if it.item.Disabled {
					b.WriteString(" [disabled]")
				}
				if it.item.Checked {
					b.WriteString(" [x]")
				}
			}
			b.WriteByte('\n')
			walk(it.children, depth+1)
		}
	}
	walk(f.top, 0)
	return b.String()
}

// find returns the handle of the visible item whose label starts with
// prefix under the visible path of labels given by prefixes.
func (f *fakeUI) find(path ...string) (Handle, Item, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items := f.top
	var cur *fakeItem
	for _, p := range path {
		cur = nil
		for _, it := range items {
			if !it.hidden && !it.sep && strings.HasPrefix(it.item.Label, p) {
				cur = it
				break
			}
		}
		if cur == nil {
			return 0, Item{}, false
		}
		items = cur.children
	}
	return cur.h, cur.item, true
}

// visibleTree returns the visible tree as "key=label" lines sorted within
// each level, for comparison with a model tree regardless of slot order.
func (f *fakeUI) visibleTree() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var walk func(items []*fakeItem, prefix string) []string
	walk = func(items []*fakeItem, prefix string) []string {
		var out []string
		for _, it := range items {
			if it.hidden || it.sep {
				continue
			}
			p := prefix + "/" + it.item.Key
			out = append(out, fmt.Sprintf("%s=%s|%v|%v", p, it.item.Label, it.item.Disabled, it.item.Checked))
			out = append(out, walk(it.children, p)...)
		}
		return out
	}
	lines := walk(f.top, "")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// modelTree is visibleTree for a model.
func modelTree(root *Item) string {
	var walk func(items []*Item, prefix string) []string
	walk = func(items []*Item, prefix string) []string {
		var out []string
		seen := map[string]bool{}
		for _, it := range items {
			if it == nil || it.Hidden || it.Separator || seen[it.Key] {
				continue
			}
			seen[it.Key] = true
			p := prefix + "/" + it.Key
			out = append(out, fmt.Sprintf("%s=%s|%v|%v", p, it.Label, it.Disabled, it.Checked))
			out = append(out, walk(it.Children, p)...)
		}
		return out
	}
	lines := walk(root.Children, "")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
