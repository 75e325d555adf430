package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/mesh"
)

// meshURL is the base URL of a peer's dist folder, served over mesh streams.
func meshURL(id mesh.NodeID) string { return "http://" + string(id) + ".http/" }

// removeFetched removes the temporary directory distrib.Fetch made.
func removeFetched(path string) { os.RemoveAll(filepath.Dir(path)) }

// api is the control API handler (see package control for the endpoints).
func (n *Node) api() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, 200, n.status())
	})
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, 200, n.peers())
	})
	mux.HandleFunc("GET /v1/discovered", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, 200, n.discovered())
	})
	mux.HandleFunc("GET /v1/ls", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, 200, n.listing(r.URL.Query().Get("pre") == "1"))
	})
	mux.HandleFunc("GET /v1/ps", func(w http.ResponseWriter, r *http.Request) {
		out := []control.Plugin{}
		for _, s := range n.sup.List() {
			out = append(out, pluginOf(s))
		}
		control.WriteJSON(w, 200, out)
	})
	mux.HandleFunc("GET /v1/logs/{name}", n.handleLogs)
	mux.HandleFunc("GET /v1/events", n.handleEvents)
	mux.HandleFunc("POST /v1/send", n.handleSend)
	mux.HandleFunc("POST /v1/broadcast", n.handleSend)
	mux.HandleFunc("POST /v1/fetch", n.handleFetch)
	mux.HandleFunc("POST /v1/run", n.handleFetch)
	mux.HandleFunc("POST /v1/stop", n.handleStop)
	mux.HandleFunc("POST /v1/publish", n.handlePublish)
	mux.HandleFunc("POST /v1/click", n.handleClick)
	mux.HandleFunc("GET /v1/clock", n.handleClock)
	mux.HandleFunc("GET /v1/trust", n.handleTrustList)
	mux.HandleFunc("POST /v1/trust", n.handleTrust)
	mux.HandleFunc("GET /v1/debug/runtime", n.handleDebugRuntime)
	n.sessionRoutes(mux)
	return mux
}

func (n *Node) status() control.Status {
	running := 0
	for _, s := range n.sup.List() {
		if s.State == supervisor.StateRunning {
			running++
		}
	}
	return control.Status{
		Node:      control.Node{ID: string(n.id.ID), Name: n.cfg.Name},
		MeshID:    n.cfg.Key.MeshID(),
		Listen:    n.mesh.Addr().String(),
		StateDir:  n.cfg.StateDir,
		DistDir:   n.cfg.DistDir,
		Peers:     len(n.mesh.Peers()),
		Plugins:   running,
		Started:   n.started,
		Version:   n.cfg.Version,
		Discovery: n.disc != nil,
		DistHTTP:  n.distURL,
	}
}

func (n *Node) peers() []control.Peer {
	out := []control.Peer{}
	for _, p := range n.mesh.Peers() {
		out = append(out, control.Peer{
			ID: string(p.ID), Name: p.Name, Addr: p.Addr, Dialed: p.Dialed, Since: p.Since,
			RTTMillis: float64(p.RTT.Microseconds()) / 1000, Subservices: len(p.Catalog.Entries),
			Sent: p.Sent, Received: p.Received, Dropped: p.Dropped,
		})
	}
	return out
}

// listing merges every offer on the mesh into one entry per subservice.
func (n *Node) listing(pre bool) control.Listing {
	byName := map[string]*control.Subservice{}
	entries := map[string][]distrib.IndexEntry{}
	for _, o := range n.offers() {
		e := o.entry
		s := byName[e.Name]
		if s == nil {
			s = &control.Subservice{Name: e.Name}
			byName[e.Name] = s
		}
		s.Offers = append(s.Offers, control.Offer{Node: string(o.node), NodeName: o.nodeName, Version: e.Version,
			SHA256: e.SHA256, Size: e.Size, Signer: e.Signer, Local: o.local})
		entries[e.Name] = append(entries[e.Name], e)
		if o.local && (s.Local == "" || distrib.Compare(e.Version, s.Local) > 0) {
			s.Local = e.Version
		}
	}
	out := control.Listing{Subservices: []control.Subservice{}, Invalid: []control.Invalid{}}
	for name, s := range byName {
		newest, ok := distrib.Newest(entries[name], name, "", pre)
		if !ok {
			continue // only prereleases, not asked for
		}
		s.Newest, s.Mode, s.Label, s.Description = newest.Version, newest.Mode, newest.Label, newest.Description
		if inst, ok := n.store.Current(name); ok {
			s.Installed = inst.Version
			s.UpdateAvailable = distrib.Compare(newest.Version, inst.Version) > 0
		}
		if st, ok := n.sup.Status(name); ok && st.State != supervisor.StateStopped {
			s.Running = st.Version
		}
		if v, ok := n.hostedRunning(name); ok {
			s.Running = v
		}
		sort.Slice(s.Offers, func(i, j int) bool {
			if c := distrib.Compare(s.Offers[i].Version, s.Offers[j].Version); c != 0 {
				return c > 0
			}
			return s.Offers[i].NodeName < s.Offers[j].NodeName
		})
		out.Subservices = append(out.Subservices, *s)
	}
	// Installed plugins nobody offers any more still show.
	for _, inst := range n.store.List() {
		if _, ok := byName[inst.Name]; ok {
			continue
		}
		s := control.Subservice{Name: inst.Name, Newest: inst.Version, Installed: inst.Version, Offers: []control.Offer{}}
		if inst.Manifest != nil {
			s.Mode, s.Label, s.Description = inst.Manifest.Mode, inst.Manifest.Label, inst.Manifest.Description
		}
		if st, ok := n.sup.Status(inst.Name); ok && st.State != supervisor.StateStopped {
			s.Running = st.Version
		}
		out.Subservices = append(out.Subservices, s)
	}
	sort.Slice(out.Subservices, func(i, j int) bool { return out.Subservices[i].Name < out.Subservices[j].Name })
	for _, inv := range n.dist.Index().Invalid {
		out.Invalid = append(out.Invalid, control.Invalid{File: inv.File, Error: inv.Error})
	}
	return out
}

