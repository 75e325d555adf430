package supervisor

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nearbymesh/nearby/internal/session"
	"github.com/nearbymesh/nearby/subservice"
)

// replyTimeout bounds a direct write to a connection that has not been
// welcomed yet (and so has no queue or writer of its own).
const replyTimeout = 5 * time.Second

func (s *Supervisor) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or similar: back off a little, bounded.
			s.log.Debug("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn reads one connection's frames in order. Before hello it answers
// directly; afterwards every frame to the plugin goes through the
// instance's queue and writer.
func (s *Supervisor) serveConn(c net.Conn) {
	defer s.wg.Done()
	var inst *instance
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if inst != nil && inst.conn == c {
			inst.gone = true
			s.emit(inst.p)
		}
		s.mu.Unlock()
		if inst != nil {
			inst.q.close()
			s.endSessions(inst)
		}
	}()
	c.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	lr := subservice.NewLineReader(c, s.cfg.MaxLine)
	// Frames are handled one at a time before the next is read, so one
	// Decoder's memory serves them all (handle copies what outlives it).
	var dec subservice.Decoder
	for {
		line, err := lr.ReadLine()
		if err == subservice.ErrTooLarge {
			s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, Code: subservice.CodeTooLarge,
				Message: fmt.Sprintf("line longer than %d bytes discarded", s.cfg.MaxLine)})
			continue
		}
		if err != nil {
			return
		}
		f, err := dec.Decode(line)
		if err != nil {
			s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, Code: subservice.CodeBadFrame, Message: err.Error()})
			continue
		}
		// A bin frame's block follows its line: read it now, before
		// anything else, so that the stream stays in step whatever
		// becomes of the frame.
		var block []byte
		switch {
		case f.Bin < 0:
			s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: subservice.CodeBadFrame,
				Message: fmt.Sprintf("bin %d: a byte count cannot be negative", f.Bin)})
			continue
		case f.Bin > s.cfg.MaxLine:
			// Skipped as it arrives: nothing is held, and the next frame
			// is read after it.
			if lr.DiscardBlock(int64(f.Bin)) != nil {
				return
			}
			s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: subservice.CodeTooLarge,
				Message: fmt.Sprintf("a bin block of %d bytes discarded; at most %d (welcome's max_line)", f.Bin, s.cfg.MaxLine)})
			continue
		case f.Bin > 0:
			if block, err = lr.ReadBlock(f.Bin); err != nil {
				return
			}
		}
		if inst == nil {
			if f.Op != subservice.OpHello {
				s.reply(c, nil, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: subservice.CodeNotWelcomeYet,
					Message: fmt.Sprintf("%q before hello", f.Op)})
				continue
			}
			if inst = s.hello(c, f); inst == nil {
				return
			}
			c.SetReadDeadline(time.Time{})
			continue
		}
		s.handle(inst, c, f, &dec, block)
	}
}

// reply sends a frame to a plugin: through its queue once welcomed, else
// directly with a deadline.
func (s *Supervisor) reply(c net.Conn, inst *instance, f *subservice.Frame) {
	line, err := subservice.EncodeFrame(f)
	if err != nil {
		return
	}
	if inst != nil {
		s.mu.Lock()
		s.push(inst, line)
		s.mu.Unlock()
		return
	}
	c.SetWriteDeadline(time.Now().Add(replyTimeout))
	if _, err := c.Write(line); err != nil {
		c.Close()
	}
}

