// Package node wires one Nearby node together: discovery, the mesh, the
// dist folder, the plugin supervisor and the control API. Run starts them in
// that order and stops them in reverse.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nearbymesh/nearby/discovery"
	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/session"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/mesh"
)

// Config is everything `nearby up` decides. The zero value of each field
// means its default.
type Config struct {
	// StateDir holds the node key, the mesh key, installed plugins, logs and
	// the control socket. Required.
	StateDir string
	// DistDir is the folder of published archives; default StateDir/dist.
	DistDir string
	// Name is the display name; default the host name.
	Name string
	// Listen is the mesh address; default ":0" (any free port).
	Listen string
	// Key is the mesh key. Required (cmd/nearby loads or creates it).
	Key mesh.Key
	// StaticPeers are host:port addresses dialled without discovery.
	StaticPeers []string
	// DistHTTP, if set, also serves the dist folder read-only on this address.
	DistHTTP string
	// NoDiscovery turns mDNS off (static peers only).
	NoDiscovery bool
	// Version is the program version shown in status.
	Version string
	// Logger receives the node's logs; default slog.Default().
	Logger *slog.Logger
	// Ready, if set, is called once every part is up, with the status.
	Ready func(control.Status)
	// NoRestore skips restarting, at start, the plugins that ran when the
	// node last stopped (running.json in the state directory).
	NoRestore bool
	// IdleTimeout closes a keep-alive connection to the control socket or
	// to a dist server that has been idle this long (default 2 minutes), so
	// that a long-lived client that opens a connection per request cannot
	// make the node grow. Event streams are not idle.
	IdleTimeout time.Duration
}

// defaultIdleTimeout is Config.IdleTimeout's default.
const defaultIdleTimeout = 2 * time.Minute

// Node is a running node. Its methods are safe for concurrent use.
type Node struct {
	cfg    Config
	log    *slog.Logger
	id     *mesh.Identity
	mesh   *mesh.Mesh
	disc   *discovery.Service
	dist   *distrib.Dist
	store  *distrib.Store
	trust  *distrib.TrustStore
	sup    *supervisor.Supervisor
	sess   *sessions // hosted sessions (session.go)
	wanted *wanted   // plugins to start again at the next start (restore.go)
	// noBatchFeature makes the node announce no featureBatch, as nodes
	// before batch payloads did (tests of mixed meshes).
	noBatchFeature bool
	// noBinFeature makes the node announce no featureBin, as nodes before
	// bin payloads did (tests of mixed meshes).
	noBinFeature bool
	hub          *hub
	httpc        *http.Client
	started      time.Time
	distURL      string

	updMu    sync.Mutex
	updating map[string]chan struct{} // name -> done, for fetches in flight

	// updates wakes runUpdates (coalesced); updatesHosted says whether our
	// own dist folder changed too (hosted plugins restart from it).
	updates       chan struct{}
	updatesHosted atomic.Bool

	seenMu sync.Mutex
	seen   map[string]*control.Discovered // node id -> what mDNS or a peer told us
	// peerAddr is where connected (or once connected) peers listen: the
	// address we dialled, or the one their peer exchange gave (pex.go).
	peerAddr map[mesh.NodeID]netip.AddrPort
}

// Run starts a node and blocks until ctx is done, then shuts everything down
// and returns nil (or the first error that stopped a part early).
func Run(ctx context.Context, cfg Config) error {
	n, err := newNode(cfg)
	if err != nil {
		return err
	}
	return n.run(ctx)
}

