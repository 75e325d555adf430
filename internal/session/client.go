package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Pending is a session its host has accepted, whose stream nobody reads
// yet: turn it into a Conn (to use it from Go) or a Relay (to bridge it to
// a local presenter that speaks the protocol itself).
type Pending struct {
	// Opened is the host's answer.
	Opened Opened
	c      net.Conn
	fr     *frameReader
}

// Handshake sends req on c, a fresh stream to a host's "session" service,
// and reads the answer. A refusal is returned as a *RefusedError (and c is
// closed). ctx bounds the handshake, as does timeout when positive.
func Handshake(ctx context.Context, c net.Conn, req Request, timeout time.Duration) (*Pending, error) {
	req.V = ProtocolVersion
	if err := req.validate(); err != nil {
		c.Close()
		return nil, err
	}
	stop := deadlineFor(ctx, c, timeout)
	defer stop()
	if _, err := c.Write(encodeJSON(frameOpen, req)); err != nil {
		c.Close()
		return nil, ctxErr(ctx, fmt.Errorf("session: send request: %w", err))
	}
	return readAnswer(ctx, c)
}

// ReadAnswer reads the first frame of a session stream (opened or refused)
// that someone else requested: a presenter process reads it from its node,
// which relays the host's answer.
func ReadAnswer(ctx context.Context, c net.Conn, timeout time.Duration) (*Pending, error) {
	stop := deadlineFor(ctx, c, timeout)
	defer stop()
	return readAnswer(ctx, c)
}

func readAnswer(ctx context.Context, c net.Conn) (*Pending, error) {
	fr := newFrameReader(c)
	typ, body, err := fr.next()
	if err != nil {
		c.Close()
		return nil, ctxErr(ctx, fmt.Errorf("session: read answer: %w", err))
	}
	switch typ {
	case frameOpened:
		o, err := decodeJSON[Opened](body)
		if err != nil {
			c.Close()
			return nil, err
		}
		return &Pending{Opened: *o, c: c, fr: fr}, nil
	case frameRefused:
		c.Close()
		r, err := decodeJSON[Refusal](body)
		if err != nil {
			return nil, err
		}
		return nil, &RefusedError{*r}
	}
	c.Close()
	return nil, fmt.Errorf("%w: want opened or refused, got frame 0x%02x", ErrProtocol, typ)
}

// deadlineFor sets a deadline on c from ctx and timeout and makes ctx's
// cancellation interrupt c; the returned func clears both.
func deadlineFor(ctx context.Context, c net.Conn, timeout time.Duration) func() {
	var dl time.Time
	if timeout > 0 {
		dl = time.Now().Add(timeout)
	}
	if d, ok := ctx.Deadline(); ok && (dl.IsZero() || d.Before(dl)) {
		dl = d
	}
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		c.SetDeadline(time.Time{})
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Open is Handshake, then Conn.
func Open(ctx context.Context, c net.Conn, req Request, timeout time.Duration) (*Conn, error) {
	p, err := Handshake(ctx, c, req, timeout)
	if err != nil {
		return nil, err
	}
	return p.Conn(), nil
}

// Conn returns the session as a Conn, which starts reading it.
func (p *Pending) Conn() *Conn {
	c := &Conn{
		c:          p.c,
		fr:         p.fr,
		info:       p.Opened,
		credit:     p.Opened.Window,
		endTimeout: DefaultEndTimeout,
		creditCh:   make(chan struct{}, 1),
		data:       make(chan []byte, 16),
		closing:    make(chan struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	go c.readLoop()
	return c
}

// Abandon ends a pending session: it asks the host to close it and closes
// the stream.
func (p *Pending) Abandon() {
	p.c.SetWriteDeadline(time.Now().Add(time.Second))
	p.c.Write(appendFrame(nil, frameClose, nil))
	p.c.Close()
}

// Conn is the presenter's side of a session. Write sends to the program's
// stdin, Read returns what the program writes to its stdout and io.EOF
// once the session has ended; End then says why.
//
// Read must be called from one goroutine at a time; Write and CloseWrite
// are serialised; Close and the other methods may be called from any
// goroutine. Call Read while writing: the host grants input credit only
// as the program reads, and a program that writes more than it is read
// ends its session when its output buffer overflows.
type Conn struct {
	c          net.Conn
	fr         *frameReader
	info       Opened
	endTimeout time.Duration

	wmu  sync.Mutex // serialises frame writes
	wbuf []byte

	mu       sync.Mutex
	credit   int
	wdl      time.Time
	end      *End
	creditCh chan struct{} // 1 slot: credit arrived, or the deadline changed

	data       chan []byte // from readLoop; closed after the last
	rbuf       []byte
	closeOnce  sync.Once
	closing    chan struct{}
	done       chan struct{} // closed when the session has ended
	doneOnce   sync.Once
	readerDone chan struct{}

	bytesIn, bytesOut atomic.Uint64
}

// Info returns the host's answer: session id, plugin, version, host.
func (c *Conn) Info() Opened { return c.info }

// Done returns a channel closed when the session has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// End returns why the session ended, once it has.
func (c *Conn) End() (End, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.end == nil {
		return End{}, false
	}
	return *c.end, true
}

// Counts returns the bytes written to the program and read from it.
func (c *Conn) Counts() (in, out uint64) { return c.bytesIn.Load(), c.bytesOut.Load() }

func (c *Conn) finish(e End) {
	c.mu.Lock()
	if c.end == nil {
		c.end = &e
	}
	c.mu.Unlock()
	c.doneOnce.Do(func() { close(c.done) })
	signal(c.creditCh)
}

func lostEnd(err error) End {
	if errors.Is(err, ErrProtocol) {
		return End{Code: CodeProtocol, Reason: "the host broke the protocol: " + err.Error()}
	}
	return End{Code: CodeLost, Reason: "the connection to the host was lost: " + err.Error()}
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	defer close(c.data)
	defer c.c.Close()
	for {
		typ, body, err := c.fr.next()
		if err != nil {
			c.finish(lostEnd(err))
			return
		}
		switch typ {
		case frameData:
			c.bytesOut.Add(uint64(len(body)))
			select {
			case c.data <- bytes.Clone(body):
			case <-c.closing:
			}
		case frameWindow:
			n, err := decodeWindow(body)
			if err != nil {
				c.finish(lostEnd(err))
				return
			}
			c.mu.Lock()
			c.credit += n
			c.mu.Unlock()
			signal(c.creditCh)
		case frameEnd:
			e, err := decodeJSON[End](body)
			if err != nil {
				c.finish(lostEnd(err))
				return
			}
			c.finish(*e)
			return
		default:
			c.finish(lostEnd(fmt.Errorf("%w: unexpected frame 0x%02x", ErrProtocol, typ)))
			return
		}
	}
}

// Read reads the program's output. It returns io.EOF once the session has
// ended and all its output has been read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.rbuf) == 0 {
		b, ok := <-c.data
		if !ok {
			return 0, io.EOF
		}
		c.rbuf = b
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

// SetWriteDeadline bounds Write and CloseWrite (a zero t: no bound).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	signal(c.creditCh)
	return c.c.SetWriteDeadline(t)
}

func (c *Conn) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.end != nil {
		return &EndedError{End: *c.end}
	}
	return fmt.Errorf("session: %w", net.ErrClosed)
}

// takeCredit waits for input credit and takes up to want bytes of it.
func (c *Conn) takeCredit(want int) (int, error) {
	for {
		select {
		case <-c.closing:
			return 0, c.closedErr()
		default:
		}
		c.mu.Lock()
		if c.end != nil {
			e := *c.end
			c.mu.Unlock()
			return 0, &EndedError{End: e}
		}
		if c.credit > 0 {
			k := min(want, c.credit)
			c.credit -= k
			c.mu.Unlock()
			return k, nil
		}
		dl := c.wdl
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, fmt.Errorf("%w: %w", ErrTimeout, os.ErrDeadlineExceeded)
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-c.creditCh:
		case <-c.done:
		case <-c.closing:
		case <-timeout:
			return 0, fmt.Errorf("%w: %w", ErrTimeout, os.ErrDeadlineExceeded)
		}
	}
}

