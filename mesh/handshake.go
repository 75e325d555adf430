package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// acceptLoop accepts connections and runs their handshakes, at most
// MaxHandshakes at once: a connection over the bound is closed at once, so
// a flood costs one accept and one close per attempt.
func (m *Mesh) acceptLoop() {
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off a little.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Debug("accept failed", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-m.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		select {
		case m.hsSem <- struct{}{}:
		default:
			m.hsRefused.Add(1)
			m.log.Debug("connection refused: too many handshakes running", "addr", remoteAddr(c))
			c.Close()
			continue
		}
		if !m.spawn(func() {
			defer func() { <-m.hsSem }()
			m.handshake(m.ctx, c, false, "")
		}) {
			<-m.hsSem
			c.Close()
			return
		}
	}
}

const reasonSelf = "node connected to itself (same node id)"

// rejection is a handshake failure that the peer is told about.
type rejection struct {
	err    error  // local error, wraps a sentinel
	reason string // what the peer is told
}

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

func reject(sentinel error, reason string) *rejection {
	return &rejection{err: fmt.Errorf("%w: %s", sentinel, reason), reason: reason}
}

// handshake authenticates one connection and, on success, makes it the
// session with that peer. raw is closed on failure. dialer is true when this
// node opened the connection; expect is the node id it meant to reach ("" for
// a static address). See docs/WIRE.md for the exchange.
func (m *Mesh) handshake(ctx context.Context, raw net.Conn, dialer bool, expect NodeID) (p *peer, err error) {
	addr := remoteAddr(raw)
	n := m.hsInFlight.Add(1)
	for { // high-water mark, for tests
		hw := m.hsMaxInFlight.Load()
		if n <= hw || m.hsMaxInFlight.CompareAndSwap(hw, n) {
			break
		}
	}
	pid := expect
	defer func() {
		m.hsInFlight.Add(-1)
		if err == nil {
			m.hsOK.Add(1)
			return
		}
		if pid != "" && errors.Is(err, ErrDuplicate) {
			err = duplicateError{peer: pid, err: err}
		}
		m.hsFailed.Add(1)
		raw.Close()
		m.log.Debug("handshake failed", "addr", addr, "peer", pid.Short(), "dialer", dialer, "err", err)
		if isRejection(err) {
			m.events.emit(Event{Type: EventRejected, Peer: pid, Addr: addr, Reason: err.Error()})
		}
	}()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	deadline := time.Now().Add(m.cfg.HandshakeTimeout)
	raw.SetDeadline(deadline)

	// 1. TLS 1.3, mutual, self-signed ed25519 certificates.
	var tc *tls.Conn
	if dialer {
		tc = tls.Client(raw, m.tlsConfig(true, expect))
	} else {
		tc = tls.Server(raw, m.serverTLS)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	if pid, err = connPeerID(cs); err != nil {
		return nil, err
	}
	role, peerRole := byte(roleListen), byte(roleDialer)
	if dialer {
		role, peerRole = peerRole, role
	}

	// 2. Hellos cross; each proves the mesh key for this TLS session.
	proof, err := proofFor(m.cfg.Key, cs, role)
	if err != nil {
		return nil, err
	}
	hb, err := appendHello(nil, hello{
		version:    protocolVersion,
		flags:      m.cfg.Features,
		id:         m.id,
		meshID:     m.meshID,
		instance:   m.instance,
		maxPayload: uint32(m.cfg.MaxFrameSize),
		name:       m.cfg.Name,
		proof:      proof,
	})
	if err != nil {
		return nil, err
	}
	if _, err := tc.Write(hb); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	var hdr [frameHeaderLen]byte
	typ, body, err := readFrame(tc, &hdr, 0)
	if err != nil {
		return nil, m.refuse(tc, fmt.Errorf("read hello: %w", err))
	}
	var h hello
	switch typ {
	case frameError:
		re, err := decodeError(body)
		if err != nil {
			return nil, err
		}
		return nil, re
	case frameHello:
		if h, err = decodeHello(body); err != nil {
			reason := err.Error()
			if errors.Is(err, ErrVersion) {
				reason = fmt.Sprintf("unsupported protocol version %d (this node speaks %d..%d)", h.version, minProtocolVersion, protocolVersion)
				err = reject(ErrVersion, reason)
			}
			return nil, m.refuse(tc, &rejection{err: err, reason: reason})
		}
	default:
		return nil, m.refuse(tc, reject(ErrProtocol, fmt.Sprintf("expected a hello frame, got type 0x%02x", typ)))
	}
	if r := m.verifyHello(pid, h, cs, peerRole); r != nil {
		return nil, m.refuse(tc, r)
	}

	// 3. Verdicts cross. The lower node id decides whether this connection
	// becomes the pair's session, so both ends always agree.
	lower := m.id < pid
	var token uint64
	if lower {
		if token, err = m.reserve(pid, h.instance, dialer); err != nil {
			return nil, m.refuse(tc, err)
		}
		defer func() {
			if err != nil {
				m.unreserve(pid, token)
			}
		}()
	}
	if _, err := tc.Write(appendFrame(nil, frameOK, nil)); err != nil {
		return nil, fmt.Errorf("send verdict: %w", err)
	}
	if typ, body, err = readFrame(tc, &hdr, 0); err != nil {
		return nil, fmt.Errorf("read verdict: %w", err)
	}
	switch typ {
	case frameOK:
	case frameError:
		re, err := decodeError(body)
		if err != nil {
			return nil, err
		}
		return nil, re
	default:
		return nil, m.refuse(tc, reject(ErrProtocol, fmt.Sprintf("expected a verdict frame, got type 0x%02x", typ)))
	}

	// 4. yamux, and the control stream the dialer opens first.
	raw.SetDeadline(time.Time{})
	sc := &sessConn{Conn: tc}
	var sess *yamux.Session
	if dialer {
		sess, err = yamux.Client(sc, m.ycfg)
	} else {
		sess, err = yamux.Server(sc, m.ycfg)
	}
	if err != nil {
		return nil, fmt.Errorf("yamux: %w", err)
	}
	ctrl, err := openControl(ctx, sess, dialer, deadline)
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("control stream: %w", err)
	}
	// From here on the session must outlive ctx: disarm the abort (and
	// notice if it already fired and closed the connection).
	if !stop() {
		sess.Close()
		return nil, ErrClosed
	}
	maxPayload := int(h.maxPayload)
	if maxPayload <= 0 || maxPayload > maxFrameSizeLimit {
		maxPayload = maxFrameSizeLimit
	}
	p = &peer{
		m:          m,
		id:         pid,
		name:       strings.ToValidUTF8(h.name, "\uFFFD"),
		addr:       addr,
		dialed:     dialer,
		instance:   h.instance,
		maxPayload: maxPayload,
		features:   h.flags,
		conn:       sc,
		sess:       sess,
		ctrl:       ctrl,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if err := m.activate(p, lower, token); err != nil {
		sess.Close()
		return nil, err
	}
	return p, nil
}

// verifyHello checks a peer's hello against its certificate and our mesh.
func (m *Mesh) verifyHello(pid NodeID, h hello, cs tls.ConnectionState, peerRole byte) *rejection {
	switch {
	case h.id != pid:
		return reject(ErrIdentity, fmt.Sprintf("hello names node %s but the certificate is node %s", h.id.Short(), pid.Short()))
	case pid == m.id:
		return reject(ErrIdentity, reasonSelf)
	case h.meshID != m.meshID:
		return reject(ErrWrongMesh, fmt.Sprintf("different mesh: you are in mesh %x, this node in mesh %x", h.meshID, m.meshID))
	}
	want, err := proofFor(m.cfg.Key, cs, peerRole)
	if err != nil {
		return &rejection{err: err, reason: "internal error"}
	}
	if !hmac.Equal(want[:], h.proof[:]) {
		return reject(ErrWrongMesh, "mesh key proof does not verify (wrong key, or a proof replayed from another session)")
	}
	return nil
}

// refuse tells the peer why the connection is refused (best effort, within
// the handshake deadline) and returns err for the caller to return.
func (m *Mesh) refuse(tc *tls.Conn, err error) error {
	reason := err.Error()
	var r *rejection
	if errors.As(err, &r) {
		reason = r.reason
	}
	tc.Write(appendError(nil, codeOf(err), reason))
	return err
}

// isRejection reports whether a handshake error is an authentication or
// protocol failure worth an EventRejected (as opposed to a lost race, a
// shutdown or a network error).
func isRejection(err error) bool {
	if errors.Is(err, ErrDuplicate) || errors.Is(err, ErrClosed) {
		return false
	}
	return errors.Is(err, ErrWrongMesh) || errors.Is(err, ErrIdentity) ||
		errors.Is(err, ErrVersion) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrFrameTooLarge)
}

