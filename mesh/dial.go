package mesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"time"
)

// target is a node we keep dialling while it is not connected: a hint (key
// "id:NODEID") or a static address (key "addr:HOST:PORT"). Fields other
// than wake are guarded by Mesh.mu.
type target struct {
	key    string
	static bool
	id     NodeID // expected (hint) or learned (static)
	addrs  []string
	seen   time.Time // last hinted or last seen connected
	wake   chan struct{}
}

func (t *target) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// AddHint tells the mesh where a node may be reached. Unless that node is
// connected already, the mesh dials it (in the background) and keeps
// redialling it with backoff for HintTTL. Hints for this node itself, with
// an invalid id or without addresses are ignored; repeated hints refresh
// the addresses and the TTL.
func (m *Mesh) AddHint(h Hint) {
	if !h.ID.Valid() || h.ID == m.id {
		return
	}
	var addrs []string
	for _, a := range h.Addrs {
		if a.IsValid() && a.Port() != 0 {
			addrs = append(addrs, a.String())
		}
	}
	if len(addrs) == 0 {
		return
	}
	key := "id:" + string(h.ID)
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return
	}
	t := m.targets[key]
	start, isNew := false, t == nil
	if isNew {
		t = &target{key: key, id: h.ID, wake: make(chan struct{}, 1)}
		m.targets[key] = t
		start = m.state == stateRunning
	}
	changed := !slices.Equal(t.addrs, addrs)
	connected := m.peers[h.ID] != nil
	t.addrs, t.seen = addrs, time.Now()
	m.mu.Unlock()
	if isNew {
		m.noteNewHint(time.Now())
	}
	if start {
		m.spawn(func() { m.dialLoop(t) })
	} else if changed || !connected {
		// A fresh sighting of a node we are not connected to: try now
		// rather than after the backoff (it may just have come back).
		t.signal()
	}
}

// peerGone is called when the session with id ended: targets for id dial
// again, except hints of a peer that said bye, which are forgotten.
func (m *Mesh) peerGone(id NodeID, bye bool) {
	m.mu.Lock()
	var wake []*target
	for key, t := range m.targets {
		if t.id != id {
			continue
		}
		if bye && !t.static {
			delete(m.targets, key)
		} else {
			t.seen = time.Now()
		}
		wake = append(wake, t)
	}
	m.mu.Unlock()
	for _, t := range wake {
		t.signal()
	}
}

// targetState returns what dialLoop needs, or ok=false when the target is
// gone (forgotten, expired) and its loop should end.
func (m *Mesh) targetState(t *target) (id NodeID, addrs []string, connected, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing || m.targets[t.key] != t {
		return "", nil, false, false
	}
	if t.id != "" && m.peers[t.id] != nil {
		t.seen = time.Now()
		return t.id, t.addrs, true, true
	}
	if !t.static && time.Since(t.seen) > m.cfg.HintTTL {
		delete(m.targets, t.key)
		m.log.Debug("hint expired", "peer", t.id.Short())
		return "", nil, false, false
	}
	return t.id, slices.Clone(t.addrs), false, true
}

// dialLoop keeps one target connected.
func (m *Mesh) dialLoop(t *target) {
	ctx := m.ctx
	backoff := m.cfg.ReconnectMin
	var delay time.Duration // first attempt at once
	polite := true          // the next attempt follows a (re)discovery
	if !t.static && !m.waitQuiet(ctx) {
		return
	}
	for {
		if polite {
			polite = false
			// When both nodes learn of each other at once, both would dial
			// and one connection would lose the tie-break: a wasted TLS
			// handshake on each side (about one per pair when 30 nodes
			// start together, when a handshake can take a second). The
			// lower id dials first; the higher one waits (1-2 s) and dials
			// only if nothing came in, e.g. when only it saw the other.
			m.mu.Lock()
			id := t.id
			m.mu.Unlock()
			if !t.static && id != "" && m.id > id && !sleepCtx(ctx, jitter(politeDelay)+delay) {
				return
			}
			delay = 0
		}
		if delay > 0 && !sleepOrWake(ctx, jitter(delay), t.wake) {
			return
		}
		id, addrs, connected, ok := m.targetState(t)
		if !ok {
			return
		}
		if connected {
			select {
			case <-t.wake:
			case <-ctx.Done():
				return
			}
			backoff, delay, polite = m.cfg.ReconnectMin, m.cfg.ReconnectMin, true
			continue
		}
		if id != "" && !m.startDialing(id) {
			delay = m.cfg.ReconnectMin
			continue
		}
		pid, err := m.dialAddrs(ctx, t, id, addrs)
		if id != "" {
			m.stopDialing(id)
		}
		switch {
		case err == nil:
			m.mu.Lock()
			t.id = pid
			m.mu.Unlock()
			backoff, delay = m.cfg.ReconnectMin, 0
		case errors.Is(err, ErrDuplicate):
			// The pair is connecting the other way. A static address
			// learns here whom it reaches once that session is up;
			// otherwise it would redial it every ReconnectMin for as long
			// as the session lasts, a wasted handshake on both sides each
			// time.
			m.mu.Lock()
			if t.id == "" && pid != "" && m.peers[pid] != nil {
				t.id = pid
			}
			m.mu.Unlock()
			delay = m.cfg.ReconnectMin
		case errors.Is(err, errSelf):
			m.log.Debug("static peer is this node; not dialling it again", "addr", addrs)
			m.mu.Lock()
			delete(m.targets, t.key)
			m.mu.Unlock()
			return
		default:
			if ctx.Err() != nil {
				return
			}
			delay = backoff
			backoff = min(2*backoff, m.cfg.ReconnectMax)
		}
	}
}

