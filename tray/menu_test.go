package tray

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func tree(children ...*Item) *Item { return &Item{Children: children} }

func leaf(key, label string) *Item { return &Item{Key: key, Label: label} }

func sub(key, label string, children ...*Item) *Item {
	if children == nil {
		children = []*Item{}
	}
	return &Item{Key: key, Label: label, Children: children}
}

func TestMenuFirstApplyInOrder(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	m.Apply(tree(leaf("a", "A"), &Item{Key: "s", Separator: true}, sub("list", "List", leaf("x", "X"), leaf("y", "Y")), leaf("q", "Quit")))
	want := "A\n---\nList\n  X\n  Y\nQuit\n"
	if got := ui.render(); got != want {
		t.Fatalf("menu:\n%s\nwant:\n%s", got, want)
	}
	if m.Size() != 6 {
		t.Fatalf("Size %d, want 6", m.Size())
	}
}

func TestMenuSameTreeNoOps(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	build := func() *Item {
		return tree(leaf("a", "A"), sub("list", "List", leaf("x", "X")), &Item{Key: "n", Label: "", Hidden: true})
	}
	m.Apply(build())
	ops := ui.ops
	m.Apply(build())
	if ui.ops != ops {
		t.Fatalf("re-applying the same tree made %d backend calls", ui.ops-ops)
	}
}

func TestMenuHideAndReuse(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	m.Apply(tree(sub("list", "List", leaf("a", "A"), leaf("b", "B"), leaf("c", "C"))))
	hb, _, _ := ui.find("List", "B")
	hc, _, _ := ui.find("List", "C")

	// b goes away: its item is hidden, c keeps its item.
	m.Apply(tree(sub("list", "List", leaf("a", "A"), leaf("c", "C"))))
	if got, want := ui.render(), "List\n  A\n  C\n"; got != want {
		t.Fatalf("after removal:\n%s\nwant:\n%s", got, want)
	}
	if h, _, _ := ui.find("List", "C"); h != hc {
		t.Fatalf("c moved from handle %d to %d", hc, h)
	}
	if _, ok := m.Lookup(hb); ok {
		t.Fatal("the hidden item of b still resolves a click")
	}

	// d arrives: it takes b's hidden item instead of a new one.
	adds := ui.adds
	m.Apply(tree(sub("list", "List", leaf("a", "A"), leaf("c", "C"), leaf("d", "D"))))
	if ui.adds != adds {
		t.Fatalf("a new key appended %d items although one was free", ui.adds-adds)
	}
	if h, _, _ := ui.find("List", "D"); h != hb {
		t.Fatalf("d got handle %d, want b's free handle %d", h, hb)
	}
	it, ok := m.Lookup(hb)
	if !ok || it.Key != "d" {
		t.Fatalf("click on the reused item resolves to %+v %v, want d", it, ok)
	}
}

func TestMenuKeyKeepsItemWhenOthersComeFirst(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	m.Apply(tree(sub("list", "L", leaf("b", "B"), leaf("c", "C"))))
	hc, _, _ := ui.find("L", "C")
	m.Apply(tree(sub("list", "L", leaf("c", "C"))))
	// a sorts before c and is new: it must not steal c's item.
	m.Apply(tree(sub("list", "L", leaf("a", "A"), leaf("c", "C"))))
	if h, _, _ := ui.find("L", "C"); h != hc {
		t.Fatalf("c moved from %d to %d", hc, h)
	}
}

func TestMenuCheckableKindIsFixed(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	m.Apply(tree(sub("l", "L", leaf("a", "A"))))
	// The same key, now checkable: it needs another item (fakeUI panics on
	// an Update that changes checkability).
	m.Apply(tree(sub("l", "L", &Item{Key: "a", Label: "A", Checkable: true, Checked: true})))
	if got, want := ui.render(), "L\n  A [x]\n"; got != want {
		t.Fatalf("menu:\n%s\nwant:\n%s", got, want)
	}
}

