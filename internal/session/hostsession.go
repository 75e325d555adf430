package session

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// hostSession is one session on its host: a program and the presenter's
// stream. Six goroutines serve it: the stream reader (presenter to input
// queue), the stdin writer (queue to program), the stdout reader (program to
// output buffer), the stream writer (output buffer and input credit to
// presenter, then the end frame), the stderr copier (to the log) and the
// waiter (program exit). Fields marked (mu) are guarded by mu.
type hostSession struct {
	h         *Host
	srv       *served
	id        string
	presenter Peer
	conn      net.Conn
	started   time.Time
	log       *logFile

	mu       sync.Mutex
	proc     *proc        // (mu) set once, before run
	state    string       // (mu)
	out      bytes.Buffer // (mu) program output not yet sent
	grant    int          // (mu) input credit to send to the presenter
	allowed  int          // (mu) input the presenter may still send
	in       []inItem     // (mu) input waiting for the program's stdin
	ctlBytes int          // (mu) bytes in `in` from control requests
	endInfo  *End         // (mu) set once, by end
	endedAt  time.Time    // (mu)
	exit     string       // (mu) how the program exited, once it has
	idleT    *time.Timer  // (mu)

	ended      atomic.Bool
	lastActive atomic.Int64 // unix nanoseconds
	bytesIn    atomic.Uint64
	bytesOut   atomic.Uint64

	wake    chan struct{} // 1 slot: the stream writer has work
	inWake  chan struct{} // 1 slot: the stdin writer has work
	done    chan struct{} // closed by end
	outDone chan struct{} // closed when stdout has ended
}

// inItem is input for the program: data (from the stream or a control
// request) or the end of input.
type inItem struct {
	data   []byte
	stream bool // counts against the stream's window
	eof    bool
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *hostSession) isEnded() bool { return s.ended.Load() }

func (s *hostSession) touch() { s.lastActive.Store(time.Now().UnixNano()) }

// end ends the session once: the first reason wins. The program is stopped
// and the stream writer sends what remains and the end frame.
func (s *hostSession) end(e End) {
	s.mu.Lock()
	if s.endInfo != nil {
		s.mu.Unlock()
		return
	}
	s.endInfo = &e
	s.endedAt = time.Now()
	s.state = StateEnding
	p := s.proc
	s.mu.Unlock()
	s.ended.Store(true)
	close(s.done)
	if p != nil {
		p.stdin.Close() // unblocks a stdin write the program does not read
	}
	// The rest of the output and the end frame get EndTimeout; this also
	// unblocks a write to a presenter that stopped reading.
	s.conn.SetWriteDeadline(time.Now().Add(s.h.cfg.EndTimeout))
	s.log.printf(s.id, "ended: %s", e)
	s.h.log.Debug("session ended", "session", short(s.id), "plugin", s.srv.spec.Name, "presenter", s.presenter.ID, "code", e.Code, "reason", e.Reason)
}

func (s *hostSession) info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := Info{
		ID: s.id, Plugin: s.srv.spec.Name, Version: s.srv.spec.Version, Role: RoleHost,
		Host: s.h.cfg.Self, Presenter: s.presenter, State: s.state, Started: s.started,
		LastActive: time.Unix(0, s.lastActive.Load()),
		BytesIn:    s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
	}
	if s.proc != nil {
		in.PID = s.proc.pid
	}
	if s.endInfo != nil {
		e := *s.endInfo
		if e.Exit == "" {
			e.Exit = s.exit
		}
		in.End, in.Ended = &e, s.endedAt
	}
	return in
}

// run answers the presenter and bridges program and stream until the
// session has ended, the end frame is sent and the program has exited.
func (s *hostSession) run(fr *frameReader) {
	h, p, spec := s.h, s.proc, s.srv.spec
	s.log.printf(s.id, "started for %s (%s), pid %d", s.presenter.Name, s.presenter.ID, p.pid)
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-s.done:
			p.stop(h.cfg.StopGrace)
		case <-p.exited:
			p.reapGroup()
		}
	})
	errDone := make(chan struct{})
	wg.Go(func() {
		defer close(errDone)
		s.log.copyLines(s.id, p.stderr)
	})
	wg.Go(s.stdoutLoop)
	wg.Go(s.stdinLoop)
	wg.Go(func() { s.waitLoop(errDone) })

	idle := s.srv.lim.IdleTimeout
	s.mu.Lock()
	if s.state == StateStarting {
		s.state = StateOpen
	}
	s.idleT = time.AfterFunc(idle, func() { s.checkIdle(idle) })
	s.mu.Unlock()
	if h.cfg.OnChange != nil {
		h.cfg.OnChange(s.info())
	}
	o := Opened{Session: s.id, Plugin: spec.Name, Version: spec.Version, Host: h.cfg.Self, Window: h.cfg.Window, Started: s.started}
	if _, err := s.conn.Write(encodeJSON(frameOpened, o)); err != nil {
		s.end(End{Code: CodeLost, Reason: "could not answer the presenter: " + err.Error()})
	}
	s.conn.SetDeadline(time.Time{})

	wg.Go(func() { s.readLoop(fr) })
	s.writeLoop()
	wg.Wait()
	p.stdout.Close()
	p.stderr.Close()
	s.mu.Lock()
	s.idleT.Stop()
	s.state = StateEnded
	s.mu.Unlock()
	h.finish(s)
}

