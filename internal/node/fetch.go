package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/mesh"
)

// offer is one archive available somewhere on the mesh.
type offer struct {
	entry    distrib.IndexEntry
	node     mesh.NodeID
	nodeName string
	local    bool
}

// offers lists every archive on the mesh: our dist folder and every peer's
// catalog.
func (n *Node) offers() []offer {
	var out []offer
	for _, e := range n.dist.Index().Entries {
		out = append(out, offer{entry: e, node: n.id.ID, nodeName: n.cfg.Name, local: true})
	}
	for _, p := range n.mesh.Peers() {
		for _, c := range p.Catalog.Entries {
			out = append(out, offer{entry: entryOf(c), node: p.ID, nodeName: p.Name})
		}
	}
	return out
}

func entryOf(c mesh.CatalogEntry) distrib.IndexEntry {
	return distrib.IndexEntry{
		Name: c.Name, Version: c.Version, SHA256: c.SHA256, Size: c.Size, Mode: c.Mode,
		Signer: c.Signer, Description: c.Description, Label: c.Label,
		File: c.Name + "-" + c.Version + ".tar.gz",
	}
}

// ErrNotFound is returned when no node offers the subservice asked for.
var ErrNotFound = errors.New("not found on the mesh")

// choose picks the newest offered version of name matching version.
func (n *Node) choose(name, version string, pre bool) (distrib.IndexEntry, []offer, error) {
	all := n.offers()
	var entries []distrib.IndexEntry
	for _, o := range all {
		if o.entry.Name == name {
			entries = append(entries, o.entry)
		}
	}
	want, ok := distrib.Newest(entries, name, version, pre)
	if !ok {
		what := name
		if version != "" {
			what += "@" + version
		}
		return want, nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	var holders []offer
	for _, o := range all {
		if o.entry.Name == name && o.entry.SHA256 == want.SHA256 {
			holders = append(holders, o)
		}
	}
	// Our own copy first, then peers in a stable order.
	sort.SliceStable(holders, func(i, j int) bool { return holders[i].local && !holders[j].local })
	return want, holders, nil
}

// fetchResult says what ensureInstalled did.
type fetchResult struct {
	inst    *distrib.Installed
	fetched bool   // a new version was installed
	pinned  string // publisher key pinned by this install
	from    string // node name it came from
}

// ensureInstalled makes sure the newest version of req is installed,
// fetching it from a peer if needed. Progress goes to progress.
func (n *Node) ensureInstalled(ctx context.Context, req control.FetchRequest, progress func(control.Progress)) (*fetchResult, error) {
	done, err := n.acquire(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	defer done()

	want, holders, err := n.choose(req.Name, req.Version, req.Pre)
	cur, have := n.store.Current(req.Name)
	if err != nil {
		if have && req.Version == "" {
			return &fetchResult{inst: cur}, nil
		}
		return nil, err
	}
	if have && cur.SHA256 == want.SHA256 {
		return &fetchResult{inst: cur}, nil
	}
	if have && distrib.Compare(cur.Version, want.Version) > 0 && !req.Downgrade {
		if req.Version == "" {
			return &fetchResult{inst: cur}, nil
		}
		return nil, fmt.Errorf("%s %s is installed and %s is lower: %w (pass --downgrade to install it anyway)", req.Name, cur.Version, want.Version, distrib.ErrDowngrade)
	}

	var path, origin, from, verified string
	if holders[0].local {
		path = filepath.Join(n.cfg.DistDir, holders[0].entry.File)
		origin, from = "local", n.cfg.Name
	} else {
		var sources []distrib.Source
		for _, h := range holders {
			sources = append(sources, distrib.Source{Node: h.nodeName, BaseURL: meshURL(h.node), Client: n.httpc})
		}
		sending := holders[0].nodeName // the source that sent the last bytes
		path, err = distrib.Fetch(ctx, want, sources, distrib.FetchOptions{
			TempDir: filepath.Join(n.cfg.StateDir, "tmp"),
			Progress: func(p distrib.Progress) {
				sending = p.Node
				cp := control.Progress{Name: p.Name, Version: p.Version, Node: p.Node, Done: p.Done, Total: p.Total}
				n.hub.publish(control.Event{Type: control.EventProgress, Progress: &cp})
				if progress != nil {
					progress(cp)
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("fetch %s %s: %w", want.Name, want.Version, err)
		}
		defer removeFetched(path)
		verified = want.SHA256 // Fetch checked it; Install re-checks what it extracts
		origin, from = string(holders[0].node), holders[0].nodeName
		for _, h := range holders {
			if h.nodeName == sending { // the one that finished it, when the first failed
				origin, from = string(h.node), h.nodeName
				break
			}
		}
	}
	inst, err := n.store.Install(path, distrib.InstallOptions{
		AllowDowngrade: req.Downgrade,
		Trust:          n.trust,
		Origin:         origin,
		SHA256:         verified,
	})
	if err != nil {
		return nil, fmt.Errorf("install %s %s: %w", want.Name, want.Version, err)
	}
	res := &fetchResult{inst: inst, fetched: true, from: from}
	if inst.NewPin {
		res.pinned = inst.Signer
		n.log.Info("pinned publisher key on first install", "plugin", req.Name, "signer", inst.Signer)
	}
	n.log.Info("installed", "plugin", inst.Name, "version", inst.Version, "from", from)
	n.hub.publish(control.Event{Type: control.EventInstall, Message: fmt.Sprintf("%s %s installed from %s", inst.Name, inst.Version, from)})
	return res, nil
}

// acquire waits until it holds the install claim on name (see claim).
// Several may be waiting when a claim is released (one per catalog event
// from the peers); only one gets it and the others wait again.
func (n *Node) acquire(ctx context.Context, name string) (release func(), err error) {
	for {
		release, wait := n.claim(name)
		if wait == nil {
			return release, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// claim serialises installs per plugin name. It returns a release func, or
// a channel to wait on when another install of name is in flight.
func (n *Node) claim(name string) (release func(), wait <-chan struct{}) {
	n.updMu.Lock()
	defer n.updMu.Unlock()
	if ch, ok := n.updating[name]; ok {
		return nil, ch
	}
	ch := make(chan struct{})
	n.updating[name] = ch
	return func() {
		n.updMu.Lock()
		delete(n.updating, name)
		n.updMu.Unlock()
		close(ch)
	}, nil
}

// start runs the installed version of name under the supervisor.
func (n *Node) start(inst *distrib.Installed) error {
	argv := inst.Manifest.Argv(runtime.GOOS)
	if len(argv) == 0 {
		return fmt.Errorf("%s %s: the manifest has no command for %s", inst.Name, inst.Version, runtime.GOOS)
	}
	return n.sup.Start(supervisor.Spec{Name: inst.Name, Subservice: inst.Manifest.SubserviceName(),
		Version: inst.Version, Dir: inst.Dir, Argv: argv})
}

// autoUpdate upgrades every running plugin for which the mesh offers a
// newer version, then restarts it into that version. A failed update leaves
// the running version alone. Only versions by the publisher pinned for the
// plugin are candidates: a newer archive signed by anyone else would be
// refused at install anyway, and choosing it would fetch it again at every
// catalog event and hide the publisher's own updates (the journey test's
// impostor).
func (n *Node) autoUpdate(ctx context.Context) {
	for _, st := range n.sup.List() {
		if st.State == supervisor.StateStopped || st.State == supervisor.StateFailed {
			continue
		}
		want, ok := n.newestTrusted(st.Name)
		if !ok || distrib.Compare(want.Version, st.Version) <= 0 {
			continue
		}
		res, err := n.ensureInstalled(ctx, control.FetchRequest{Name: st.Name, Version: want.Version}, nil)
		if err != nil {
			n.log.Warn("auto-update failed; the running version stays", "plugin", st.Name, "running", st.Version, "err", err)
			n.hub.publish(control.Event{Type: control.EventUpdateFailed, Message: fmt.Sprintf("update of %s failed: %v", st.Name, err)})
			continue
		}
		if res.inst.Version != st.Version {
			if err := n.start(res.inst); err != nil {
				n.log.Warn("restart into new version failed", "plugin", st.Name, "err", err)
				continue
			}
			n.log.Info("upgraded running plugin", "plugin", st.Name, "from", st.Version, "to", res.inst.Version)
		}
	}
}

// newestTrusted returns the newest release version of name on the mesh
// signed by the publisher pinned for name (any version when none is
// pinned).
func (n *Node) newestTrusted(name string) (distrib.IndexEntry, bool) {
	pin, pinned := n.trust.Get(name)
	var entries []distrib.IndexEntry
	for _, o := range n.offers() {
		if o.entry.Name == name && (!pinned || o.entry.Signer == pin) {
			entries = append(entries, o.entry)
		}
	}
	return distrib.Newest(entries, name, "", false)
}
