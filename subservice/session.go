package subservice

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"
)

// ErrSessionEnded reports a write to a session that has ended.
var ErrSessionEnded = errors.New("subservice: session ended")

// sessionBuffer is the size of a Session's Data channel, in chunks.
const sessionBuffer = 64

// SessionEnd says why a session ended. Code is one of "closed" (by this
// plugin), "exited" (the program exited with status 0), "crashed",
// "presenter-left", "stopped", "restarted", "idle", "overflow", "shutdown",
// "lost" or "protocol" (docs/SESSIONS.md says when each happens).
type SessionEnd struct {
	Code   string
	Reason string
	// Exit is how the program exited, when its exit ended the session.
	Exit string
}

// Normal reports whether the session ended the way sessions are meant to:
// closed by this plugin, or its program exited with status 0.
func (e SessionEnd) Normal() bool { return e.Code == "closed" || e.Code == "exited" }

// Session is a session this plugin opened on a hosted plugin of another
// node (Plugin.Open): a program of its own runs there; Write feeds its
// stdin and Data delivers its stdout. Its methods are safe for concurrent
// use.
type Session struct {
	p       *Plugin
	id      string
	plugin  string
	version string
	host    Peer
	// encoding is the session's: "" (text) or EncodingBase64, in which
	// Data and Write carry any bytes.
	encoding string

	data chan string
	done chan struct{}

	mu    sync.Mutex
	ended bool
	end   SessionEnd
}

type openResult struct {
	s   *Session
	err error
}

// openReq is an Open waiting for its answer.
type openReq struct {
	ch       chan openResult
	encoding string
}

// Open opens a session of the hosted plugin named plugin on node (a node id
// or name) and returns once the host has started the session's program. A
// refusal (not hosted there, a limit reached, ...) is an *Error with code
// "session-refused"; an unknown node, "no-peer".
func (p *Plugin) Open(ctx context.Context, node, plugin string) (*Session, error) {
	return p.open(ctx, node, plugin, "")
}

// OpenBinary is Open for a program whose input or output is not text: the
// session's bytes travel as base64 (EncodingBase64), so Data delivers the
// program's output and Write sends its input byte for byte, in strings
// that need not be UTF-8. A node that does not know binary sessions makes
// it fail with ErrNoBinary.
func (p *Plugin) OpenBinary(ctx context.Context, node, plugin string) (*Session, error) {
	return p.open(ctx, node, plugin, EncodingBase64)
}

// ErrNoBinary reports a node that opened a session as text when asked for
// a binary one (it predates binary sessions).
var ErrNoBinary = errors.New("subservice: the node does not support binary sessions")

func (p *Plugin) open(ctx context.Context, node, plugin, encoding string) (*Session, error) {
	if node == "" || plugin == "" {
		return nil, fmt.Errorf("subservice: open: want a node and a plugin name")
	}
	id := p.nextID.Add(1)
	ch := make(chan openResult, 1)
	p.smu.Lock()
	p.opens[id] = openReq{ch: ch, encoding: encoding}
	p.smu.Unlock()
	if err := p.write(&Frame{Op: OpOpen, ID: id, To: node, Plugin: plugin, Encoding: encoding}); err != nil {
		p.forgetOpen(id, ch)
		return nil, err
	}
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		p.forgetOpen(id, ch)
		return nil, ctx.Err()
	}
}

// forgetOpen stops waiting for open id; a session opened meanwhile is
// closed.
func (p *Plugin) forgetOpen(id uint64, ch chan openResult) {
	p.smu.Lock()
	delete(p.opens, id)
	p.smu.Unlock()
	select {
	case r := <-ch: // answered under smu before we deleted it
		if r.s != nil {
			r.s.Close()
		}
	default:
	}
}

// openFailed delivers an error frame to the Open waiting for its id, and
// reports whether there was one.
func (p *Plugin) openFailed(f *Frame) bool {
	if f.ID == 0 {
		return false
	}
	p.smu.Lock()
	defer p.smu.Unlock()
	req, ok := p.opens[f.ID]
	if ok {
		delete(p.opens, f.ID)
		req.ch <- openResult{err: frameError(f)}
	}
	return ok
}