// openControl sets up the session's control stream: the dialer opens it and
// names it with one byte; the listener accepts it as the first stream.
func openControl(ctx context.Context, sess *yamux.Session, dialer bool, deadline time.Time) (*yamux.Stream, error) {
	if dialer {
		s, err := sess.OpenStream()
		if err != nil {
			return nil, err
		}
		s.SetWriteDeadline(deadline)
		if _, err := s.Write([]byte{streamControl}); err != nil {
			s.Close()
			return nil, err
		}
		s.SetWriteDeadline(time.Time{})
		return s, nil
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	s, err := sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, err
	}
	s.SetReadDeadline(deadline)
	var kind [1]byte
	if _, err := io.ReadFull(s, kind[:]); err != nil {
		s.Close()
		return nil, err
	}
	if kind[0] != streamControl {
		s.Close()
		return nil, fmt.Errorf("%w: first stream is not the control stream", ErrProtocol)
	}
	s.SetReadDeadline(time.Time{})
	return s, nil
}

// reserve is called by the lower node id of a pair once a connection has
// authenticated: it decides whether the connection may become the pair's
// session. The first connection wins a simultaneous dial; a connection in
// the same direction as the current session, or from a restarted peer (new
// instance), replaces it, since the peer would only dial again if it had
// lost the old one.
func (m *Mesh) reserve(pid NodeID, instance [8]byte, dialed bool) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return 0, reject(ErrClosed, "node is shutting down")
	}
	if _, ok := m.pending[pid]; ok {
		return 0, reject(ErrDuplicate, "duplicate connection: another one with this pair is being set up")
	}
	if old := m.peers[pid]; old != nil && old.instance == instance && old.dialed != dialed {
		return 0, reject(ErrDuplicate, "duplicate connection: the pair already has a session")
	}
	m.nextToken++
	m.pending[pid] = m.nextToken
	return m.nextToken, nil
}