func newNode(cfg Config) (*Node, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("node: no state directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DistDir == "" {
		cfg.DistDir = filepath.Join(cfg.StateDir, "dist")
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.Listen == "" {
		cfg.Listen = ":0"
	}
	for _, d := range []string{cfg.StateDir, cfg.DistDir, filepath.Join(cfg.StateDir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	id, err := mesh.LoadOrCreateIdentity(filepath.Join(cfg.StateDir, "node.key"))
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, id: id, hub: newHub(), updates: make(chan struct{}, 1),
		updating: make(map[string]chan struct{}), seen: make(map[string]*control.Discovered),
		peerAddr: make(map[mesh.NodeID]netip.AddrPort)}
	return n, nil
}

func (n *Node) run(ctx context.Context) (err error) {
	cfg := n.cfg
	log := n.log
	n.started = time.Now()

	// Control socket first: it refuses a second node on the same state dir.
	ctlLn, err := control.Listen(filepath.Join(cfg.StateDir, control.SocketName))
	if err != nil {
		return err
	}
	defer ctlLn.Close()

	if n.dist, err = distrib.OpenDist(cfg.DistDir, distrib.DistConfig{Logger: log}); err != nil {
		return err
	}
	if n.store, err = distrib.OpenStore(filepath.Join(cfg.StateDir, "plugins")); err != nil {
		return err
	}
	if n.trust, err = distrib.OpenTrust(filepath.Join(cfg.StateDir, "trust.json")); err != nil {
		return err
	}
	if n.wanted, err = loadWanted(cfg.StateDir); err != nil {
		log.Warn("cannot read the plugins to restore", "err", err)
	}

	rt := &router{log: log}
	n.sup, err = supervisor.New(supervisor.Config{
		SocketPath: filepath.Join(cfg.StateDir, "plugins.sock"),
		LogDir:     filepath.Join(cfg.StateDir, "logs"),
		Router:     rt,
		Logger:     log,
		Sessions:   sessionOpener{n},
	})
	if err != nil {
		return err
	}

	if err := n.initSessions(); err != nil {
		return err
	}

	httpLn := newConnListener()
	mcfg := mesh.DefaultConfig()
	mcfg.Identity = n.id
	mcfg.Key = cfg.Key
	mcfg.Name = cfg.Name
	mcfg.ListenAddr = cfg.Listen
	mcfg.StaticPeers = cfg.StaticPeers
	mcfg.Logger = log
	mcfg.OnMessage = n.onMessage
	if !n.noBatchFeature {
		mcfg.Features |= featureBatch
	}
	if !n.noBinFeature {
		mcfg.Features |= featureBin
	}
	mcfg.OnNack = func(k mesh.Nack) {
		n.sup.Nack(k.Subservice, k.ID, n.peerOf(k.From), k.Reason)
	}
	mcfg.Handlers = map[string]mesh.StreamHandler{
		"http":             func(from mesh.NodeID, c net.Conn) { httpLn.deliver(c) },
		session.Service:    n.serveSession,
		session.CtlService: n.serveSessionCtl,
	}
	if n.mesh, err = mesh.New(mcfg); err != nil {
		return err
	}
	rt.m = n.mesh
	rt.self = supervisor.Peer{ID: string(n.id.ID), Name: cfg.Name}
	n.httpc = &http.Client{Transport: &http.Transport{
		DialContext:         n.mesh.DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}}

	_, port, _ := net.SplitHostPort(n.mesh.Addr().String())
	portN, _ := strconv.Atoi(port)
	if !cfg.NoDiscovery {
		n.disc, err = discovery.New(discovery.Config{
			Instance: discovery.InstanceName(cfg.Name, n.id.ID.Short()),
			Port:     portN,
			Record:   n.record(),
			MeshID:   cfg.Key.MeshID(),
			Logger:   log,
		})
		if err != nil {
			n.mesh.Close()
			return err
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	part := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	part("dist", n.dist.Run)
	// The mesh outlives the sessions, so that presenters hear why they end.
	part("mesh", func(ctx context.Context) error { return n.mesh.Run(n.sessionsFirst(ctx)) })
	part("supervisor", n.sup.Run)
	if n.disc != nil {
		part("discovery", n.disc.Run)
		part("hints", n.pumpHints)
	}
	part("catalog", n.pumpCatalog)
	part("events", n.pumpMeshEvents)
	part("plugin-events", n.pumpPluginEvents)
	part("updates", n.runUpdates)

	idle := cmp.Or(cfg.IdleTimeout, defaultIdleTimeout)
	dsrv := &http.Server{Handler: n.dist.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}
	wg.Go(func() { dsrv.Serve(httpLn) })
	if cfg.DistHTTP != "" {
		ln, err := net.Listen("tcp", cfg.DistHTTP)
		if err != nil {
			errc <- fmt.Errorf("dist-http: %w", err)
			cancel()
		} else {
			n.distURL = "http://" + ln.Addr().String() + "/"
			psrv := &http.Server{Handler: n.dist.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}
			wg.Go(func() { psrv.Serve(ln) })
			wg.Go(func() { <-ctx.Done(); psrv.Close() })
		}
	}
	// Restored plugins are started before the control socket answers, so
	// that what `nearby ps` shows first is the node's real state.
	if !cfg.NoRestore {
		n.restore()
	}
	csrv := &http.Server{Handler: n.api(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}
	wg.Go(func() { csrv.Serve(ctlLn) })

	log.Info("node up", "node", n.id.ID, "name", cfg.Name, "listen", n.mesh.Addr().String(),
		"mesh", cfg.Key.MeshID(), "dist", cfg.DistDir, "state", cfg.StateDir, "discovery", n.disc != nil)
	if cfg.Ready != nil {
		cfg.Ready(n.status())
	}

	<-ctx.Done()
	log.Info("node shutting down", "node", n.id.ID)
	// Reverse order: stop accepting control requests, then plugins are
	// stopped by the supervisor, the mesh says bye, discovery withdraws.
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	csrv.Shutdown(sctx)
	scancel()
	csrv.Close()
	dsrv.Close()
	httpLn.Close()
	wg.Wait()
	n.httpc.CloseIdleConnections()
	n.mesh.Close()
	close(errc)
	for e := range errc {
		if err == nil {
			err = e
		}
	}
	log.Info("node stopped", "node", n.id.ID)
	return err
}

// record is our DNS-SD TXT content.
func (n *Node) record() discovery.Record {
	cat := n.localCatalog()
	r := discovery.Record{
		Proto:  discovery.ProtocolVersion,
		NodeID: string(n.id.ID),
		Name:   n.cfg.Name,
		MeshID: n.cfg.Key.MeshID(),
		Digest: cat.Digest(),
	}
	for _, e := range cat.Entries {
		r.Subservices = append(r.Subservices, discovery.Sub{Name: e.Name, Version: e.Version})
	}
	return r
}

func (n *Node) localCatalog() mesh.Catalog {
	var c mesh.Catalog
	if n.dist == nil {
		return c
	}
	for _, e := range n.dist.Index().Entries {
		c.Entries = append(c.Entries, mesh.CatalogEntry{
			Name: e.Name, Version: e.Version, SHA256: e.SHA256, Size: e.Size,
			Mode: e.Mode, Signer: e.Signer, Description: e.Description, Label: e.Label,
		})
	}
	return c
}

func (n *Node) pumpHints(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case h := <-n.disc.Hints():
			if n.noteHint(h) {
				n.gossipHint(h)
			}
			n.mesh.AddHint(mesh.Hint{ID: mesh.NodeID(h.Record.NodeID), Name: h.Record.Name, Addrs: h.AddrPorts()})
		}
	}
}

// noteHint records an mDNS sighting; it reports whether it is the first
// mDNS sighting of that node.
func (n *Node) noteHint(h discovery.Hint) (first bool) {
	n.seenMu.Lock()
	defer n.seenMu.Unlock()
	d := n.seen[h.Record.NodeID]
	if d == nil || d.Via != control.ViaMDNS {
		first = true
		if d == nil {
			d = &control.Discovered{ID: h.Record.NodeID, FirstSeen: h.Seen}
			n.seen[h.Record.NodeID] = d
		}
	}
	if first {
		d.FirstMDNS = h.Seen
	}
	d.Via = control.ViaMDNS
	d.Name, d.Instance, d.Port, d.LastSeen = h.Record.Name, h.Instance, h.Port, h.Seen
	d.Subservices, d.More = len(h.Record.Subservices), h.Record.More
	d.Addrs = d.Addrs[:0]
	for _, a := range h.Addrs {
		d.Addrs = append(d.Addrs, a.String())
	}
	return first
}

func (n *Node) discovered() []control.Discovered {
	n.seenMu.Lock()
	defer n.seenMu.Unlock()
	out := []control.Discovered{}
	for _, d := range n.seen {
		c := *d
		c.Addrs = append([]string(nil), d.Addrs...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pumpCatalog republishes our catalog to the mesh and to mDNS whenever the
// dist folder changes.
func (n *Node) pumpCatalog(ctx context.Context) error {
	n.mesh.SetCatalog(n.localCatalog())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.dist.Changes():
			cat := n.localCatalog()
			n.mesh.SetCatalog(cat)
			if n.disc != nil {
				n.disc.Update(n.record())
			}
			n.hub.publish(control.Event{Type: control.EventDist, Message: fmt.Sprintf("%d archives, %d invalid", len(cat.Entries), len(n.dist.Index().Invalid))})
			n.kickUpdates(true)
		}
	}
}

// kickUpdates asks runUpdates to look for newer versions of what runs
// here; many kicks while it works make one more pass, not many.
func (n *Node) kickUpdates(hosted bool) {
	if hosted {
		n.updatesHosted.Store(true)
	}
	select {
	case n.updates <- struct{}{}:
	default:
	}
}

// runUpdates upgrades running plugins (and restarts hosted ones whose dist
// archive changed) one pass at a time, so catalog bursts cost one pass.
func (n *Node) runUpdates(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.updates:
			n.autoUpdate(ctx)
			if n.updatesHosted.Swap(false) {
				n.updateHosted()
			}
		}
	}
}

func (n *Node) pumpMeshEvents(ctx context.Context) error {
	ch, cancel := n.mesh.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-ch:
			p := &control.Node{ID: string(e.Peer), Name: e.Name}
			switch e.Type {
			case mesh.EventPeerUp:
				n.sendPex(e.Peer)
				n.pexPeerUp(e.Peer)
				n.sup.PeerEvent(true, supervisor.Peer{ID: p.ID, Name: p.Name})
				n.hub.publish(control.Event{Type: control.EventPeerUp, Peer: p, Time: e.Time})
			case mesh.EventPeerDown:
				n.sessionsPeerDown(e.Peer, e.Name)
				n.sup.PeerEvent(false, supervisor.Peer{ID: p.ID, Name: p.Name})
				n.hub.publish(control.Event{Type: control.EventPeerDown, Peer: p, Reason: e.Reason, Time: e.Time})
			case mesh.EventRejected:
				// Wrong mesh key, wrong identity, old protocol: say so, it is
				// what a user debugging "why don't they connect" needs.
				n.log.Warn("connection rejected", "peer", e.Peer, "name", e.Name, "addr", e.Addr, "reason", e.Reason)
				n.hub.publish(control.Event{Type: control.EventRejected, Peer: p, Reason: e.Reason, Time: e.Time})
			case mesh.EventCatalog:
				n.hub.publish(control.Event{Type: control.EventCatalog, Peer: p, Time: e.Time})
				n.kickUpdates(false)
			}
		}
	}
}

