package mesh

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// readBufSize is the control stream's read buffer: big enough to take many
// small frames per stream read, small enough for idle peers to stay cheap.
const readBufSize = 8 << 10

// ctrlChunk bounds one write (one yamux frame) on the control stream.
const ctrlChunk = 64 << 10

// trimCap is the buffer capacity kept by an idle peer's queue.
const trimCap = 16 << 10

// peer is one established session. The reader goroutine owns the control
// stream's read side, the writer goroutine its write side; the queue (buf)
// is shared under qmu.
type peer struct {
	m          *Mesh
	id         NodeID
	name       string
	addr       string
	dialed     bool
	instance   [8]byte
	maxPayload int
	features   uint16 // the peer's Config.Features, from its hello
	since      time.Time

	conn *sessConn
	sess *yamux.Session
	ctrl *yamux.Stream

	qmu       sync.Mutex
	buf       []byte // encoded frames waiting for the writer
	spare     []byte // the writer's last buffer, for reuse
	nmsg      int    // message frames in buf
	final     bool   // a bye or error frame is queued: nothing more is accepted
	closed    bool
	fullSince time.Time // first drop since the writer last took the queue
	active    bool      // something was queued since the last tick

	wake       chan struct{} // cap 1: the writer has work
	done       chan struct{} // closed when the peer is down
	writerDone chan struct{}
	downOnce   sync.Once

	catalog Catalog // guarded by m.mu
	catRaw  []byte  // guarded by m.mu

	sent, received, dropped atomic.Uint64
	rtt                     atomic.Int64

	// Owned by the tick goroutine.
	lastReads uint64
	idleTicks int
}

func (p *peer) info() PeerInfo {
	p.qmu.Lock()
	queued := len(p.buf)
	p.qmu.Unlock()
	return PeerInfo{
		ID:       p.id,
		Name:     p.name,
		Addr:     p.addr,
		Dialed:   p.dialed,
		Features: p.features,
		Since:    p.since,
		RTT:      time.Duration(p.rtt.Load()),
		Catalog:  p.catalog.Clone(),
		Sent:     p.sent.Load(),
		Received: p.received.Load(),
		Dropped:  p.dropped.Load(),
		Queued:   queued,
	}
}

func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// enqueueMsg encodes a message straight into the queue.
func (p *peer) enqueueMsg(flags byte, id uint64, sub string, payload []byte) error {
	need := msgFrameLen(sub, payload)
	p.qmu.Lock()
	if p.closed || p.final {
		p.qmu.Unlock()
		return ErrNoPeer
	}
	if len(p.buf) > 0 && len(p.buf)+need > p.m.cfg.QueueSize {
		p.dropLocked()
		p.qmu.Unlock()
		return ErrQueueFull
	}
	p.buf = appendMsg(p.buf, flags, id, sub, payload)
	p.nmsg++
	p.active = true
	p.qmu.Unlock()
	p.signal()
	return nil
}

// enqueueFrame queues an encoded frame; msg frames count in Sent and obey
// the queue bound, others (nacks) only obey the bound.
func (p *peer) enqueueFrame(frame []byte, isMsg bool) error {
	p.qmu.Lock()
	if p.closed || p.final {
		p.qmu.Unlock()
		return ErrNoPeer
	}
	if len(p.buf) > 0 && len(p.buf)+len(frame) > p.m.cfg.QueueSize {
		p.dropLocked()
		p.qmu.Unlock()
		return ErrQueueFull
	}
	p.buf = append(p.buf, frame...)
	if isMsg {
		p.nmsg++
	}
	p.active = true
	p.qmu.Unlock()
	p.signal()
	return nil
}

func (p *peer) dropLocked() {
	p.dropped.Add(1)
	if p.fullSince.IsZero() {
		p.fullSince = time.Now()
	}
}

// enqueueControl queues a keepalive or catalog frame; these ignore the bound.
func (p *peer) enqueueControl(frame []byte) {
	p.qmu.Lock()
	if p.closed || p.final {
		p.qmu.Unlock()
		return
	}
	p.buf = append(p.buf, frame...)
	p.qmu.Unlock()
	p.signal()
}