var errSelf = errors.New("mesh: dialled this node itself")

// politeDelay is how long the node with the higher id lets the lower one
// dial first (see dialLoop).
const politeDelay = 2 * time.Second

// dialAddrs tries each address in turn and returns the node id reached.
func (m *Mesh) dialAddrs(ctx context.Context, t *target, expect NodeID, addrs []string) (NodeID, error) {
	if t.static {
		expect = "" // whoever answers at a static address is welcome
	}
	var dialErr, hsErr error
	for _, addr := range addrs {
		d := net.Dialer{Timeout: min(m.cfg.HandshakeTimeout, 5*time.Second)}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			m.log.Debug("dial failed", "addr", addr, "peer", expect.Short(), "err", err)
			if dialErr == nil {
				dialErr = fmt.Errorf("dial %s: %w", addr, err)
			}
			continue
		}
		p, err := m.handshake(ctx, c, true, expect)
		switch {
		case err == nil:
			return p.id, nil
		case isSelf(err):
			return "", errSelf
		case errors.Is(err, ErrDuplicate):
			var de duplicateError
			errors.As(err, &de)
			return de.peer, err
		case hsErr == nil:
			hsErr = fmt.Errorf("%s: %w", addr, err)
		}
	}
	return "", cmp.Or(hsErr, dialErr, errors.New("no addresses"))
}

func isSelf(err error) bool {
	var r *rejection
	return errors.As(err, &r) && r.reason == reasonSelf
}

func (m *Mesh) startDialing(id NodeID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dialing[id] {
		return false
	}
	m.dialing[id] = true
	return true
}

func (m *Mesh) stopDialing(id NodeID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.dialing, id)
}

// jitter spreads d over [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// quietBurst new nodes hinted within quietBurst times DialQuiet make a
// burst: a LAN coming up, or the answers to a browse on a large one. A
// few new nodes (a small LAN, a node joining) are dialled at once.
const quietBurst = 4

func (m *Mesh) noteNewHint(now time.Time) {
	h := &m.newHints
	h.Lock()
	h.at[h.next%quietBurst] = now
	h.next++
	h.Unlock()
}

// quietWait returns how long a first dial should still wait at now: while
// the last quietBurst new nodes were all hinted within quietBurst times
// DialQuiet, until DialQuiet after the newest of them.
func (m *Mesh) quietWait(now time.Time) time.Duration {
	h := &m.newHints
	h.Lock()
	defer h.Unlock()
	if h.next < quietBurst {
		return 0
	}
	oldest, newest := h.at[h.next%quietBurst], h.at[(h.next-1)%quietBurst]
	if now.Sub(oldest) > quietBurst*m.cfg.DialQuiet {
		return 0
	}
	return m.cfg.DialQuiet - now.Sub(newest)
}

// waitQuiet waits while quietWait says so, DialQuietMax at most; false
// when ctx is done.
func (m *Mesh) waitQuiet(ctx context.Context) bool {
	deadline := time.Now().Add(m.cfg.DialQuietMax)
	for {
		wait := min(m.quietWait(time.Now()), time.Until(deadline))
		if wait <= 0 {
			return true
		}
		if !sleepCtx(ctx, wait) {
			return false
		}
	}
}

// sleepCtx waits d; false when ctx is done first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sleepOrWake waits d, or less when woken; false when ctx is done.
func sleepOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}