func (n *Node) pumpPluginEvents(ctx context.Context) error {
	ch, cancel := n.sup.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-ch:
			p := pluginOf(e.Status)
			n.hub.publish(control.Event{Type: control.EventPlugin, Plugin: &p})
		}
	}
}

func (n *Node) onMessage(m mesh.Message) error {
	if m.Subservice == pexSubservice {
		n.onPex(m.From, m.Payload)
		return nil
	}
	err := n.sup.Deliver(n.peerOf(m.From), m.Subservice, m.Payload, m.Broadcast)
	if errors.Is(err, supervisor.ErrNotRunning) {
		return fmt.Errorf("subservice %q is not running on node %s", m.Subservice, n.cfg.Name)
	}
	return err
}

func (n *Node) peerOf(id mesh.NodeID) supervisor.Peer {
	p := supervisor.Peer{ID: string(id)}
	p.Name, _ = n.mesh.PeerName(id)
	return p
}

// router lets the supervisor reach the mesh.
type router struct {
	m    *mesh.Mesh
	self supervisor.Peer
	log  *slog.Logger
}

func (r *router) Self() supervisor.Peer { return r.self }

func (r *router) Peers() []supervisor.Peer {
	var out []supervisor.Peer
	if r.m == nil { // the supervisor is built before the mesh
		return out
	}
	for _, p := range r.m.Peers() {
		out = append(out, supervisor.Peer{ID: string(p.ID), Name: p.Name})
	}
	return out
}