// sendFinal queues a last frame (bye or error) after everything already
// queued; the writer stops after writing it and nothing more is accepted.
// It returns a channel closed when the writer is done.
func (p *peer) sendFinal(frame []byte) <-chan struct{} {
	p.qmu.Lock()
	if !p.closed && !p.final {
		p.buf = append(p.buf, frame...)
		p.final = true
	}
	p.qmu.Unlock()
	p.signal()
	return p.writerDone
}

// writeLoop drains the queue: whatever accumulated while the last write was
// in flight goes out in one write, which is what makes fan-out cheap.
func (p *peer) writeLoop() {
	defer close(p.writerDone)
	for {
		select {
		case <-p.wake:
		case <-p.done:
			return
		}
		for {
			p.qmu.Lock()
			out, n, final := p.buf, p.nmsg, p.final
			if len(out) == 0 {
				p.qmu.Unlock()
				if final {
					return
				}
				break
			}
			p.buf, p.spare, p.nmsg = p.spare[:0], nil, 0
			p.fullSince = time.Time{}
			p.qmu.Unlock()

			// Counted before the write: the peer may read them before
			// Write returns, and Sent must never lag what it received.
			p.sent.Add(uint64(n))
			if err := p.writeOut(out); err != nil {
				reason := "write: " + reasonFor(err)
				if errors.Is(err, yamux.ErrTimeout) || errors.Is(err, yamux.ErrConnectionWriteTimeout) {
					reason = fmt.Sprintf("write timeout: peer accepted no data for %v", p.m.cfg.WriteTimeout)
				}
				p.close(reason)
				return
			}

			p.qmu.Lock()
			if p.spare == nil {
				p.spare = out[:0]
			}
			p.qmu.Unlock()
			if final {
				return
			}
		}
	}
}

// writeOut writes a drained queue in pieces of at most ctrlChunk bytes,
// each within WriteTimeout: yamux sends each write as one frame and gives a
// frame ConnectionWriteTimeout to go out, so a multi-megabyte write would
// fail on a slow link although the peer reads everything.
func (p *peer) writeOut(out []byte) error {
	for len(out) > 0 {
		k := min(len(out), ctrlChunk)
		p.ctrl.SetWriteDeadline(time.Now().Add(p.m.cfg.WriteTimeout))
		if _, err := p.ctrl.Write(out[:k]); err != nil {
			return err
		}
		out = out[k:]
	}
	return nil
}

// readLoop reads and dispatches the control stream until it fails.
func (p *peer) readLoop() {
	m := p.m
	br := bufio.NewReaderSize(p.ctrl, readBufSize)
	var hdr [frameHeaderLen]byte
	for {
		typ, body, err := readFrame(br, &hdr, m.cfg.MaxFrameSize)
		if err != nil {
			p.fail(err)
			return
		}
		if err := p.dispatch(typ, body); err != nil {
			p.fail(err)
			return
		}
		if typ == frameBye {
			p.close("bye")
			return
		}
	}
}

func (p *peer) dispatch(typ byte, body []byte) error {
	m := p.m
	switch typ {
	case frameMsg:
		f, err := decodeMsg(body)
		if err != nil {
			return err
		}
		p.received.Add(1)
		if m.cfg.OnMessage == nil {
			return nil
		}
		msg := Message{From: p.id, Subservice: f.sub, Payload: f.payload, ID: f.id, Broadcast: f.flags&flagBroadcast != 0}
		if err := m.cfg.OnMessage(msg); err != nil && f.id != 0 {
			sub := truncate(f.sub, maxNameLen)
			if p.enqueueFrame(appendNack(nil, nackFrame{id: f.id, sub: sub, reason: err.Error()}), false) != nil {
				m.log.Debug("nack dropped", "peer", p.id.Short(), "id", f.id)
			}
		}
	case frameNack:
		n, err := decodeNack(body)
		if err != nil {
			return err
		}
		if m.cfg.OnNack != nil {
			m.cfg.OnNack(Nack{From: p.id, Subservice: n.sub, ID: n.id, Reason: n.reason})
		}
	case frameCatalog:
		c, err := decodeCatalog(body)
		if err != nil {
			return err
		}
		m.setPeerCatalog(p, c, body)
	case framePing:
		p.enqueueControl(appendFrame(nil, framePong, body))
	case framePong:
		sent := time.Duration(binary.BigEndian.Uint64(body))
		if now := m.sinceEpoch(); sent > 0 && sent <= now {
			p.rtt.Store(int64(now - sent))
		}
	case frameBye:
	case frameError:
		re, err := decodeError(body)
		if err != nil {
			return err
		}
		return re
	default:
		if typ < frameExtMin {
			return fmt.Errorf("%w: unexpected frame type 0x%02x in a session", ErrProtocol, typ)
		}
	}
	return nil
}

