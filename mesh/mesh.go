package mesh

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// StreamHandler serves one stream that a peer opened with OpenStream. conn is
// a yamux stream; the handler owns it and must close it. Handlers run on
// their own goroutine; Run waits for them on shutdown, so they must return
// once conn fails.
type StreamHandler func(from NodeID, conn net.Conn)

// Message is a message from a peer to one of this node's subservices.
type Message struct {
	From       NodeID
	Subservice string
	Payload    []byte
	// ID is chosen by the sender; 0 means the sender wants no Nack.
	ID uint64
	// Broadcast is set when the sender used Broadcast.
	Broadcast bool
}

// Nack tells a sender that a peer refused message ID.
type Nack struct {
	From       NodeID
	Subservice string
	ID         uint64
	Reason     string
}

// Hint says where a node may be reached; it usually comes from discovery.
type Hint struct {
	// ID is the node expected at Addrs; a node with another key is refused.
	ID NodeID
	// Name is informational (the peer announces its own name).
	Name string
	// Addrs are tried in order; IPv6 link-local addresses need their zone.
	Addrs []netip.AddrPort
}

// PeerInfo describes a connected peer.
type PeerInfo struct {
	ID   NodeID
	Name string
	// Addr is the remote address of the connection ("host:port"); for a
	// peer that dialled us the port is its ephemeral one.
	Addr string
	// Dialed is true when this node opened the connection.
	Dialed bool
	// Features are the bits the peer announced (its Config.Features).
	Features uint16
	Since    time.Time
	// RTT is the last keepalive round trip, queueing included; 0 until the
	// first pong.
	RTT     time.Duration
	Catalog Catalog
	// Sent counts messages handed to the connection (counted as their
	// write starts, so never behind what the peer has received), Received
	// messages read from it, Dropped messages refused because the queue
	// was full.
	Sent, Received, Dropped uint64
	// Queued is the number of bytes waiting in the outbound queue.
	Queued int
}

// Stats are counters of a Mesh since New.
type Stats struct {
	Peers               int
	HandshakesOK        uint64
	HandshakesFailed    uint64 // includes duplicates that lost the tie-break
	HandshakesRefused   uint64 // closed at once because MaxHandshakes were running
	HandshakesInFlight  int
	EventsDropped       uint64 // events a slow subscriber missed
	PeersTimedOut       uint64
	MessagesDroppedFull uint64 // all peers' Dropped, including peers now gone
}

const (
	stateNew = iota
	stateRunning
	stateClosed
)

// Mesh is one node's set of authenticated peer sessions. All methods are
// safe for concurrent use.
type Mesh struct {
	// newHints is when AddHint last named nodes it did not know, the
	// last quietBurst of them (a ring, the next slot at next): first dials
	// wait for quiet after a burst of them (see Config.DialQuiet).
	newHints struct {
		sync.Mutex
		at   [quietBurst]time.Time
		next int
	}

	cfg       Config
	log       *slog.Logger
	id        NodeID
	meshID    [8]byte
	instance  [8]byte
	cert      tls.Certificate
	serverTLS *tls.Config
	ln        net.Listener
	ycfg      *yamux.Config
	epoch     time.Time
	hsSem     chan struct{}

	mu        sync.RWMutex
	state     int
	closing   bool // no new peers, sends fail; set at the start of shutdown
	ctx       context.Context
	cancel    context.CancelFunc
	peers     map[NodeID]*peer
	pending   map[NodeID]uint64 // sessions reserved by this (lower) side
	nextToken uint64
	targets   map[string]*target
	dialing   map[NodeID]bool
	catalog   Catalog
	catFrame  []byte // our catalog as a whole frame

	events eventHub

	goMu     sync.Mutex
	goClosed bool
	wg       sync.WaitGroup
	runDone  chan struct{}

	hsOK, hsFailed, hsRefused, timedOut, dropped atomic.Uint64
	hsInFlight, hsMaxInFlight                    atomic.Int64
}