// hello checks the token and welcomes the plugin, or refuses and returns nil.
func (s *Supervisor) hello(c net.Conn, f *subservice.Frame) *instance {
	if f.Protocol != subservice.ProtocolVersion {
		s.reply(c, nil, &subservice.Frame{Op: subservice.OpError, Code: subservice.CodeBadProtocol,
			Message: fmt.Sprintf("protocol %d not supported; this node speaks %d", f.Protocol, subservice.ProtocolVersion)})
		return nil
	}
	self := s.cfg.Router.Self()
	s.mu.Lock()
	inst := s.tokens[f.Token]
	if f.Token == "" || inst == nil || inst.gone {
		s.mu.Unlock()
		s.log.Debug("plugin hello with bad token")
		s.reply(c, nil, &subservice.Frame{Op: subservice.OpError, Code: subservice.CodeBadToken,
			Message: "unknown or already used token"})
		return nil
	}
	delete(s.tokens, f.Token)
	inst.token = ""
	p := inst.p
	peers := make([]Peer, 0, len(s.peers))
	for _, peer := range s.peers {
		peers = append(peers, peer)
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	wf := &subservice.Frame{
		Op:         subservice.OpWelcome,
		Protocol:   subservice.ProtocolVersion,
		Node:       &self,
		Subservice: p.sub,
		Version:    p.spec.Version,
		Peers:      peers,
		MaxLine:    s.cfg.MaxLine,
	}
	// Features: grant those asked for that this node has. A plugin that
	// asks for none gets the welcome it always got.
	batch := slices.Contains(f.Features, subservice.FeatureBatch)
	bin := slices.Contains(f.Features, subservice.FeatureBin)
	if batch {
		wf.Features = append(wf.Features, subservice.FeatureBatch)
	}
	if bin {
		wf.Features = append(wf.Features, subservice.FeatureBin)
	}
	if batch || bin {
		wf.MaxBatch = s.cfg.MaxBatch
	}
	welcome, err := subservice.EncodeFrame(wf)
	if err != nil {
		s.mu.Unlock()
		return nil
	}
	inst.conn = c
	inst.batch = batch
	inst.bin = bin
	inst.q.pushFront(welcome)
	p.setState(StateRunning)
	s.emit(p)
	s.wg.Add(1)
	pid := inst.pid
	s.mu.Unlock()
	go s.writeLoop(inst, c)
	s.log.Debug("plugin connected", "plugin", p.name, "pid", pid)
	return inst
}

// handle acts on one frame from a welcomed plugin, which dec decoded, and
// block, the bin block that followed it (nil when it has none). The
// subservice is always the instance's own, never taken from the frame. f,
// its Data and Batch, and block are valid only until handle returns.
func (s *Supervisor) handle(inst *instance, c net.Conn, f *subservice.Frame, dec *subservice.Decoder, block []byte) {
	fail := func(code, msg string) {
		s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: code, Message: msg, To: f.To})
	}
	if block != nil && f.Op != subservice.OpSend && f.Op != subservice.OpBroadcast {
		fail(subservice.CodeBadFrame, fmt.Sprintf("a %s frame carries no bin block (only send and broadcast do); its %d bytes were skipped", f.Op, len(block)))
		return
	}
	switch f.Op {
	case subservice.OpSend, subservice.OpBroadcast:
		s.relay(inst, f, dec, block)
	case subservice.OpMenu:
		if err := subservice.ValidateMenu(f.Items); err != nil {
			fail(subservice.CodeBadFrame, err.Error())
			return
		}
		s.mu.Lock()
		if inst.p.cur == inst {
			inst.p.menu = slices.Clone(f.Items)
			s.emit(inst.p)
		}
		s.mu.Unlock()
	case subservice.OpOpen:
		open := *f // f is the Decoder's, and the open goes on in the background
		open.Data, open.Batch = nil, nil
		s.openSession(inst, &open)
	case subservice.OpSessionData, subservice.OpSessionEOF, subservice.OpSessionClose:
		s.sessionOp(inst, f)
	case subservice.OpHello:
		fail(subservice.CodeBadFrame, "already welcomed")
	default:
		fail(subservice.CodeBadFrame, fmt.Sprintf("unknown op %q", f.Op))
	}
}