// fail ends the session after a read or protocol error. A protocol error is
// reported to the peer in an error frame first, when the link still works.
func (p *peer) fail(err error) {
	var re *remoteError
	switch {
	case errors.As(err, &re):
		p.close(re.Error())
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrFrameTooLarge):
		p.m.log.Debug("protocol error from peer", "peer", p.id.Short(), "err", err)
		done := p.sendFinal(appendError(nil, codeProtocol, err.Error()))
		t := time.NewTimer(time.Second)
		select {
		case <-done:
		case <-t.C:
		case <-p.done:
		}
		t.Stop()
		p.close("protocol error: " + err.Error())
	default:
		p.close(reasonFor(err))
	}
}

// close takes the peer down once: out of the peer table (with a peer-down
// event if it was still there), session closed, dialers woken.
func (p *peer) close(reason string) {
	p.downOnce.Do(func() {
		m := p.m
		m.mu.Lock()
		if m.closing && reason != "bye" && !isReplaced(reason) {
			reason = "shutdown"
		}
		if m.peers[p.id] == p {
			delete(m.peers, p.id)
			m.emitLocked(EventPeerDown, p, reason)
		}
		m.mu.Unlock()
		p.qmu.Lock()
		p.closed = true
		m.dropped.Add(p.dropped.Load())
		p.dropped.Store(0)
		p.qmu.Unlock()
		close(p.done)
		p.sess.Close()
		m.log.Debug("peer down", "peer", p.id.Short(), "name", p.name, "reason", reason)
		m.peerGone(p.id, reason == "bye")
	})
}

// closeAsync closes the peer on its own goroutine, so that a slow TLS close
// does not hold up the caller.
func (p *peer) closeAsync(reason string) {
	if !p.m.spawn(func() { p.close(reason) }) {
		p.close(reason)
	}
}

const reasonReplaced = "replaced by a new connection"

func isReplaced(reason string) bool { return reason == reasonReplaced }

// tick runs every keepalive interval on the tick goroutine.
func (p *peer) tick(now time.Time) {
	m := p.m
	if reads := p.conn.reads.Load(); reads != p.lastReads {
		p.lastReads, p.idleTicks = reads, 0
	} else {
		p.idleTicks++
	}
	if p.idleTicks >= deadAfterTicks {
		m.timedOut.Add(1)
		p.closeAsync(fmt.Sprintf("timeout: nothing received for %v", time.Duration(deadAfterTicks)*m.cfg.KeepAliveInterval))
		return
	}
	p.qmu.Lock()
	full := !p.fullSince.IsZero() && now.Sub(p.fullSince) > m.cfg.WriteTimeout
	if !p.active && len(p.buf) == 0 {
		// Idle: give back buffers a burst left behind.
		if cap(p.buf) > trimCap {
			p.buf = nil
		}
		if cap(p.spare) > trimCap {
			p.spare = nil
		}
	}
	p.active = false
	p.qmu.Unlock()
	if full {
		p.closeAsync(fmt.Sprintf("not reading: queue full for over %v", m.cfg.WriteTimeout))
		return
	}
	p.ctrl.Shrink()
	p.enqueueControl(appendToken(nil, framePing, uint64(m.sinceEpoch())))
}

// setPeerCatalog stores a peer's catalog and reports a change.
func (m *Mesh) setPeerCatalog(p *peer, c Catalog, raw []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.peers[p.id] != p {
		return
	}
	if p.catRaw != nil && string(p.catRaw) == string(raw) {
		return
	}
	p.catalog, p.catRaw = c, raw
	m.emitLocked(EventCatalog, p, "")
}

// remoteAddr returns a connection's remote address as text.
func remoteAddr(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