func (s *hostSession) checkIdle(idle time.Duration) {
	since := time.Since(time.Unix(0, s.lastActive.Load()))
	if since >= idle {
		s.end(End{Code: CodeIdle, Reason: fmt.Sprintf("nothing went either way for %v, the idle limit of %s (sessions.idle_timeout); open a new session to go on", idle, s.srv.spec.Name)})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endInfo == nil {
		s.idleT.Reset(idle - since)
	}
}

// waitLoop waits for the program to exit, lets its output drain, and ends
// the session with the exit status (a no-op if it already ended).
func (s *hostSession) waitLoop(errDone <-chan struct{}) {
	p := s.proc
	<-p.exited
	p.reapGroup()
	// The group is gone, so the pipes end; a process that escaped the group
	// may hold them open: do not wait for it for long.
	deadline := time.Now().Add(time.Second)
	drain := func(done <-chan struct{}, f *os.File) {
		t := time.NewTimer(max(time.Until(deadline), 0))
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			f.Close()
			<-done
		}
	}
	drain(s.outDone, p.stdout)
	drain(errDone, p.stderr)
	exit := describeExit(p.err)
	s.mu.Lock()
	s.exit = exit
	s.mu.Unlock()
	e := End{Code: CodeExited, Reason: "the program exited", Exit: exit}
	if p.err != nil {
		e = End{Code: CodeCrashed, Reason: "the program ended: " + exit, Exit: exit}
	}
	s.end(e)
}