// relay serves a send or broadcast frame, with data or (from a plugin that
// asked for them) a batch or a bin block: one mesh message either way. A
// batch's (or block's) messages use the ids f.ID..f.ID+n-1, and an error
// about it carries f.ID and count n. dec decoded f.
func (s *Supervisor) relay(inst *instance, f *subservice.Frame, dec *subservice.Decoder, block []byte) {
	name := inst.p.sub
	n := 1
	fail := func(code, msg string) {
		e := &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: code, Message: msg, To: f.To}
		if n > 1 && f.ID != 0 {
			e.Count = n
		}
		s.reply(nil, inst, e)
	}
	payload := []byte(f.Data)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	if block != nil {
		s.mu.Lock()
		asked := inst.bin
		s.mu.Unlock()
		count, err := subservice.CheckBin(block)
		switch {
		case !asked:
			fail(subservice.CodeBadFrame, `bin without the bin feature: ask for it in hello ("features":["bin"])`)
			return
		case f.Data != nil || f.Batch != nil:
			fail(subservice.CodeBadFrame, f.Op+" has a bin block and data or batch")
			return
		case err != nil:
			fail(subservice.CodeBadFrame, err.Error())
			return
		case !s.countOK("bin block", count, f.ID, &n, fail):
			return
		}
		bp := scratchPool.Get().(*[]byte)
		payload = append(append((*bp)[:0], binMagic...), block...)
		defer func() {
			if cap(payload) <= 1<<20 {
				*bp = payload[:0]
			}
			scratchPool.Put(bp)
		}()
	} else if f.Batch != nil {
		s.mu.Lock()
		asked := inst.batch
		s.mu.Unlock()
		switch {
		case !asked:
			fail(subservice.CodeBadFrame, `batch without the batch feature: ask for it in hello ("features":["batch"])`)
			return
		case f.Data != nil:
			fail(subservice.CodeBadFrame, f.Op+" has both data and batch")
			return
		}
		bp := scratchPool.Get().(*[]byte)
		b := append((*bp)[:0], batchMagic...)
		var count int
		var err error
		if k, compact := dec.BatchLen(); k > 0 && compact {
			// Checked and counted as it was decoded: as it is.
			b, count = append(b, f.Batch...), k
		} else {
			b, count, err = subservice.AppendBatch(b, f.Batch)
		}
		defer func() {
			if cap(b) <= 1<<20 {
				*bp = b[:0]
			}
			scratchPool.Put(bp)
		}()
		switch {
		case err != nil:
			fail(subservice.CodeBadFrame, err.Error())
			return
		case !s.countOK("batch", count, f.ID, &n, fail):
			return
		}
		if n == 1 {
			// One message: an ordinary one ("[" VALUE "]").
			payload = b[len(batchMagic)+1 : len(b)-1]
		} else {
			payload = b
		}
	}
	if f.Op == subservice.OpBroadcast {
		s.cfg.Router.Broadcast(name, payload)
		return
	}
	if f.To == "" {
		fail(subservice.CodeBadFrame, "send needs to")
		return
	}
	self := s.cfg.Router.Self()
	if f.To == self.ID {
		if err := s.Deliver(self, name, payload, false); err != nil {
			fail(NackReason(err), err.Error())
		}
		return
	}
	var mid uint64
	if f.ID != 0 {
		mid = s.trackN(inst, f.ID, n)
	}
	if err := s.cfg.Router.Send(f.To, name, payload, mid); err != nil {
		if mid != 0 {
			s.untrack(mid, "")
		}
		switch {
		case errors.Is(err, ErrQueueFull):
			fail(subservice.CodeQueueFull, fmt.Sprintf("the queue to node %s is full; message not sent", f.To))
		case errors.Is(err, ErrNoPeer) || !s.knownPeer(f.To):
			fail(subservice.CodeNoPeer, fmt.Sprintf("node %s is not connected", f.To))
		case errors.Is(err, ErrTooLarge) && n > 1:
			fail(subservice.CodeTooLarge, fmt.Sprintf("a batch of %d messages in %d bytes is more than the mesh carries to node %s; send fewer at once: %v", n, len(payload), f.To, err))
		default:
			fail(subservice.CodeSendFailed, err.Error())
		}
	}
}

// countOK checks the number of messages in a batch or bin block (what
// names it) whose first id is id: at most max_batch, and ids that do not
// run past the largest. When it fails it sends the error through fail and
// returns false; *n becomes count when the error is about all of them, and
// when it succeeds.
func (s *Supervisor) countOK(what string, count int, id uint64, n *int, fail func(code, msg string)) bool {
	switch {
	case count > s.cfg.MaxBatch:
		*n = count
		fail(subservice.CodeTooLarge, fmt.Sprintf("a %s of %d messages; at most %d in one (welcome's max_batch)", what, count, s.cfg.MaxBatch))
		return false
	case id != 0 && id+uint64(count-1) < id:
		fail(subservice.CodeBadFrame, fmt.Sprintf("a %s of %d messages from id %d runs past the largest id", what, count, id))
		return false
	}
	*n = count
	return true
}

// knownPeer reports whether id is in the peer table (from PeerEvent).
func (s *Supervisor) knownPeer(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.peers[id]
	return ok
}

// writeLoop writes inst's queued frames to c, each batch with one Write. A
// plugin that does not read blocks only this goroutine; its queue fills and
// further frames are dropped and counted.
func (s *Supervisor) writeLoop(inst *instance, c net.Conn) {
	defer s.wg.Done()
	var batch []byte
	for {
		var dropped uint64
		var ok bool
		batch, dropped, ok = inst.q.wait(batch)
		if !ok {
			return
		}
		if dropped > 0 {
			line, _ := subservice.EncodeFrame(&subservice.Frame{Op: subservice.OpError, Code: subservice.CodeDropped,
				Message: fmt.Sprintf("%d messages or events for this plugin were dropped because it did not read them fast enough (a batch counts as its messages)", dropped)})
			batch = append(batch, line...)
		}
		if _, err := c.Write(batch); err != nil {
			c.Close()
			return
		}
	}
}