// sessionEvent handles a session frame (on the read loop).
func (p *Plugin) sessionEvent(f *Frame) {
	switch f.Event {
	case SessionOpened:
		s := &Session{p: p, id: f.Session, plugin: f.Plugin, version: f.Version,
			encoding: f.Encoding,
			data:     make(chan string, sessionBuffer), done: make(chan struct{})}
		if f.Node != nil {
			s.host = *f.Node
		}
		p.smu.Lock()
		req, ok := p.opens[f.ID]
		wrong := ok && req.encoding != f.Encoding
		if ok {
			delete(p.opens, f.ID)
			if wrong {
				req.ch <- openResult{err: fmt.Errorf("subservice: open %s: %w", f.Plugin, ErrNoBinary)}
			} else {
				p.sessions[s.id] = s
				req.ch <- openResult{s: s}
			}
		}
		p.smu.Unlock()
		if !ok || wrong { // nobody waits for it any more, or it is not the session asked for
			go p.write(&Frame{Op: OpSessionClose, Session: f.Session})
		}
	case SessionClosed:
		p.smu.Lock()
		s := p.sessions[f.Session]
		delete(p.sessions, f.Session)
		p.smu.Unlock()
		if s != nil {
			s.finish(SessionEnd{Code: f.Code, Reason: f.Reason, Exit: f.Exit})
		}
	}
}

// sessionData hands a session-data frame to its session (on the read loop,
// which blocks while the session's Data channel is full).
func (p *Plugin) sessionData(f *Frame) {
	p.smu.Lock()
	s := p.sessions[f.Session]
	p.smu.Unlock()
	if s == nil {
		return
	}
	b, err := f.SessionBytes(s.encoding)
	if err != nil {
		return
	}
	select {
	case s.data <- string(b):
	case <-p.closing:
	}
}

// endSessions ends every session when the connection ends (on the read
// loop, as it returns).
func (p *Plugin) endSessions() {
	p.smu.Lock()
	sessions := p.sessions
	p.sessions = map[string]*Session{}
	for id, req := range p.opens {
		delete(p.opens, id)
		req.ch <- openResult{err: fmt.Errorf("subservice: open: %w", ErrClosed)}
	}
	p.smu.Unlock()
	for _, s := range sessions {
		s.finish(SessionEnd{Code: "lost", Reason: "the connection to the node ended"})
	}
}

func (s *Session) finish(e SessionEnd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.end = true, e
	close(s.data)
	close(s.done)
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// Plugin returns the hosted plugin's name.
func (s *Session) Plugin() string { return s.plugin }

// Version returns the hosted plugin's version that runs the session.
func (s *Session) Version() string { return s.version }

// Host returns the node the session's program runs on.
func (s *Session) Host() Peer { return s.host }

// Data returns the channel of the program's output, as text, in order. It
// is closed when the session has ended. Read it promptly: while it is full
// the plugin reads nothing else from its node.
func (s *Session) Data() <-chan string { return s.data }

// Done returns a channel closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// End returns why the session ended, once it has.
func (s *Session) End() (SessionEnd, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end, s.ended
}

func (s *Session) isEnded() bool {
	_, ended := s.End()
	return ended
}

// sessionWriteChunk bounds the text of one session-data frame.
const sessionWriteChunk = 64 << 10

// Write sends text to the program's stdin. It returns once the text is
// queued for the node; if the program does not read it in time the node
// reports a "session-busy" error (on Errors, with the session's id).
func (s *Session) Write(text string) error {
	for len(text) > 0 {
		if s.isEnded() {
			return ErrSessionEnded
		}
		n := min(len(text), sessionWriteChunk)
		var raw []byte
		var err error
		if s.encoding == EncodingBase64 {
			raw, err = marshal(base64.StdEncoding.EncodeToString([]byte(text[:n])))
		} else {
			for n < len(text) && n > 0 && !utf8.RuneStart(text[n]) {
				n--
			}
			raw, err = marshal(text[:n])
		}
		if err != nil {
			return err
		}
		if err := s.p.write(&Frame{Op: OpSessionData, Session: s.id, Data: raw}); err != nil {
			return err
		}
		text = text[n:]
	}
	return nil
}

// CloseInput closes the program's stdin once it has read what was written.
func (s *Session) CloseInput() error {
	if s.isEnded() {
		return ErrSessionEnded
	}
	return s.p.write(&Frame{Op: OpSessionEOF, Session: s.id})
}

// Close asks the node to end the session; Done is closed once it has (End
// then says "closed", or the reason it ended first).
func (s *Session) Close() error {
	if s.isEnded() {
		return nil
	}
	return s.p.write(&Frame{Op: OpSessionClose, Session: s.id})
}