// New checks cfg, makes the node's TLS certificate and binds the listener at
// once, so Addr is known before Run.
func New(cfg *Config) (*Mesh, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cert, err := newCertificate(c.Identity)
	if err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg:     c,
		log:     c.Logger.With("node", c.Identity.ID.Short()),
		id:      c.Identity.ID,
		cert:    cert,
		epoch:   time.Now(),
		hsSem:   make(chan struct{}, c.MaxHandshakes),
		peers:   make(map[NodeID]*peer),
		pending: make(map[NodeID]uint64),
		targets: make(map[string]*target),
		dialing: make(map[NodeID]bool),
		runDone: make(chan struct{}),
	}
	if _, err := rand.Read(m.instance[:]); err != nil {
		return nil, fmt.Errorf("mesh: instance id: %w", err)
	}
	mid, err := hex.DecodeString(c.Key.MeshID())
	if err != nil || len(mid) != len(m.meshID) {
		return nil, fmt.Errorf("mesh: mesh id %q is not 8 bytes of hex", c.Key.MeshID())
	}
	copy(m.meshID[:], mid)
	m.ycfg = m.yamuxConfig()
	m.serverTLS = m.tlsConfig(false, "")
	m.catFrame = appendFrame(nil, frameCatalog, encodeCatalog(Catalog{}))
	for _, a := range c.StaticPeers {
		m.targets["addr:"+a] = &target{key: "addr:" + a, static: true, addrs: []string{a}, wake: make(chan struct{}, 1)}
	}
	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen on %s: %w", c.ListenAddr, err)
	}
	m.ln = ln
	return m, nil
}

func (m *Mesh) yamuxConfig() *yamux.Config {
	y := yamux.DefaultConfig()
	y.AcceptBacklog = 256
	// Liveness is the mesh's own keepalive (see tick): yamux's ping waits
	// behind bulk data and false-fires under load.
	y.EnableKeepAlive = false
	y.KeepAliveInterval = m.cfg.KeepAliveInterval
	y.ConnectionWriteTimeout = m.cfg.WriteTimeout
	// The default 256 KiB window caps a stream at window/RTT.
	y.MaxStreamWindowSize = 16 << 20
	// An unanswered stream open closes the whole session: be patient, the
	// answer may queue behind bulk frames on a slow link.
	y.StreamOpenTimeout = max(m.cfg.HandshakeTimeout, 30*time.Second)
	y.StreamCloseTimeout = 30 * time.Second
	y.LogOutput = nil
	y.Logger = yamuxLogger{m.log}
	return y
}

// yamuxLogger sends yamux's log lines to slog at Debug.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any) { y.l.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (y yamuxLogger) Printf(format string, v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (y yamuxLogger) Println(v ...any) { y.l.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }

// Addr returns the address the mesh listens on.
func (m *Mesh) Addr() net.Addr { return m.ln.Addr() }

// ID returns this node's id.
func (m *Mesh) ID() NodeID { return m.id }