func (m *Mesh) unreserve(pid NodeID, token uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending[pid] == token {
		delete(m.pending, pid)
	}
}

// activate makes p the session with its node, replacing an older one.
func (m *Mesh) activate(p *peer, reserved bool, token uint64) error {
	m.mu.Lock()
	if reserved {
		if m.pending[p.id] != token {
			m.mu.Unlock()
			return fmt.Errorf("%w: reservation lost", ErrDuplicate)
		}
		delete(m.pending, p.id)
	}
	if m.closing {
		m.mu.Unlock()
		return ErrClosed
	}
	old := m.peers[p.id]
	if old != nil {
		delete(m.peers, p.id)
		m.emitLocked(EventPeerDown, old, reasonReplaced)
	}
	p.since = time.Now()
	m.peers[p.id] = p
	m.emitLocked(EventPeerUp, p, "")
	// The catalog goes first; a ping right away gives an RTT early.
	p.buf = append(p.buf, m.catFrame...)
	p.buf = appendToken(p.buf, framePing, uint64(m.sinceEpoch()))
	m.mu.Unlock()

	if old != nil {
		old.close(reasonReplaced)
	}
	m.log.Debug("peer up", "peer", p.id.Short(), "name", p.name, "addr", p.addr, "dialed", p.dialed)
	if !m.spawn(p.readLoop, p.writeLoop, p.acceptLoop) {
		close(p.writerDone)
		p.close("shutdown")
		return nil
	}
	p.signal()
	return nil
}

// duplicateError is a handshake that lost the one-session-per-pair rule,
// with the (TLS-authenticated) id of the node at the other end, so that a
// static peer's dialler learns whom its address reaches.
type duplicateError struct {
	peer NodeID
	err  error
}

func (e duplicateError) Error() string { return e.err.Error() }
func (e duplicateError) Unwrap() error { return e.err }