// featureBatch is the mesh feature bit (mesh.Config.Features) of a node
// that takes batch payloads (docs/WIRE.md §9). A batch for a peer without
// it is sent as one mesh message per value instead.
const featureBatch uint16 = 1 << 0

// featureBin is the mesh feature bit of a node that takes bin payloads
// (docs/WIRE.md §9). A bin payload for a peer without it is sent as a batch
// (or, to a node without batches either, one message per value) when
// every message in it is JSON, and fails otherwise.
const featureBin uint16 = 1 << 1

// legacy reports whether peer to cannot take batch payloads.
func (r *router) legacy(to mesh.NodeID) bool {
	return r.lacks(to, featureBatch)
}

// lacks reports whether connected peer to did not announce feature bit f.
func (r *router) lacks(to mesh.NodeID, f uint16) bool {
	pf, ok := r.m.PeerFeatures(to)
	return ok && pf&f == 0
}

// binFor returns payload in a form peer to takes: a bin payload becomes a
// batch for a peer without featureBin. The error says why it cannot.
func (r *router) binFor(to mesh.NodeID, payload []byte) ([]byte, error) {
	if !supervisor.IsBinPayload(payload) || !r.lacks(to, featureBin) {
		return payload, nil
	}
	p, err := supervisor.BinAsBatch(payload)
	if err != nil {
		return nil, fmt.Errorf("node %s runs a nearby without binary messages, so they travel to it as JSON: %w; send JSON, or update that node", to, err)
	}
	return p, nil
}