func TestMenuHiddenItemKeepsItsPlace(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	build := func(notice string) *Item {
		return tree(leaf("status", "S"), &Item{Key: "notice", Label: notice, Hidden: notice == ""}, leaf("quit", "Q"))
	}
	m.Apply(build(""))
	if got, want := ui.render(), "S\nQ\n"; got != want {
		t.Fatalf("menu:\n%s\nwant:\n%s", got, want)
	}
	m.Apply(build("done"))
	if got, want := ui.render(), "S\ndone\nQ\n"; got != want {
		t.Fatalf("menu:\n%s\nwant:\n%s", got, want)
	}
}

func TestMenuLookup(t *testing.T) {
	ui := newFakeUI()
	m := NewMenu(ui)
	run := Action{Kind: ActionRun, Name: "chat"}
	m.Apply(tree(
		&Item{Key: "off", Label: "off", Disabled: true, Action: run},
		sub("list", "L", &Item{Key: "chat", Label: "chat", Action: run}),
	))
	hOff, _, _ := ui.find("off")
	hChat, _, _ := ui.find("L", "chat")
	if _, ok := m.Lookup(hOff); ok {
		t.Error("a disabled item resolves a click")
	}
	if it, ok := m.Lookup(hChat); !ok || it.Action != run {
		t.Errorf("Lookup(chat) = %+v, %v", it, ok)
	}
	if _, ok := m.Lookup(999); ok {
		t.Error("an unknown handle resolves a click")
	}
	// Hide the parent: its children stop resolving clicks.
	m.Apply(tree(&Item{Key: "off", Label: "off", Disabled: true}, &Item{Key: "list", Label: "L", Hidden: true, Children: []*Item{{Key: "chat", Label: "chat", Action: run}}}))
	if _, ok := m.Lookup(hChat); ok {
		t.Error("an item under a hidden submenu resolves a click")
	}
}

// TestMenuChurn applies random trees and checks that the backend shows
// exactly the model each time and never holds more items per parent than
// the largest list that parent ever had.
func TestMenuChurn(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ui := newFakeUI()
	m := NewMenu(ui)
	maxLen := map[string]int{} // list/kind -> longest list of that kind
	for round := range 300 {
		root := tree(leaf("status", fmt.Sprint("status ", round)))
		for _, name := range []string{"subs", "running"} {
			s := sub(name, name)
			keys := r.Perm(12)[:r.IntN(8)]
			for _, k := range keys {
				it := &Item{Key: fmt.Sprint("k", k), Label: fmt.Sprintf("item %d v%d", k, r.IntN(3)), Disabled: r.IntN(4) == 0, Checkable: k%2 == 0, Checked: r.IntN(2) == 0}
				if name == "running" {
					it.Children = []*Item{{Key: "stop", Label: "Stop"}}
					for j := range r.IntN(3) {
						it.Children = append(it.Children, &Item{Key: fmt.Sprint("m", j), Label: fmt.Sprint("menu ", j), Checkable: true})
					}
				}
				s.Children = append(s.Children, it)
			}
			n := map[bool]int{}
			for _, it := range s.Children {
				n[it.Checkable]++
			}
			for kind, c := range n {
				k := fmt.Sprint(name, kind)
				maxLen[k] = max(maxLen[k], c)
			}
			root.Children = append(root.Children, s)
		}
		m.Apply(root)
		if got, want := ui.visibleTree(), modelTree(root); got != want {
			t.Fatalf("round %d: backend shows\n%s\nmodel is\n%s", round, got, want)
		}
	}
	ui.mu.Lock()
	for _, top := range ui.top {
		if top.item.Key == "status" {
			continue
		}
		// Each list holds no more items of a kind (checkable or not) than
		// the most it ever had to show at once.
		n := map[bool]int{}
		for _, c := range top.children {
			n[c.item.Checkable]++
		}
		for kind, c := range n {
			if k := fmt.Sprint(top.item.Key, kind); c > maxLen[k] {
				t.Errorf("%s holds %d items of checkable=%v; it never showed more than %d", top.item.Key, c, kind, maxLen[k])
			}
		}
	}
	ui.mu.Unlock()
	if !strings.Contains(ui.render(), "status 299") {
		t.Error("the last status did not show")
	}
}
