package subservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by the SDK.
var (
	// ErrNotPlugin reports that the process was not started by a Nearby
	// node: NEARBY_SOCKET or NEARBY_TOKEN is missing from the environment.
	ErrNotPlugin = errors.New("subservice: not started by a Nearby node (NEARBY_SOCKET or NEARBY_TOKEN unset)")
	// ErrClosed reports a call on a Plugin whose connection has ended.
	ErrClosed = errors.New("subservice: connection closed")
)

// Message is a message to this subservice from the same subservice on a
// node of the mesh (possibly this node).
type Message struct {
	From      Peer            // the sending node
	Broadcast bool            // sent to every node, not to this one alone
	Data      json.RawMessage // the JSON value the sender passed
}

// Decode unmarshals m.Data into v.
func (m Message) Decode(v any) error {
	if err := json.Unmarshal(m.Data, v); err != nil {
		return fmt.Errorf("subservice: decode message from %s: %w", m.From.ID, err)
	}
	return nil
}

// PeerEvent reports a node joining (Up) or leaving the mesh.
type PeerEvent struct {
	Up   bool
	Peer Peer
}

// Error is an error frame from the node. ID is the id of the send or
// broadcast it concerns (0 when it concerns none); To is the node a failed
// send was addressed to, when known; Session is the session a failed
// session write concerns.
type Error struct {
	ID      uint64
	Code    string
	Message string
	To      string
	Session string
}