// SessionOpener opens hosted sessions for plugins. The node wiring
// implements it over the mesh.
type SessionOpener interface {
	// OpenSession opens a session of the hosted plugin on node to (a node
	// id or name) for the local plugin owner, and returns it once the
	// host has started its program. A refusal by the host is a
	// *session.RefusedError; a node that is not connected, an error
	// wrapping ErrNoPeer.
	OpenSession(ctx context.Context, owner, to, plugin, version string) (*session.Conn, error)
}

// Bounds of the session ops.
const (
	sessionOpenTimeout  = 30 * time.Second
	sessionWriteTimeout = 10 * time.Second
	sessionChunk        = 32 << 10
)

// instSessions are the sessions one plugin instance opened. Guarded by
// Supervisor.sessMu.
type instSessions struct {
	ctx    context.Context // cancelled when the plugin's connection ends
	cancel context.CancelFunc
	live   map[string]*plugSession
}

// plugSession is one session a plugin opened.
type plugSession struct {
	conn     *session.Conn
	encoding string     // subservice.EncodingBase64 or "" (text)
	wmu      sync.Mutex // one session-data write at a time
	overflow bool       // the plugin's queue was full: we closed it
}

// sessionsOf returns inst's sessions, creating them; nil once inst's
// connection has ended.
func (s *Supervisor) sessionsOf(inst *instance) *instSessions {
	s.mu.Lock()
	gone := inst.gone
	s.mu.Unlock()
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	is := s.psess[inst]
	if is == nil && !gone {
		ctx, cancel := context.WithCancel(context.Background())
		is = &instSessions{ctx: ctx, cancel: cancel, live: make(map[string]*plugSession)}
		s.psess[inst] = is
	}
	return is
}

// endSessions closes the sessions of an instance whose connection ended.
func (s *Supervisor) endSessions(inst *instance) {
	s.sessMu.Lock()
	is := s.psess[inst]
	delete(s.psess, inst)
	var live []*plugSession
	if is != nil {
		for _, ps := range is.live {
			live = append(live, ps)
		}
	}
	s.sessMu.Unlock()
	if is == nil {
		return
	}
	is.cancel()
	for _, ps := range live {
		s.wg.Go(func() { ps.conn.Close() })
	}
}

// openSession serves an open frame: the session is opened in the
// background and the plugin gets a session frame ("opened") or an error
// frame with the open's id.
func (s *Supervisor) openSession(inst *instance, f *subservice.Frame) {
	fail := func(code, msg string) {
		s.reply(nil, inst, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: code, Message: msg, To: f.To})
	}
	switch {
	case s.cfg.Sessions == nil:
		fail(subservice.CodeSessionRefused, "this node does not open sessions")
		return
	case f.To == "" || f.Plugin == "":
		fail(subservice.CodeBadFrame, "open needs to (a node) and plugin")
		return
	case !subservice.ValidEncoding(f.Encoding):
		fail(subservice.CodeBadFrame, fmt.Sprintf("unknown session encoding %q (omit it for text, or %q)", f.Encoding, subservice.EncodingBase64))
		return
	}
	is := s.sessionsOf(inst)
	if is == nil {
		return
	}
	owner := inst.p.name
	s.wg.Go(func() {
		ctx, cancel := context.WithTimeout(is.ctx, sessionOpenTimeout)
		conn, err := s.cfg.Sessions.OpenSession(ctx, owner, f.To, f.Plugin, f.Version)
		cancel()
		if err != nil {
			var re *session.RefusedError
			switch {
			case errors.As(err, &re):
				fail(subservice.CodeSessionRefused, re.Error())
			case errors.Is(err, ErrNoPeer):
				fail(subservice.CodeNoPeer, err.Error())
			default:
				fail(subservice.CodeSessionRefused, err.Error())
			}
			return
		}
		info := conn.Info()
		ps := &plugSession{conn: conn, encoding: f.Encoding}
		s.sessMu.Lock()
		live := s.psess[inst] == is
		if live {
			is.live[info.Session] = ps
		}
		s.sessMu.Unlock()
		if !live { // the plugin went away meanwhile
			conn.Close()
			return
		}
		host := info.Host
		s.reply(nil, inst, &subservice.Frame{Op: subservice.OpSession, ID: f.ID, Session: info.Session, Event: subservice.SessionOpened,
			Plugin: info.Plugin, Version: info.Version, Node: &host, Encoding: ps.encoding})
		s.log.Debug("plugin opened a session", "plugin", owner, "session", info.Session[:8], "host", host.Name, "hosted", info.Plugin)
		s.pumpSession(inst, is, info.Session, ps)
	})
}

