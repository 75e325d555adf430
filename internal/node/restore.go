package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/fsutil"
)

// wantedFile, in the state directory, lists the plugins the user asked to
// run (nearby run, a tray click) and has not stopped since: a node that
// restarts (a reboot, systemd restarting it, an upgrade of nearby itself)
// starts them again.
const wantedFile = "running.json"

// wanted is the persisted set of plugins to run at start.
type wanted struct {
	mu   sync.Mutex
	path string
	set  wantedSet
}

// wantedSet is running.json.
type wantedSet struct {
	// Local are plugins run under the supervisor.
	Local []string `json:"local"`
	// Hosted are hosted plugins whose sessions this node serves.
	Hosted []string `json:"hosted"`
}

// loadWanted reads the state directory's running.json. A missing file is an
// empty set; an unreadable or corrupt one is reported and treated as empty,
// never fatal: the node must come up.
func loadWanted(stateDir string) (*wanted, error) {
	w := &wanted{path: filepath.Join(stateDir, wantedFile)}
	b, err := os.ReadFile(w.path)
	if errors.Is(err, fs.ErrNotExist) {
		return w, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &w.set)
	}
	if err != nil {
		w.set = wantedSet{}
		return w, fmt.Errorf("%s: %w (no plugins are restored; it is rewritten at the next run or stop)", w.path, err)
	}
	return w, nil
}

// snapshot returns a copy of the set.
func (w *wanted) snapshot() wantedSet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return wantedSet{Local: slices.Clone(w.set.Local), Hosted: slices.Clone(w.set.Hosted)}
}

// add records that name (hosted or not) should run at the next start.
func (w *wanted) add(name string, hosted bool) error {
	return w.update(func(s *wantedSet) {
		l := &s.Local
		if hosted {
			l = &s.Hosted
		}
		if !slices.Contains(*l, name) {
			*l = append(*l, name)
			slices.Sort(*l)
		}
	})
}

// remove records that name should not run at the next start.
func (w *wanted) remove(name string) error {
	return w.update(func(s *wantedSet) {
		del := func(v string) bool { return v == name }
		s.Local = slices.DeleteFunc(s.Local, del)
		s.Hosted = slices.DeleteFunc(s.Hosted, del)
	})
}

func (w *wanted) update(f func(*wantedSet)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	before, _ := json.MarshalIndent(w.set, "", "  ")
	f(&w.set)
	after, err := json.MarshalIndent(w.set, "", "  ")
	if err != nil || string(after) == string(before) {
		return err
	}
	return fsutil.WriteFileAtomic(w.path, append(after, '\n'), 0o644)
}

// rememberRun records a successful run; a failure to record it is logged:
// the plugin runs, it just will not come back after a restart.
func (n *Node) rememberRun(name string, hosted bool) {
	if err := n.wanted.add(name, hosted); err != nil {
		n.log.Warn("cannot record the plugin for the next start", "plugin", name, "err", err)
	}
}

// forgetRun records an explicit stop.
func (n *Node) forgetRun(name string) {
	if err := n.wanted.remove(name); err != nil {
		n.log.Warn("cannot record the stop for the next start", "plugin", name, "err", err)
	}
}

// restore starts, at node start, the installed current version of every
// plugin that ran when the node last stopped. Nothing is fetched here: the
// updater upgrades them as usual once peers offer newer versions. A plugin
// that is no longer installed is reported and forgotten.
func (n *Node) restore() {
	set := n.wanted.snapshot()
	n.restoreEach(set.Local, "plugin", n.start)
	n.restoreEach(set.Hosted, "hosted plugin", func(inst *distrib.Installed) error {
		_, err := n.serveHosted(inst)
		return err
	})
}

// restoreEach starts the current installed version of each of names with
// start; what is called a kind in the logs.
func (n *Node) restoreEach(names []string, kind string, start func(*distrib.Installed) error) {
	for _, name := range names {
		inst, ok := n.store.Current(name)
		if !ok {
			n.log.Warn("not restoring a "+kind+" that is no longer installed", "plugin", name)
			n.forgetRun(name)
			continue
		}
		if err := start(inst); err != nil {
			// Kept: the user asked for it; the next start tries again.
			n.log.Warn("cannot restore "+kind, "plugin", name, "version", inst.Version, "err", err)
			continue
		}
		n.log.Info("restored "+kind, "plugin", name, "version", inst.Version)
		n.hub.publish(control.Event{Type: control.EventMessage, Message: fmt.Sprintf("restored %s %s %s (it ran when the node last stopped)", kind, name, inst.Version)})
	}
}