// Error implements error.
func (e *Error) Error() string {
	s := "subservice: node error " + e.Code
	if e.ID != 0 {
		s += fmt.Sprintf(" (id %d)", e.ID)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func frameError(f *Frame) *Error {
	return &Error{ID: f.ID, Code: f.Code, Message: f.Message, To: f.To, Session: f.Session}
}

// Buffer sizes of the channels a Plugin returns.
const (
	messageBuffer = 64
	eventBuffer   = 64
	errorBuffer   = 64
	clickBuffer   = 16
)

// Plugin is a plugin's connection to its node. Its methods are safe for
// concurrent use.
//
// One goroutine reads the node's frames. It blocks while the Messages
// channel is full, so a plugin that stops reading Messages stops reading the
// socket, and the node then drops frames for it (counting them and sending a
// "dropped" error once it reads again). Events, Errors and Clicks never
// block that goroutine: when one of them is full, new values for it are
// discarded. Peers is kept current either way.
//
// Frames to the node are queued and written by one goroutine, as many per
// write as have accumulated; Close writes what is still queued.
type Plugin struct {
	conn    net.Conn
	lr      *LineReader
	self    Peer
	sub     string
	version string
	maxLine int

	nextID atomic.Uint64

	// Frames to the node are appended to wbuf and written by writeLoop in
	// one Write per batch. wmu guards the w fields; wcond signals room.
	wmu   sync.Mutex
	wcond *sync.Cond
	wbuf  []byte
	wfree []byte // the other buffer, reused
	werr  error
	wbusy bool // writeLoop is writing a batch
	wkick chan struct{}
	wdone chan struct{}

	mu    sync.Mutex
	peers map[string]Peer
	err   error

	smu      sync.Mutex
	opens    map[uint64]chan openResult // Open calls waiting for their answer
	sessions map[string]*Session        // open sessions by id

	msgs   chan Message
	events chan PeerEvent
	errs   chan *Error
	clicks chan string

	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

// Connect connects to the node that started this process, using the socket
// and one-time token in its environment (NEARBY_SOCKET, NEARBY_TOKEN), and
// returns once the node has welcomed it. It returns ErrNotPlugin when the
// environment lacks them and an *Error when the node refuses the hello.
func Connect(ctx context.Context) (*Plugin, error) {
	socket, token := os.Getenv(EnvSocket), os.Getenv(EnvToken)
	if socket == "" || token == "" {
		return nil, ErrNotPlugin
	}
	return Dial(ctx, socket, token)
}

// Dial is Connect with an explicit socket path and token.
func Dial(ctx context.Context, socket, token string) (*Plugin, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("subservice: dial node: %w", err)
	}
	p, err := handshake(ctx, c, token)
	if err != nil {
		c.Close()
		return nil, err
	}
	go p.readLoop()
	go p.writeLoop()
	return p, nil
}

func handshake(ctx context.Context, c net.Conn, token string) (*Plugin, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	hello, err := EncodeFrame(&Frame{Op: OpHello, Token: token, Protocol: ProtocolVersion})
	if err != nil {
		stop()
		return nil, err
	}
	if _, err := c.Write(hello); err != nil {
		stop()
		return nil, ctxOr(ctx, fmt.Errorf("subservice: send hello: %w", err))
	}
	lr := NewLineReader(c, 4*DefaultMaxLine)
	var w *Frame
	for w == nil {
		line, err := lr.ReadLine()
		if err == ErrTooLarge {
			continue
		}
		if err != nil {
			stop()
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, ctxOr(ctx, fmt.Errorf("subservice: wait for welcome: %w", err))
		}
		f, err := DecodeFrame(line)
		if err != nil {
			continue
		}
		switch f.Op {
		case OpWelcome:
			w = f
		case OpError:
			stop()
			return nil, frameError(f)
		}
	}
	if !stop() {
		return nil, ctx.Err()
	}
	c.SetDeadline(time.Time{})
	p := &Plugin{
		conn:     c,
		lr:       lr,
		sub:      w.Subservice,
		version:  w.Version,
		maxLine:  w.MaxLine,
		peers:    make(map[string]Peer, len(w.Peers)),
		msgs:     make(chan Message, messageBuffer),
		events:   make(chan PeerEvent, eventBuffer),
		errs:     make(chan *Error, errorBuffer),
		clicks:   make(chan string, clickBuffer),
		opens:    make(map[uint64]chan openResult),
		sessions: make(map[string]*Session),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		wkick:    make(chan struct{}, 1),
		wdone:    make(chan struct{}),
	}
	p.wcond = sync.NewCond(&p.wmu)
	if w.Node != nil {
		p.self = *w.Node
	}
	if p.maxLine <= 0 {
		p.maxLine = DefaultMaxLine
	}
	// Frames from the node carry at most one plugin frame's data plus a
	// little framing; allow generous room over the node's own cap.
	lr.max = max(lr.max, 2*p.maxLine+64<<10)
	for _, peer := range w.Peers {
		p.peers[peer.ID] = peer
	}
	return p, nil
}

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (p *Plugin) readLoop() {
	defer func() {
		p.endSessions()
		close(p.msgs)
		close(p.events)
		close(p.errs)
		close(p.clicks)
		close(p.done)
	}()
	var mf Frame // message frames are decoded here, not allocated
	var strs strCache
	for {
		line, err := p.lr.ReadLine()
		if err == ErrTooLarge {
			p.pushErr(&Error{Code: CodeTooLarge, Message: "a frame from the node exceeded the reader's cap and was discarded"})
			continue
		}
		if err == nil {
			mf = Frame{}
			if decodeFastInto(bytes.TrimSpace(line), &mf, &strs, false) && mf.Op == OpMessage {
				data := mf.Data
				if data == nil {
					data = json.RawMessage("null")
				}
				p.deliver(Message{From: Peer{ID: mf.From, Name: mf.FromName}, Broadcast: mf.Broadcast, Data: data})
				continue
			}
		}
		if err != nil {
			select {
			case <-p.closing:
				err = ErrClosed
			default:
				if err == io.EOF {
					err = fmt.Errorf("%w: node closed the connection", ErrClosed)
				}
			}
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
		f, err := DecodeFrame(line)
		if err != nil {
			p.pushErr(&Error{Code: CodeBadFrame, Message: err.Error()})
			continue
		}
		switch f.Op {
		case OpMessage:
			data := f.Data
			if data == nil {
				data = json.RawMessage("null")
			}
			p.deliver(Message{From: Peer{ID: f.From, Name: f.FromName}, Broadcast: f.Broadcast, Data: data})
		case OpPeer:
			if f.Peer == nil {
				continue
			}
			up := f.Event == PeerUp
			p.mu.Lock()
			if up {
				p.peers[f.Peer.ID] = *f.Peer
			} else {
				delete(p.peers, f.Peer.ID)
			}
			p.mu.Unlock()
			select {
			case p.events <- PeerEvent{Up: up, Peer: *f.Peer}:
			default:
			}
		case OpError:
			if !p.openFailed(f) {
				p.pushErr(frameError(f))
			}
		case OpSession:
			p.sessionEvent(f)
		case OpSessionData:
			p.sessionData(f)
		case OpClick:
			select {
			case p.clicks <- f.Item:
			default:
			}
		}
	}
}

// deliver hands m to Messages, waiting while it is full (unless closing).
func (p *Plugin) deliver(m Message) {
	select {
	case p.msgs <- m:
		return
	default:
	}
	select {
	case p.msgs <- m:
	case <-p.closing:
	}
}

func (p *Plugin) pushErr(e *Error) {
	select {
	case p.errs <- e:
	default:
	}
}

// Self returns the node this plugin runs on.
func (p *Plugin) Self() Peer { return p.self }

// Subservice returns the plugin's subservice name, as the node knows it.
func (p *Plugin) Subservice() string { return p.sub }

// Version returns the plugin's version, as the node knows it.
func (p *Plugin) Version() string { return p.version }

// MaxLine returns the node's cap on one frame, in bytes.
func (p *Plugin) MaxLine() int { return p.maxLine }

// Peers returns the other nodes of the mesh, sorted by ID: the list from the
// welcome, kept current by peer events.
func (p *Plugin) Peers() []Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Peer, 0, len(p.peers))
	for _, peer := range p.peers {
		out = append(out, peer)
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Messages returns the channel of incoming messages. It is closed when the
// connection ends.
func (p *Plugin) Messages() <-chan Message { return p.msgs }

// Events returns the channel of peer events. It is closed when the
// connection ends.
func (p *Plugin) Events() <-chan PeerEvent { return p.events }

// Errors returns the channel of error frames from the node, such as a
// no-subservice error for an earlier Send. It is closed when the connection
// ends.
func (p *Plugin) Errors() <-chan *Error { return p.errs }

// Clicks returns the channel of clicked menu item ids. It is closed when the
// connection ends.
func (p *Plugin) Clicks() <-chan string { return p.clicks }

// Done returns a channel closed when the connection has ended.
func (p *Plugin) Done() <-chan struct{} { return p.done }

// Err returns why the connection ended, or nil while it is open.
func (p *Plugin) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Send sends data, marshalled as JSON, to this subservice on the node with
// id to. It returns the frame's id: an Error with that ID arrives on Errors
// if the node or the remote refuses the message later. Send returns once
// the frame is queued for the socket; when 1 MiB is already waiting because
// the node is not reading (backpressure), it blocks until there is room.
func (p *Plugin) Send(to string, data any) (uint64, error) {
	if to == "" {
		return 0, fmt.Errorf("subservice: send: empty node id")
	}
	raw, err := marshalData(data)
	if err != nil {
		return 0, fmt.Errorf("subservice: send: marshal data: %w", err)
	}
	id := p.nextID.Add(1)
	return id, p.writeHot(OpSend, id, to, raw)
}

// Broadcast sends data, marshalled as JSON, to this subservice on every
// other node of the mesh, and returns the frame's id.
func (p *Plugin) Broadcast(data any) (uint64, error) {
	raw, err := marshalData(data)
	if err != nil {
		return 0, fmt.Errorf("subservice: broadcast: marshal data: %w", err)
	}
	id := p.nextID.Add(1)
	return id, p.writeHot(OpBroadcast, id, "", raw)
}

// SetMenu replaces the plugin's tray menu. Clicks on its items arrive on
// Clicks.
func (p *Plugin) SetMenu(items []MenuItem) error {
	if err := ValidateMenu(items); err != nil {
		return err
	}
	return p.write(&Frame{Op: OpMenu, Items: items})
}

// writeBuffer is how many bytes of frames may wait for the socket before
// Send, Broadcast and SetMenu block.
const writeBuffer = 1 << 20

// write queues one frame for writeLoop, blocking while the queue is full.
func (p *Plugin) write(f *Frame) error {
	b, err := EncodeFrame(f)
	if err != nil {
		return err
	}
	return p.queue(f.Op, b)
}

// scratchPool holds buffers for encoding send and broadcast frames.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeHot is write for a send or broadcast frame whose data is one
// compact JSON value (from marshalData): encoded without a Frame or a
// check of the data, and without allocating.
func (p *Plugin) writeHot(op string, id uint64, to string, data []byte) error {
	bp := scratchPool.Get().(*[]byte)
	b, _ := appendHot((*bp)[:0], op, id, to, "", "", false, data, true)
	b = append(b, '\n')
	err := p.queue(op, b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		scratchPool.Put(bp)
	}
	return err
}

// queue appends the encoded frame b (for op) to the write buffer,
// blocking while the buffer is full. b is not retained.
func (p *Plugin) queue(op string, b []byte) error {
	if len(b)-1 > p.maxLine {
		return fmt.Errorf("subservice: %s: %w: %d bytes, the node accepts %d", op, ErrTooLarge, len(b)-1, p.maxLine)
	}
	select {
	case <-p.done:
		return fmt.Errorf("subservice: %s: %w", op, ErrClosed)
	default:
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for p.werr == nil && len(p.wbuf) > 0 && len(p.wbuf)+len(b) > writeBuffer {
		p.wcond.Wait()
	}
	if p.werr != nil {
		return p.werr
	}
	p.wbuf = append(p.wbuf, b...)
	select {
	case p.wkick <- struct{}{}:
	default:
	}
	return nil
}

// writeLoop writes queued frames, as many per Write as have accumulated.
func (p *Plugin) writeLoop() {
	defer close(p.wdone)
	for {
		select {
		case <-p.wkick:
		case <-p.closing:
			return
		}
		for {
			p.wmu.Lock()
			if len(p.wbuf) == 0 {
				p.wmu.Unlock()
				break
			}
			// Swap buffers: senders fill the other one meanwhile.
			out := p.wbuf
			p.wbuf = p.wfree[:0]
			p.wfree = nil
			p.wbusy = true
			p.wmu.Unlock()
			_, err := p.conn.Write(out)
			p.wmu.Lock()
			p.wfree = out[:0]
			p.wbusy = false
			if err != nil && p.werr == nil {
				p.werr = fmt.Errorf("subservice: write to node: %w", err)
			}
			p.wcond.Broadcast()
			p.wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// flush waits until every queued frame has been written or writing has
// failed; the write deadline it sets makes a write fail after timeout.
func (p *Plugin) flush(timeout time.Duration) {
	p.conn.SetWriteDeadline(time.Now().Add(timeout))
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for p.werr == nil && (p.wbusy || len(p.wbuf) > 0) {
		p.wcond.Wait()
	}
}

// closeTimeout bounds how long Close waits for queued frames to be written.
const closeTimeout = 5 * time.Second

// Close writes the frames still queued (waiting at most 5 s), closes the
// connection and waits for the SDK's goroutines to end. It is safe to call
// more than once.
func (p *Plugin) Close() error {
	p.closeOnce.Do(func() {
		p.flush(closeTimeout)
		p.wmu.Lock()
		if p.werr == nil {
			p.werr = ErrClosed
		}
		p.wcond.Broadcast()
		p.wmu.Unlock()
		close(p.closing)
		p.conn.Close()
	})
	<-p.done
	<-p.wdone
	return nil
}