// Write sends p to the program's stdin. It blocks while the program has not
// read enough of the earlier input (the host's window). After the session
// ended it returns an *EndedError.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := 0
	for len(p) > 0 {
		k, err := c.takeCredit(min(len(p), MaxData))
		if err != nil {
			return total, err
		}
		c.wbuf = appendFrame(c.wbuf[:0], frameData, p[:k])
		if _, err := c.c.Write(c.wbuf); err != nil {
			c.finish(lostEnd(err))
			return total, fmt.Errorf("session: write: %w", err)
		}
		c.bytesIn.Add(uint64(k))
		total += k
		p = p[k:]
	}
	return total, nil
}

// CloseWrite tells the program there is no more input: its stdin is
// closed once it has read what was sent.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, ok := c.End(); ok {
		return c.closedErr()
	}
	if _, err := c.c.Write(appendFrame(nil, frameEOF, nil)); err != nil {
		return fmt.Errorf("session: close write: %w", err)
	}
	return nil
}

// Close ends the session (the host stops the program: CodeClosed) unless it
// has ended already, waits for the host's confirmation (at most 5 s) and
// releases the stream. Output not yet read is dropped. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		select {
		case <-c.done:
		default:
			// A Write waiting for credit returns (closing is closed); one
			// blocked on the stream gives up at this deadline.
			c.c.SetWriteDeadline(time.Now().Add(c.endTimeout))
			c.wmu.Lock()
			_, err := c.c.Write(appendFrame(nil, frameClose, nil))
			c.wmu.Unlock()
			if err == nil {
				t := time.NewTimer(c.endTimeout)
				select {
				case <-c.done:
				case <-t.C:
				}
				t.Stop()
			}
			c.finish(End{Code: CodeClosed, Reason: "closed by the presenter (the host did not confirm)"})
		}
		c.c.Close()
		c.c.SetReadDeadline(time.Now())
		<-c.readerDone
	})
	return nil
}

// Control sends one control request on c, a fresh stream to a host's
// "session-ctl" service, and returns nil if the host did it or a
// *RefusedError. It closes c.
func Control(ctx context.Context, c net.Conn, req CtlRequest, timeout time.Duration) error {
	defer c.Close()
	req.V = ProtocolVersion
	if err := req.validate(); err != nil {
		return err
	}
	b := encodeJSON(frameCtl, req)
	if len(b)-headerLen > MaxFrame {
		return fmt.Errorf("session: control request of %d bytes, more than %d: send less at a time", len(b)-headerLen, MaxFrame)
	}
	stop := deadlineFor(ctx, c, timeout)
	defer stop()
	if _, err := c.Write(b); err != nil {
		return ctxErr(ctx, fmt.Errorf("session: send control request: %w", err))
	}
	fr := newFrameReader(c)
	typ, body, err := fr.next()
	if err != nil {
		return ctxErr(ctx, fmt.Errorf("session: read control answer: %w", err))
	}
	if typ != frameCtlAnswer {
		return fmt.Errorf("%w: want a control answer, got frame 0x%02x", ErrProtocol, typ)
	}
	a, err := decodeJSON[CtlAnswer](body)
	if err != nil {
		return err
	}
	if a.Refusal != nil {
		return &RefusedError{*a.Refusal}
	}
	return nil
}
