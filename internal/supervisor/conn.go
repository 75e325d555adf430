package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

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
		}
	}()
	c.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	lr := subservice.NewLineReader(c, s.cfg.MaxLine)
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
		f, err := subservice.DecodeFrame(line)
		if err != nil {
			s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, Code: subservice.CodeBadFrame, Message: err.Error()})
			continue
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
		s.handle(inst, c, f)
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
	welcome, err := subservice.EncodeFrame(&subservice.Frame{
		Op:         subservice.OpWelcome,
		Protocol:   subservice.ProtocolVersion,
		Node:       &self,
		Subservice: p.sub,
		Version:    p.spec.Version,
		Peers:      peers,
		MaxLine:    s.cfg.MaxLine,
	})
	if err != nil {
		s.mu.Unlock()
		return nil
	}
	inst.conn = c
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

// handle acts on one frame from a welcomed plugin. The subservice is always
// the instance's own, never taken from the frame.
func (s *Supervisor) handle(inst *instance, c net.Conn, f *subservice.Frame) {
	name := inst.p.sub
	fail := func(code, msg string) {
		s.reply(c, inst, &subservice.Frame{Op: subservice.OpError, ID: f.ID, Code: code, Message: msg, To: f.To})
	}
	data := f.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	switch f.Op {
	case subservice.OpSend:
		if f.To == "" {
			fail(subservice.CodeBadFrame, "send needs to")
			return
		}
		self := s.cfg.Router.Self()
		if f.To == self.ID {
			if err := s.Deliver(self, name, data, false); err != nil {
				fail(NackReason(err), err.Error())
			}
			return
		}
		var mid uint64
		if f.ID != 0 {
			mid = s.track(inst, f.ID)
		}
		if err := s.cfg.Router.Send(f.To, name, data, mid); err != nil {
			if mid != 0 {
				s.untrack(mid, "")
			}
			switch {
			case errors.Is(err, ErrQueueFull):
				fail(subservice.CodeQueueFull, fmt.Sprintf("the queue to node %s is full; message not sent", f.To))
			case errors.Is(err, ErrNoPeer) || !s.knownPeer(f.To):
				fail(subservice.CodeNoPeer, fmt.Sprintf("node %s is not connected", f.To))
			default:
				fail(subservice.CodeSendFailed, err.Error())
			}
		}
	case subservice.OpBroadcast:
		s.cfg.Router.Broadcast(name, data)
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
	case subservice.OpHello:
		fail(subservice.CodeBadFrame, "already welcomed")
	default:
		fail(subservice.CodeBadFrame, fmt.Sprintf("unknown op %q", f.Op))
	}
}

// knownPeer reports whether id is in the peer table (from PeerEvent).
func (s *Supervisor) knownPeer(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.peers[id]
	return ok
}

// writeLoop writes inst's queued frames to c in batches. A plugin that does
// not read blocks only this goroutine; its queue fills and further frames
// are dropped and counted.
func (s *Supervisor) writeLoop(inst *instance, c net.Conn) {
	defer s.wg.Done()
	bw := bufio.NewWriterSize(c, 64<<10)
	var batch [][]byte
	for {
		var dropped uint64
		var ok bool
		batch, dropped, ok = inst.q.wait(batch)
		if !ok {
			return
		}
		for _, b := range batch {
			if _, err := bw.Write(b); err != nil {
				c.Close()
				return
			}
		}
		clear(batch)
		if dropped > 0 {
			line, _ := subservice.EncodeFrame(&subservice.Frame{Op: subservice.OpError, Code: subservice.CodeDropped,
				Message: fmt.Sprintf("%d frames for this plugin were dropped because it did not read them fast enough", dropped)})
			bw.Write(line)
		}
		if err := bw.Flush(); err != nil {
			c.Close()
			return
		}
	}
}
