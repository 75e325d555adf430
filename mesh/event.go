package mesh

import (
	"sync"
	"sync/atomic"
	"time"
)

// EventType names a kind of Event.
type EventType string

// Event types.
const (
	// EventPeerUp: a session with Peer is established.
	EventPeerUp EventType = "peer-up"
	// EventPeerDown: the session with Peer ended; Reason says why ("bye",
	// "timeout: ...", "connection closed", "replaced by a new connection",
	// "shutdown", ...).
	EventPeerDown EventType = "peer-down"
	// EventCatalog: Peer sent a catalog that differs from its last one (the
	// first catalog of a session always counts); read it with Mesh.Peer.
	EventCatalog EventType = "catalog"
	// EventRejected: a connection failed authentication or the protocol
	// check (wrong mesh key, wrong node id, old protocol version, garbage);
	// Peer is the claimed or expected node id when known, Addr the remote
	// address and Reason the error.
	EventRejected EventType = "rejected"
)

// Event reports a change in the peer table.
type Event struct {
	Type   EventType
	Peer   NodeID
	Name   string
	Reason string
	Addr   string
	Time   time.Time
}

// eventHub fans events out to subscribers without ever blocking.
type eventHub struct {
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	closed  bool
	dropped atomic.Uint64
}

type subscriber struct {
	ch chan Event
}

func (h *eventHub) subscribe(buf int) (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, max(buf, 0))}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	if h.subs == nil {
		h.subs = make(map[*subscriber]struct{})
	}
	h.subs[s] = struct{}{}
	return s.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[s]; ok {
			delete(h.subs, s)
			close(s.ch)
		}
	}
}

func (h *eventHub) emit(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- ev:
		default:
			h.dropped.Add(1)
		}
	}
}

func (h *eventHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		close(s.ch)
	}
	h.subs = nil
}