// pumpSession hands a session's output to the plugin as session-data
// frames (split only between UTF-8 characters) until it ends, then tells
// the plugin why.
func (s *Supervisor) pumpSession(inst *instance, is *instSessions, id string, ps *plugSession) {
	buf := make([]byte, sessionChunk)
	var carry []byte
	send := func(b []byte) bool {
		text := string(b)
		if ps.encoding == subservice.EncodingBase64 {
			text = base64.StdEncoding.EncodeToString(b)
		}
		data, _ := json.Marshal(text)
		line, err := subservice.EncodeFrame(&subservice.Frame{Op: subservice.OpSessionData, Session: id, Data: data})
		if err != nil {
			return false
		}
		s.mu.Lock()
		err = s.push(inst, line)
		s.mu.Unlock()
		return err == nil
	}
	for {
		n, err := ps.conn.Read(buf)
		if n > 0 && !ps.overflow {
			b := append(carry, buf[:n]...)
			k := len(b) // binary: as it comes
			if ps.encoding == "" {
				k = utf8Prefix(b)
			}
			carry = append([]byte(nil), b[k:]...)
			if k > 0 && !send(b[:k]) {
				// The plugin does not read: end the session rather than
				// lose part of its output.
				ps.overflow = true
				s.wg.Go(func() { ps.conn.Close() })
			}
		}
		if err != nil {
			break
		}
	}
	if len(carry) > 0 && !ps.overflow {
		send(carry) // an incomplete character at the very end
	}
	s.sessMu.Lock()
	delete(is.live, id)
	s.sessMu.Unlock()
	e, _ := ps.conn.End()
	if ps.overflow {
		e = session.End{Code: session.CodeOverflow, Reason: "the plugin did not read the session's output fast enough (its queue was full); the session was closed"}
	}
	s.reply(nil, inst, &subservice.Frame{Op: subservice.OpSession, Session: id, Event: subservice.SessionClosed,
		Code: e.Code, Reason: e.Reason, Exit: e.Exit})
}

// utf8Prefix returns the length of b without an incomplete UTF-8 sequence
// at its end.
func utf8Prefix(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

// sessionOp serves session-data, session-eof and session-close frames.
func (s *Supervisor) sessionOp(inst *instance, f *subservice.Frame) {
	fail := func(code, msg string) {
		s.reply(nil, inst, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: code, Message: msg, Session: f.Session})
	}
	var ps *plugSession
	s.sessMu.Lock()
	if is := s.psess[inst]; is != nil {
		ps = is.live[f.Session]
	}
	s.sessMu.Unlock()
	if ps == nil {
		fail(subservice.CodeNoSession, fmt.Sprintf("no open session %q of this plugin", f.Session))
		return
	}
	switch f.Op {
	case subservice.OpSessionData:
		text, err := f.SessionBytes(ps.encoding)
		if err != nil {
			fail(subservice.CodeBadFrame, err.Error())
			return
		}
		ps.wmu.Lock()
		defer ps.wmu.Unlock()
		ps.conn.SetWriteDeadline(time.Now().Add(sessionWriteTimeout))
		n, err := ps.conn.Write(text)
		switch {
		case errors.Is(err, session.ErrEnded):
			fail(subservice.CodeNoSession, err.Error())
		case errors.Is(err, session.ErrTimeout):
			fail(subservice.CodeSessionBusy, fmt.Sprintf("the session's program did not read its input for %v: %d of %d bytes sent", sessionWriteTimeout, n, len(text)))
		case err != nil:
			fail(subservice.CodeNoSession, err.Error())
		}
	case subservice.OpSessionEOF:
		if err := ps.conn.CloseWrite(); err != nil {
			fail(subservice.CodeNoSession, err.Error())
		}
	case subservice.OpSessionClose:
		s.wg.Go(func() { ps.conn.Close() })
	}
}