func (n *Node) handleLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f, err := os.Open(n.sup.LogPath(name))
	if err != nil {
		control.WriteError(w, 404, fmt.Errorf("no log for %q", name), "`nearby ps` lists the plugins this node ran")
		return
	}
	defer f.Close()
	if t, _ := strconv.Atoi(r.URL.Query().Get("tail")); t > 0 {
		if fi, err := f.Stat(); err == nil && fi.Size() > int64(t) {
			f.Seek(fi.Size()-int64(t), io.SeekStart)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.Copy(w, f)
}

func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) {
	ch, cancel := n.hub.subscribe(256)
	defer cancel()
	s := control.NewStream(w)
	st := n.status()
	s.Send(control.Event{Type: control.EventHello, Peer: &st.Node, Message: "events follow"})
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-ch:
			if s.Send(e) != nil {
				return
			}
		case <-tick.C:
			// Keep idle streams alive through the client's idle timers.
			if s.Send(control.Event{Type: "tick"}) != nil {
				return
			}
		}
	}
}

func (n *Node) handleSend(w http.ResponseWriter, r *http.Request) {
	var req control.SendRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	if req.Subservice == "" || isReserved(req.Subservice) {
		control.WriteError(w, 400, fmt.Errorf("bad subservice name %q", req.Subservice), "subservice names are plugin names, e.g. chat")
		return
	}
	if r.URL.Path == "/v1/broadcast" {
		k := n.mesh.Broadcast(req.Subservice, req.Data)
		control.WriteJSON(w, 200, control.Result{OK: true, Count: k, Message: fmt.Sprintf("queued for %d peers", k)})
		return
	}
	to, err := n.resolvePeer(req.To)
	if err != nil {
		control.WriteError(w, 404, err, "`nearby peers` lists the connected nodes")
		return
	}
	if err := n.mesh.Send(to, req.Subservice, req.Data, 0); err != nil {
		control.WriteError(w, 503, err, "")
		return
	}
	control.WriteJSON(w, 200, control.Result{OK: true, Count: 1, Node: string(to)})
}

