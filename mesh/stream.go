package mesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// OpenStream opens a stream to a named service (a Config.Handlers entry) on
// a peer. It returns once the peer has accepted the stream, or with an
// error wrapping ErrUnknownService when the peer has no such service. The
// caller owns the stream and must close it; Close is a half-close (the peer
// reads EOF), and a closed session fails every stream on it. Set deadlines
// for anything that may hang: a stream does not notice a dead peer until the
// session does.
func (m *Mesh) OpenStream(ctx context.Context, to NodeID, service string) (net.Conn, error) {
	if err := checkName(service); err != nil {
		return nil, fmt.Errorf("open stream %q: %w", service, err)
	}
	m.mu.RLock()
	p, closing := m.peers[to], m.closing
	m.mu.RUnlock()
	if closing {
		return nil, ErrClosed
	}
	if p == nil {
		return nil, fmt.Errorf("open stream %q to %s: %w", service, to.Short(), ErrNoPeer)
	}
	s, err := openStream(ctx, p.sess)
	if err != nil {
		return nil, fmt.Errorf("open stream %q to %s: %w", service, to.Short(), err)
	}
	if err := requestService(ctx, s, service, m.cfg.HandshakeTimeout); err != nil {
		s.Close()
		return nil, fmt.Errorf("open stream %q to %s: %w", service, to.Short(), err)
	}
	return &streamConn{Stream: s}, nil
}

// maxStreamFrame bounds the yamux frame a stream write becomes. yamux gives
// every frame ConnectionWriteTimeout (WriteTimeout) to go out, so a frame
// must fit through a slow link in that time: 128 KiB takes 1 s at 1 Mbit/s.
const maxStreamFrame = 128 << 10

// streamConn is a yamux stream whose writes go out in bounded frames.
type streamConn struct {
	*yamux.Stream
	wmu sync.Mutex // keeps one Write's pieces together
}

// Write writes b in frames of at most maxStreamFrame bytes.
func (s *streamConn) Write(b []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for n < len(b) {
		w, err := s.Stream.Write(b[n : n+min(len(b)-n, maxStreamFrame)])
		n += w
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// openStream calls yamux's OpenStream, which blocks while 256 stream opens
// are unanswered, under ctx.
func openStream(ctx context.Context, sess *yamux.Session) (*yamux.Stream, error) {
	type result struct {
		s   *yamux.Stream
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := sess.OpenStream()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		// The open ends when the session does, at the latest.
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// requestService sends the stream header and waits for the peer's answer.
func requestService(ctx context.Context, s *yamux.Stream, service string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	defer stop()
	s.SetDeadline(deadline)
	hdr := append([]byte{streamService, byte(len(service))}, service...)
	if _, err := s.Write(hdr); err != nil {
		return ctxErr(ctx, err)
	}
	var ans [2]byte
	if _, err := io.ReadFull(s, ans[:1]); err != nil {
		return ctxErr(ctx, fmt.Errorf("read answer: %w", err))
	}
	switch ans[0] {
	case streamAccepted:
		s.SetDeadline(time.Time{})
		return nil
	case streamUnknown, streamRefused:
		if _, err := io.ReadFull(s, ans[1:]); err != nil {
			return ctxErr(ctx, fmt.Errorf("read answer: %w", err))
		}
		reason := make([]byte, ans[1])
		if _, err := io.ReadFull(s, reason); err != nil {
			return ctxErr(ctx, fmt.Errorf("read answer: %w", err))
		}
		if ans[0] == streamUnknown {
			return fmt.Errorf("%w: %s", ErrUnknownService, reason)
		}
		return fmt.Errorf("refused by peer: %s", reason)
	}
	return fmt.Errorf("%w: stream answer 0x%02x", ErrProtocol, ans[0])
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// acceptLoop takes the streams the peer opens and serves each on its own
// goroutine.
func (p *peer) acceptLoop() {
	for {
		s, err := p.sess.AcceptStream()
		if err != nil {
			return
		}
		if !p.m.spawn(func() { p.m.serveStream(p, s) }) {
			s.Close()
			return
		}
	}
}

// serveStream reads a stream header and hands the stream to its handler.
func (m *Mesh) serveStream(p *peer, s *yamux.Stream) {
	s.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	var hdr [2]byte
	if _, err := io.ReadFull(s, hdr[:1]); err != nil {
		s.Close()
		return
	}
	if hdr[0] != streamService {
		m.log.Debug("stream refused: bad header", "peer", p.id.Short(), "kind", hdr[0])
		answer(s, streamRefused, "bad stream header")
		s.Close()
		return
	}
	if _, err := io.ReadFull(s, hdr[1:]); err != nil {
		s.Close()
		return
	}
	name := make([]byte, hdr[1])
	if _, err := io.ReadFull(s, name); err != nil {
		s.Close()
		return
	}
	h := m.cfg.Handlers[string(name)]
	if h == nil {
		m.log.Debug("stream refused: unknown service", "peer", p.id.Short(), "service", string(name))
		answer(s, streamUnknown, fmt.Sprintf("no service %q on node %s", name, m.id.Short()))
		s.Close()
		return
	}
	if _, err := s.Write([]byte{streamAccepted}); err != nil {
		s.Close()
		return
	}
	s.SetDeadline(time.Time{})
	h(p.id, &streamConn{Stream: s})
}

func answer(s *yamux.Stream, code byte, reason string) {
	reason = truncate(reason, 255)
	s.Write(append([]byte{code, byte(len(reason))}, reason...))
}

// DialContext opens a stream for addr, of the form NODEID.SERVICE or
// NODEID.SERVICE:PORT (the port is ignored), so that an http.Transport with
// DialContext set to this method reaches a peer's "http" service at
// http://NODEID.http/. network must be "tcp", "tcp4", "tcp6" or "mesh".
func (m *Mesh) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "mesh":
	default:
		return nil, fmt.Errorf("mesh: dial %s %s: network must be tcp or mesh", network, addr)
	}
	id, service, err := ParseStreamAddr(addr)
	if err != nil {
		return nil, err
	}
	return m.OpenStream(ctx, id, service)
}

// StreamHost returns the host name that DialContext maps to a service of a
// node: "NODEID.SERVICE".
func StreamHost(id NodeID, service string) string {
	return string(id) + "." + service
}

// ParseStreamAddr splits NODEID.SERVICE[:PORT] into node id and service.
func ParseStreamAddr(addr string) (NodeID, string, error) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	} else if strings.Contains(addr, ":") {
		return "", "", fmt.Errorf("%w: %q", ErrBadAddress, addr)
	}
	id, service, ok := strings.Cut(host, ".")
	if !ok || !NodeID(id).Valid() || checkName(service) != nil {
		return "", "", fmt.Errorf("%w: %q", ErrBadAddress, addr)
	}
	return NodeID(id), service, nil
}