// split sends the values of a batch payload one by one to a peer that
// cannot take batches, with broadcast's marking, all under the batch's
// mesh id (so a nack of any of them reports the batch's range, once). It
// stops at the first error.
func (r *router) split(to mesh.NodeID, sub string, values iter.Seq[[]byte], id uint64, broadcast bool) error {
	sent, total := 0, 0
	var err error
	for v := range values {
		total++
		if err != nil {
			continue
		}
		if broadcast {
			err = r.m.BroadcastTo(to, sub, v)
		} else {
			err = r.m.Send(to, sub, v, id)
		}
		if err == nil {
			sent++
		}
	}
	if err != nil {
		return fmt.Errorf("%d of the batch's %d messages sent to a node without batches: %w", sent, total, err)
	}
	return nil
}

func (r *router) Send(to, sub string, payload []byte, id uint64) error {
	payload, err := r.binFor(mesh.NodeID(to), payload)
	if err != nil {
		return err
	}
	if values, ok := supervisor.BatchValues(payload); ok && r.legacy(mesh.NodeID(to)) {
		err = r.split(mesh.NodeID(to), sub, values, id, false)
	} else {
		err = r.m.Send(mesh.NodeID(to), sub, payload, id)
	}
	switch {
	case errors.Is(err, mesh.ErrQueueFull):
		return fmt.Errorf("%w: %w", supervisor.ErrQueueFull, err)
	case errors.Is(err, mesh.ErrNoPeer):
		return fmt.Errorf("%w: %w", supervisor.ErrNoPeer, err)
	case errors.Is(err, mesh.ErrFrameTooLarge):
		return fmt.Errorf("%w: %w", supervisor.ErrTooLarge, err)
	}
	return err
}

// Broadcast sends payload to every peer; a batch goes as one message to
// peers that take batches and as one message per value to the others.
func (r *router) Broadcast(sub string, payload []byte) int {
	if supervisor.IsBinPayload(payload) {
		n, old := r.m.BroadcastFeature(sub, payload, featureBin)
		if len(old) == 0 {
			return n
		}
		// Peers without bin payloads get the messages as JSON, when
		// they are JSON.
		p, err := supervisor.BinAsBatch(payload)
		if err != nil {
			r.log.Debug("broadcast: binary messages not sent to nodes without them", "subservice", sub, "nodes", len(old), "err", err)
			return n
		}
		values, isBatch := supervisor.BatchValues(p)
		for _, id := range old {
			var err error
			switch {
			case isBatch && r.legacy(id):
				err = r.split(id, sub, values, 0, true)
			default:
				err = r.m.BroadcastTo(id, sub, p)
			}
			if err == nil {
				n++
			}
		}
		return n
	}
	values, ok := supervisor.BatchValues(payload)
	if !ok {
		return r.m.Broadcast(sub, payload)
	}
	n, legacy := r.m.BroadcastFeature(sub, payload, featureBatch)
	for _, id := range legacy {
		if r.split(id, sub, values, 0, true) == nil {
			n++
		}
	}
	return n
}

// connListener is a net.Listener fed with mesh streams, so an http.Server
// can serve the dist folder to peers over the mesh.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return meshAddr{} }

type meshAddr struct{}

func (meshAddr) Network() string { return "mesh" }
func (meshAddr) String() string  { return "mesh" }

func pluginOf(s supervisor.Status) control.Plugin {
	p := control.Plugin{Name: s.Name, Version: s.Version, State: string(s.State), PID: s.PID,
		Restarts: s.Restarts, Since: s.Since, LastExit: s.LastExit, Dropped: s.Dropped}
	for _, it := range s.Menu {
		p.Menu = append(p.Menu, control.MenuItem{ID: it.ID, Label: it.Label, Enabled: it.Enabled, Checked: it.Checked})
	}
	return p
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