// Run accepts and dials peers, keeps sessions alive and reconnects known
// peers until ctx is done or Close is called. Then it sends bye to every
// peer, closes every session and waits for every goroutine it started
// (stream handlers included). It returns ctx.Err(), or nil after Close. Run
// may be called once.
func (m *Mesh) Run(ctx context.Context) error {
	m.mu.Lock()
	switch m.state {
	case stateClosed:
		m.mu.Unlock()
		return ErrClosed
	case stateRunning:
		m.mu.Unlock()
		return errors.New("mesh: Run called twice")
	}
	m.state = stateRunning
	m.ctx, m.cancel = context.WithCancel(ctx)
	targets := make([]*target, 0, len(m.targets))
	for _, t := range m.targets {
		targets = append(targets, t)
	}
	m.mu.Unlock()

	m.log.Debug("mesh running", "addr", m.ln.Addr().String(), "id", string(m.id))
	m.spawn(m.acceptLoop)
	m.spawn(m.tickLoop)
	for _, t := range targets {
		m.spawn(func() { m.dialLoop(t) })
	}
	<-m.ctx.Done()
	m.shutdown()
	close(m.runDone)
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// Close stops the mesh as Run does on cancel and waits until it has
// stopped. It is idempotent. Event channels are closed.
func (m *Mesh) Close() error {
	m.mu.Lock()
	switch m.state {
	case stateNew:
		m.state = stateClosed
		m.closing = true
		m.mu.Unlock()
		m.ln.Close()
		m.events.closeAll()
		close(m.runDone)
		return nil
	case stateRunning:
		m.state = stateClosed
		cancel := m.cancel
		m.mu.Unlock()
		cancel()
	default:
		m.mu.Unlock()
	}
	<-m.runDone
	return nil
}

// shutdown runs once, at the end of Run.
func (m *Mesh) shutdown() {
	m.mu.Lock()
	m.state = stateClosed
	m.closing = true
	peers := make([]*peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	m.mu.Unlock()
	m.ln.Close()

	// Say bye, then give peers a moment to read it and hang up, which keeps
	// our socket from resetting the connection under the bye.
	for _, p := range peers {
		p.sendFinal(appendFrame(nil, frameBye, nil))
	}
	wait := time.NewTimer(min(m.cfg.WriteTimeout, 2*time.Second))
	for _, p := range peers {
		select {
		case <-p.sess.CloseChan():
		case <-wait.C:
		}
	}
	wait.Stop()
	// In parallel: closing TLS may wait up to 5 s on a peer that is gone.
	var closing sync.WaitGroup
	for _, p := range peers {
		closing.Go(func() { p.close("shutdown") })
	}
	closing.Wait()

	m.goMu.Lock()
	m.goClosed = true
	m.goMu.Unlock()
	m.wg.Wait()
	m.events.closeAll()
	m.log.Debug("mesh stopped")
}

// spawn runs each f on a goroutine that Run waits for; once shutdown has
// begun waiting it runs none of them and returns false.
func (m *Mesh) spawn(fs ...func()) bool {
	m.goMu.Lock()
	defer m.goMu.Unlock()
	if m.goClosed {
		return false
	}
	m.wg.Add(len(fs))
	for _, f := range fs {
		go func() {
			defer m.wg.Done()
			f()
		}()
	}
	return true
}

// Send queues a message for one peer. It never blocks on a slow peer: when
// the peer's queue is full the message is dropped and ErrQueueFull returned.
// id travels with the message; a non-zero id asks for a Nack if the peer's
// OnMessage refuses it. Messages to one peer arrive in the order sent.
func (m *Mesh) Send(to NodeID, sub string, payload []byte, id uint64) error {
	return m.send(to, 0, sub, payload, id)
}

func (m *Mesh) send(to NodeID, flags byte, sub string, payload []byte, id uint64) error {
	if err := checkName(sub); err != nil {
		return fmt.Errorf("send to %s: subservice %q: %w", to.Short(), sub, err)
	}
	m.mu.RLock()
	p, closing := m.peers[to], m.closing
	m.mu.RUnlock()
	if closing {
		return ErrClosed
	}
	if p == nil {
		return fmt.Errorf("send to %s: %w", to.Short(), ErrNoPeer)
	}
	if len(payload) > p.maxPayload {
		return fmt.Errorf("send to %s: payload of %d bytes over the cap of %d: %w", to.Short(), len(payload), p.maxPayload, ErrFrameTooLarge)
	}
	if err := p.enqueueMsg(flags, id, sub, payload); err != nil {
		return fmt.Errorf("send to %s: %w", to.Short(), err)
	}
	return nil
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Broadcast queues a message for every connected peer and returns how many
// accepted it. A peer whose queue is full misses it (counted in its
// Dropped); an invalid subservice name or an oversized payload reaches
// nobody. It never blocks on a slow peer.
func (m *Mesh) Broadcast(sub string, payload []byte) (n int) {
	n, _ = m.BroadcastFeature(sub, payload, 0)
	return n
}

// BroadcastFeature is Broadcast to the peers that announced every bit of
// need (Config.Features); it also returns the peers that did not, which it
// skipped, for the caller to reach in another way.
func (m *Mesh) BroadcastFeature(sub string, payload []byte, need uint16) (n int, lacking []NodeID) {
	if checkName(sub) != nil || len(payload) > m.cfg.MaxFrameSize {
		m.log.Debug("broadcast refused", "subservice", sub, "size", len(payload))
		return 0, nil
	}
	bp := scratchPool.Get().(*[]byte)
	frame := appendMsg((*bp)[:0], flagBroadcast, 0, sub, payload)
	m.mu.RLock()
	if !m.closing {
		for _, p := range m.peers {
			if p.features&need != need {
				lacking = append(lacking, p.id)
				continue
			}
			if len(payload) <= p.maxPayload && p.enqueueFrame(frame, true) == nil {
				n++
			}
		}
	}
	m.mu.RUnlock()
	if cap(frame) <= 1<<20 {
		*bp = frame[:0]
		scratchPool.Put(bp)
	}
	return n, lacking
}

// PeerFeatures returns the feature bits a connected peer announced
// (Config.Features), without the cost of Peer.
func (m *Mesh) PeerFeatures(id NodeID) (uint16, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.peers[id]
	if p == nil {
		return 0, false
	}
	return p.features, true
}

// BroadcastTo queues one message for one peer, marked as a broadcast as
// Broadcast marks it: for an application that must give some peers a
// broadcast in another form (see Config.Features). Errors are Send's.
func (m *Mesh) BroadcastTo(to NodeID, sub string, payload []byte) error {
	return m.send(to, flagBroadcast, sub, payload, 0)
}

// Peers returns the connected peers, sorted by id.
func (m *Mesh) Peers() []PeerInfo {
	m.mu.RLock()
	out := make([]PeerInfo, 0, len(m.peers))
	for _, p := range m.peers {
		out = append(out, p.info())
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b PeerInfo) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// Peer returns one connected peer.
func (m *Mesh) Peer(id NodeID) (PeerInfo, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.peers[id]
	if p == nil {
		return PeerInfo{}, false
	}
	return p.info(), true
}

// PeerName returns the display name of a connected peer. It is the cheap
// form of Peer for hot paths (Peer copies the peer's catalog).
func (m *Mesh) PeerName(id NodeID) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.peers[id]
	if p == nil {
		return "", false
	}
	return p.name, true
}

// SetCatalog sets this node's catalog and, when it changed, sends it to
// every peer (new peers get it when they connect). The catalog is normalized
// first (see Catalog.Normalize); entries that cannot travel are left out and
// logged.
func (m *Mesh) SetCatalog(c Catalog) {
	n, dropped := c.Normalize()
	if dropped > 0 {
		m.log.Debug("catalog entries left out (fields too long)", "count", dropped)
	}
	frame := appendFrame(nil, frameCatalog, encodeCatalog(n))
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.Equal(frame, m.catFrame) {
		return
	}
	m.catalog = n
	m.catFrame = frame
	for _, p := range m.peers {
		p.enqueueControl(frame)
	}
}

// Catalog returns this node's catalog as last set (normalized).
func (m *Mesh) Catalog() Catalog {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.catalog.Clone()
}

// Subscribe returns a channel of peer events with room for buf events and a
// function that unsubscribes (and closes the channel). A subscriber that
// does not keep up loses events (counted in Stats.EventsDropped); it never
// slows the mesh. The channel is closed when the mesh stops.
func (m *Mesh) Subscribe(buf int) (<-chan Event, func()) {
	return m.events.subscribe(buf)
}

// Stats returns the mesh's counters.
func (m *Mesh) Stats() Stats {
	m.mu.RLock()
	n := len(m.peers)
	var dropped uint64
	for _, p := range m.peers {
		dropped += p.dropped.Load()
	}
	m.mu.RUnlock()
	return Stats{
		Peers:               n,
		HandshakesOK:        m.hsOK.Load(),
		HandshakesFailed:    m.hsFailed.Load(),
		HandshakesRefused:   m.hsRefused.Load(),
		HandshakesInFlight:  int(m.hsInFlight.Load()),
		EventsDropped:       m.events.dropped.Load(),
		PeersTimedOut:       m.timedOut.Load(),
		MessagesDroppedFull: m.dropped.Load() + dropped,
	}
}

// emitLocked emits a peer event; m.mu must be held (write) so that events of
// one peer keep their order.
func (m *Mesh) emitLocked(typ EventType, p *peer, reason string) {
	m.events.emit(Event{Type: typ, Peer: p.id, Name: p.name, Reason: reason, Addr: p.addr})
}

// tickLoop pings every peer each KeepAliveInterval and drops the silent ones.
func (m *Mesh) tickLoop() {
	t := time.NewTicker(m.cfg.KeepAliveInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			m.mu.RLock()
			peers := make([]*peer, 0, len(m.peers))
			for _, p := range m.peers {
				peers = append(peers, p)
			}
			m.mu.RUnlock()
			for _, p := range peers {
				p.tick(now)
			}
		}
	}
}

// sinceEpoch is a monotonic clock reading used as ping token.
func (m *Mesh) sinceEpoch() time.Duration { return time.Since(m.epoch) }

// reasonFor describes why a session's read loop ended.
func reasonFor(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, yamux.ErrSessionShutdown),
		errors.Is(err, yamux.ErrStreamClosed), errors.Is(err, net.ErrClosed):
		return "connection closed"
	case errors.Is(err, syscall.EPIPE):
		return "connection closed (broken pipe)"
	case errors.Is(err, yamux.ErrConnectionReset), errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	return err.Error()
}