// stdoutLoop moves the program's output into the output buffer.
func (s *hostSession) stdoutLoop() {
	defer close(s.outDone)
	buf := make([]byte, MaxData)
	for {
		n, err := s.proc.stdout.Read(buf)
		if n > 0 {
			s.output(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (s *hostSession) output(b []byte) {
	limit := s.srv.lim.OutputBuffer
	s.mu.Lock()
	if s.endInfo != nil {
		s.mu.Unlock()
		return
	}
	if held := s.out.Len(); held+len(b) > limit {
		s.mu.Unlock()
		s.end(End{Code: CodeOverflow, Reason: fmt.Sprintf(
			"the presenter did not read the program's output: %d bytes were waiting and the limit of %s is %d (sessions.output_buffer); read the output as it comes",
			held+len(b), s.srv.spec.Name, limit)})
		return
	}
	s.out.Write(b)
	s.mu.Unlock()
	s.touch()
	signal(s.wake)
}

// stdinLoop writes queued input to the program and returns the credit for
// it to the presenter.
func (s *hostSession) stdinLoop() {
	stdin := s.proc.stdin
	defer stdin.Close()
	broken := false // stdin closed, by the presenter's eof or the program
	quarter := max(s.h.cfg.Window/4, 1)
	for {
		s.mu.Lock()
		for len(s.in) == 0 && s.endInfo == nil {
			s.mu.Unlock()
			select {
			case <-s.inWake:
			case <-s.done:
			}
			s.mu.Lock()
		}
		if s.endInfo != nil {
			s.mu.Unlock()
			return
		}
		it := s.in[0]
		s.in[0] = inItem{}
		s.in = s.in[1:]
		s.mu.Unlock()
		if it.eof {
			stdin.Close()
			broken = true
			continue
		}
		if !broken {
			if _, err := stdin.Write(it.data); err != nil {
				broken = true // the program closed its stdin: drop its input
			}
		}
		s.mu.Lock()
		wake := false
		if it.stream {
			s.grant += len(it.data)
			wake = s.grant >= quarter || len(s.in) == 0
		} else {
			s.ctlBytes -= len(it.data)
		}
		s.mu.Unlock()
		if wake {
			signal(s.wake)
		}
	}
}

// readLoop reads the presenter's frames.
func (s *hostSession) readLoop(fr *frameReader) {
	for {
		typ, body, err := fr.next()
		if err != nil {
			switch {
			case errors.Is(err, ErrProtocol):
				s.end(End{Code: CodeProtocol, Reason: "the presenter broke the protocol: " + err.Error()})
			default:
				s.end(End{Code: CodeLost, Reason: fmt.Sprintf("the connection to the presenter's node %s was lost: %v", s.presenter.Name, err)})
			}
			return
		}
		switch typ {
		case frameData:
			s.mu.Lock()
			if s.endInfo != nil {
				s.mu.Unlock()
				continue
			}
			if len(body) > s.allowed {
				allowed := s.allowed
				s.mu.Unlock()
				s.end(End{Code: CodeProtocol, Reason: fmt.Sprintf("the presenter sent %d bytes with %d of input credit left", len(body), allowed)})
				continue
			}
			s.allowed -= len(body)
			s.in = append(s.in, inItem{data: bytes.Clone(body), stream: true})
			s.mu.Unlock()
			s.bytesIn.Add(uint64(len(body)))
			s.touch()
			signal(s.inWake)
		case frameEOF:
			s.mu.Lock()
			s.in = append(s.in, inItem{eof: true})
			s.mu.Unlock()
			signal(s.inWake)
		case frameClose:
			s.end(End{Code: CodeClosed, Reason: "closed by the presenter"})
		default:
			s.end(End{Code: CodeProtocol, Reason: fmt.Sprintf("the presenter sent an unexpected frame 0x%02x", typ)})
		}
	}
}

// writeLoop sends input credit and output to the presenter until the
// session ends; then the output still held (unless the presenter is gone,
// closed the session or overflowed it), the end frame, and closes the
// stream.
func (s *hostSession) writeLoop() {
	c := s.conn
	var chunk, frame []byte
	failed := false
	for {
		s.mu.Lock()
		grant := s.grant
		s.grant = 0
		s.allowed += grant
		ending := s.endInfo != nil
		n := 0
		if !ending {
			n = min(s.out.Len(), MaxData)
			chunk = append(chunk[:0], s.out.Next(n)...)
		}
		s.mu.Unlock()
		if grant > 0 {
			if _, err := c.Write(windowFrame(grant)); err != nil {
				s.end(End{Code: CodeLost, Reason: "writing to the presenter failed: " + err.Error()})
				failed = true
				break
			}
		}
		if n > 0 {
			frame = appendFrame(frame[:0], frameData, chunk)
			if _, err := c.Write(frame); err != nil {
				s.end(End{Code: CodeLost, Reason: "writing to the presenter failed: " + err.Error()})
				failed = true
				break
			}
			s.bytesOut.Add(uint64(n))
		}
		if ending {
			break
		}
		if grant == 0 && n == 0 {
			select {
			case <-s.wake:
			case <-s.done:
			}
		}
	}
	s.mu.Lock()
	e := *s.endInfo
	var rest []byte
	switch e.Code {
	case CodeOverflow, CodeClosed, CodeLost, CodePresenterLeft, CodeProtocol:
	default:
		rest = bytes.Clone(s.out.Bytes())
	}
	s.out = bytes.Buffer{}
	s.mu.Unlock()
	if !failed {
		c.SetWriteDeadline(time.Now().Add(s.h.cfg.EndTimeout))
		for len(rest) > 0 && !failed {
			n := min(len(rest), MaxData)
			frame = appendFrame(frame[:0], frameData, rest[:n])
			if _, err := c.Write(frame); err != nil {
				failed = true
			}
			s.bytesOut.Add(uint64(n))
			rest = rest[n:]
		}
		if !failed {
			c.Write(encodeJSON(frameEnd, e))
		}
	}
	c.Close()
	c.SetReadDeadline(time.Now())
}

// ctlWrite queues input from a control request.
func (s *hostSession) ctlWrite(data []byte) *Refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.endInfo != nil:
		return &Refusal{Code: RefuseEnded, Error: fmt.Sprintf("session %s has ended: %s", short(s.id), s.endInfo.Reason)}
	case s.state != StateOpen:
		return &Refusal{Code: RefuseBusy, Error: fmt.Sprintf("session %s is not established yet", short(s.id)), Hint: "try again"}
	case len(data) == 0:
		return nil
	case s.ctlBytes+len(data) > ctlBuffer:
		return &Refusal{Code: RefuseBusy, Error: fmt.Sprintf("session %s: %d bytes of earlier writes still wait for the program", short(s.id), s.ctlBytes),
			Hint: "try again when the program has read its input"}
	}
	s.ctlBytes += len(data)
	s.in = append(s.in, inItem{data: bytes.Clone(data)})
	s.bytesIn.Add(uint64(len(data)))
	s.touch()
	signal(s.inWake)
	return nil
}