// resolvePeer accepts a node id, an id prefix of 8+ characters, or a name.
func (n *Node) resolvePeer(s string) (mesh.NodeID, error) {
	var match []mesh.PeerInfo
	for _, p := range n.mesh.Peers() {
		if string(p.ID) == s || p.Name == s || (len(s) >= 8 && len(s) < len(p.ID) && string(p.ID[:len(s)]) == s) {
			match = append(match, p)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("no connected peer %q", s)
	case 1:
		return match[0].ID, nil
	}
	return "", fmt.Errorf("%q names %d peers; use the node id", s, len(match))
}

func (n *Node) handleFetch(w http.ResponseWriter, r *http.Request) {
	var req control.FetchRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	if err := distrib.ValidName(req.Name); err != nil {
		control.WriteError(w, 400, err, "names are lowercase letters, digits and dashes, e.g. chat")
		return
	}
	run := r.URL.Path == "/v1/run"
	if n.hostedFetch(w, req, run) {
		return
	}
	s := control.NewStream(w)
	res, err := n.ensureInstalled(r.Context(), req, func(p control.Progress) {
		s.Send(control.Event{Type: control.EventProgress, Progress: &p})
	})
	if err != nil {
		cur, have := n.store.Current(req.Name)
		if !run || !have {
			s.Send(control.Event{Type: control.EventError, Error: &control.Error{Error: err.Error(), Hint: fetchHint(err)}})
			return
		}
		// A failed update leaves the installed version usable.
		s.Send(control.Event{Type: control.EventMessage, Message: fmt.Sprintf("update failed (%s); running installed %s", shortErr(err), cur.Version)})
		res = &fetchResult{inst: cur}
	}
	result := control.Result{OK: true, Name: res.inst.Name, Version: res.inst.Version, Node: res.from, Pinned: res.pinned}
	switch {
	case res.fetched && res.from == n.cfg.Name:
		result.Message = fmt.Sprintf("installed %s %s from this node's dist folder", res.inst.Name, res.inst.Version)
	case res.fetched:
		result.Message = fmt.Sprintf("installed %s %s from %s", res.inst.Name, res.inst.Version, res.from)
	default:
		result.Message = fmt.Sprintf("%s %s is already installed and newest", res.inst.Name, res.inst.Version)
	}
	if run {
		if err := n.start(res.inst); err != nil {
			s.Send(control.Event{Type: control.EventError, Error: &control.Error{Error: err.Error(), Hint: "`nearby logs " + req.Name + "` shows its output"}})
			return
		}
		result.Message += "; started"
		n.rememberRun(res.inst.Name, false)
	}
	s.Send(control.Event{Type: control.EventResult, Result: &result})
}

func fetchHint(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "`nearby ls` lists what the mesh offers"
	case errors.Is(err, distrib.ErrUntrustedSigner):
		return "the publisher key differs from the one pinned at first install; if the publisher really changed keys, run `nearby trust pin NAME SIGNER` (or `nearby trust unpin NAME`)"
	case errors.Is(err, distrib.ErrUnsigned):
		return "ask the publisher to sign it: `nearby pack DIR --sign`"
	case errors.Is(err, distrib.ErrDowngrade):
		return "pass --downgrade to install a lower version"
	}
	return ""
}

func (n *Node) handleStop(w http.ResponseWriter, r *http.Request) {
	var req control.NameRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	if n.hostedStop(w, req.Name) {
		return
	}
	if err := n.sup.Stop(req.Name); err != nil {
		control.WriteError(w, 404, err, "`nearby ps` lists running plugins")
		return
	}
	n.forgetRun(req.Name)
	control.WriteJSON(w, 200, control.Result{OK: true, Name: req.Name, Message: "stopped " + req.Name})
}

func (n *Node) handlePublish(w http.ResponseWriter, r *http.Request) {
	var req control.PublishRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	dest, err := distrib.Publish(req.Path, n.cfg.DistDir)
	if err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	control.WriteJSON(w, 200, control.Result{OK: true, Message: "published " + dest})
}

func (n *Node) handleTrustList(w http.ResponseWriter, r *http.Request) {
	control.WriteJSON(w, 200, n.trust.List())
}

func (n *Node) handleTrust(w http.ResponseWriter, r *http.Request) {
	var req control.TrustRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	if req.Remove {
		if err := n.trust.Unpin(req.Name); err != nil {
			control.WriteError(w, 400, err, "")
			return
		}
		control.WriteJSON(w, 200, control.Result{OK: true, Name: req.Name, Message: "removed the pin for " + req.Name})
		return
	}
	if err := n.trust.Pin(req.Name, req.Signer); err != nil {
		control.WriteError(w, 400, err, "a signer looks like the one `nearby pack --sign` prints")
		return
	}
	control.WriteJSON(w, 200, control.Result{OK: true, Name: req.Name, Message: "pinned " + req.Name + " to " + req.Signer})
}

func (n *Node) handleClick(w http.ResponseWriter, r *http.Request) {
	var req control.ClickRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	if err := n.sup.Click(req.Plugin, req.Item); err != nil {
		control.WriteError(w, 404, err, "`nearby ps --json` shows each running plugin's menu")
		return
	}
	control.WriteJSON(w, 200, control.Result{OK: true, Name: req.Plugin, Message: "clicked " + req.Item})
}

// handleClock asks every peer's dist server for its index and compares the
// answer's Date header with our clock, halfway through the round trip.
func (n *Node) handleClock(w http.ResponseWriter, r *http.Request) {
	peers := n.mesh.Peers()
	out := make([]control.PeerClock, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		out[i] = control.PeerClock{ID: string(p.ID), Name: p.Name}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodHead, meshURL(p.ID)+"index.json", nil)
			t0 := time.Now()
			resp, err := n.httpc.Do(req)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			resp.Body.Close()
			mid := t0.Add(time.Since(t0) / 2)
			d, err := http.ParseTime(resp.Header.Get("Date"))
			if err != nil {
				out[i].Error = "no Date header"
				return
			}
			// Date has 1 s resolution: compare with our clock truncated alike.
			out[i].OffsetSeconds = d.Sub(mid.Truncate(time.Second)).Seconds()
		})
	}
	wg.Wait()
	control.WriteJSON(w, 200, out)
}
