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
	// ErrNoBin reports SendBytes or BroadcastBytes on a connection without
	// binary messages: the node predates them, or WithoutBin was given.
	ErrNoBin = errors.New("subservice: this node does not take binary messages (it predates the bin feature); send JSON with Send or Broadcast, or update the node")
)

// Message is a message to this subservice from the same subservice on a
// node of the mesh (possibly this node).
type Message struct {
	From      Peer            // the sending node
	Broadcast bool            // sent to every node, not to this one alone
	Data      json.RawMessage // the JSON value the sender passed to Send or Broadcast
	// Bytes are the bytes the sender passed to SendBytes or BroadcastBytes,
	// when this plugin takes binary messages (Data is nil then). They are
	// the plugin's to keep.
	Bytes []byte
}

// Decode unmarshals m.Data (or, for a binary message, m.Bytes) into v.
func (m Message) Decode(v any) error {
	data := m.Data
	if data == nil && m.Bytes != nil {
		data = m.Bytes
	}
	if err := json.Unmarshal(data, v); err != nil {
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
//
// Count is how many ids the error concerns, ID to ID+Count-1: more than one
// when the SDK carried those messages as one batch (it coalesces sends
// that pile up); 0 or 1 means ID alone. Covers tells whether it concerns an
// id.
type Error struct {
	ID      uint64
	Count   int
	Code    string
	Message string
	To      string
	Session string
}

// Covers reports whether the error concerns the message with id id.
func (e *Error) Covers(id uint64) bool {
	return e.ID != 0 && id >= e.ID && id-e.ID < uint64(max(e.Count, 1))
}

// Error implements error.
func (e *Error) Error() string {
	s := "subservice: node error " + e.Code
	switch {
	case e.ID != 0 && e.Count > 1:
		s += fmt.Sprintf(" (ids %d to %d)", e.ID, e.ID+uint64(e.Count)-1)
	case e.ID != 0:
		s += fmt.Sprintf(" (id %d)", e.ID)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func frameError(f *Frame) *Error {
	return &Error{ID: f.ID, Count: f.Count, Code: f.Code, Message: f.Message, To: f.To, Session: f.Session}
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
// write as have accumulated; Close writes what is still queued. When the
// node grants the batch feature (it does unless WithoutBatch is given),
// sends to one node (and broadcasts) that pile up while a write is in
// progress travel as one batch frame, which costs the node and the mesh
// far less than one frame each; each keeps its own id, and the receiving
// plugins get them one by one, in order.
type Plugin struct {
	conn     net.Conn
	lr       *LineReader
	self     Peer
	sub      string
	version  string
	maxLine  int
	batch    bool // the node granted FeatureBatch
	bin      bool // the node granted FeatureBin
	maxBatch int  // messages per batch frame or bin block

	nextID atomic.Uint64

	// Frames to the node are appended to wbuf and written by writeLoop in
	// one Write per batch. wmu guards the w fields; wcond signals room.
	wmu   sync.Mutex
	wcond *sync.Cond
	wbuf  []byte
	wfree []byte // the other buffer, reused
	wtail tail   // the send or broadcast frame at the end of wbuf
	werr  error
	wbusy bool // writeLoop is writing a batch
	wkick chan struct{}
	wdone chan struct{}

	mu    sync.Mutex
	peers map[string]Peer
	err   error

	smu      sync.Mutex
	opens    map[uint64]openReq  // Open calls waiting for their answer
	sessions map[string]*Session // open sessions by id

	msgs   chan Message
	events chan PeerEvent
	errs   chan *Error
	clicks chan string

	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

// Option adjusts Connect and Dial.
type Option func(*options)

type options struct {
	noBatch bool
	noBin   bool
}

// WithoutBin makes the plugin not ask for binary messages: it gets every
// message as JSON in Message.Data (a binary one only if its bytes are
// JSON; the sender gets a "rejected" error for the others), and SendBytes
// and BroadcastBytes return ErrNoBin. Plugins never need it; it is there
// to compare and to test.
func WithoutBin() Option { return func(o *options) { o.noBin = true } }

// WithoutBatch makes the plugin speak protocol 1 without the batch
// feature: every send and broadcast is a frame of its own, exactly as
// nodes that predate batches expect. Plugins never need it (nodes that do
// not know the feature simply do not grant it); it is there to compare.
func WithoutBatch() Option { return func(o *options) { o.noBatch = true } }

// Connect connects to the node that started this process, using the socket
// and one-time token in its environment (NEARBY_SOCKET, NEARBY_TOKEN), and
// returns once the node has welcomed it. It returns ErrNotPlugin when the
// environment lacks them and an *Error when the node refuses the hello.
func Connect(ctx context.Context, opts ...Option) (*Plugin, error) {
	socket, token := os.Getenv(EnvSocket), os.Getenv(EnvToken)
	if socket == "" || token == "" {
		return nil, ErrNotPlugin
	}
	return Dial(ctx, socket, token, opts...)
}

// Dial is Connect with an explicit socket path and token.
func Dial(ctx context.Context, socket, token string, opts ...Option) (*Plugin, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("subservice: dial node: %w", err)
	}
	p, err := handshake(ctx, c, token, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	go p.readLoop()
	go p.writeLoop()
	return p, nil
}

func handshake(ctx context.Context, c net.Conn, token string, o options) (*Plugin, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	hf := &Frame{Op: OpHello, Token: token, Protocol: ProtocolVersion}
	if !o.noBatch {
		hf.Features = append(hf.Features, FeatureBatch)
	}
	if !o.noBin {
		hf.Features = append(hf.Features, FeatureBin)
	}
	hello, err := EncodeFrame(hf)
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
		opens:    make(map[uint64]openReq),
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
	// A node that does not know the feature ignores the request and grants
	// nothing; one that grants it without a cap gets the default.
	p.batch = !o.noBatch && slices.Contains(w.Features, FeatureBatch)
	p.bin = !o.noBin && slices.Contains(w.Features, FeatureBin)
	if p.batch || p.bin {
		p.maxBatch = w.MaxBatch
		if p.maxBatch <= 0 {
			p.maxBatch = DefaultMaxBatch
		}
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
	bi := batchInfo{spans: make([]int, 0, 2*DefaultMaxBatch)}
	for {
		line, err := p.lr.ReadLine()
		if err == ErrTooLarge {
			p.pushErr(&Error{Code: CodeTooLarge, Message: "a frame from the node exceeded the reader's cap and was discarded"})
			continue
		}
		if err == nil {
			mf = Frame{}
			bi.n, bi.compact = 0, false
			if decodeFastInto(bytes.TrimSpace(line), &mf, &strs, false, &bi) && mf.Op == OpMessage {
				from := Peer{ID: mf.From, Name: mf.FromName}
				switch {
				case mf.Bin > 0:
					err = p.readBin(from, mf.Broadcast, mf.Bin)
				case mf.Batch != nil:
					// decodeFastInto checked the batch and found its
					// values (none if it is not an array). They share
					// the batch's memory, a copy of the line's.
					b := mf.Batch
					for k := 0; k+1 < len(bi.spans) && bi.n > 0; k += 2 {
						start, end := bi.spans[k], bi.spans[k+1]
						p.deliver(Message{From: from, Broadcast: mf.Broadcast, Data: json.RawMessage(b[start:end:end])})
					}
				default:
					data := mf.Data
					if data == nil {
						data = json.RawMessage("null")
					}
					p.deliver(Message{From: from, Broadcast: mf.Broadcast, Data: data})
				}
				if err == nil {
					continue
				}
			}
		}
		if err != nil {
			p.readFailed(err)
			return
		}
		f, err := DecodeFrame(line)
		if err != nil {
			p.pushErr(&Error{Code: CodeBadFrame, Message: err.Error()})
			continue
		}
		switch f.Op {
		case OpMessage:
			from := Peer{ID: f.From, Name: f.FromName}
			if f.Bin > 0 {
				if err := p.readBin(from, f.Broadcast, f.Bin); err != nil {
					p.readFailed(err)
					return
				}
				continue
			}
			if f.Batch != nil {
				for d := range BatchItems(f.Batch) {
					p.deliver(Message{From: from, Broadcast: f.Broadcast, Data: json.RawMessage(d)})
				}
				continue
			}
			data := f.Data
			if data == nil {
				data = json.RawMessage("null")
			}
			p.deliver(Message{From: from, Broadcast: f.Broadcast, Data: data})
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

// readFailed records why reading from the node ended (Err reports it).
func (p *Plugin) readFailed(err error) {
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
}

// readBin reads the bin block of size bytes that follows a message frame
// and delivers its messages, each in Message.Bytes. A block that is too
// large or malformed is skipped and reported on Errors; an error return
// means the connection failed.
func (p *Plugin) readBin(from Peer, broadcast bool, size int) error {
	if size > p.lr.max {
		p.pushErr(&Error{Code: CodeTooLarge, Message: fmt.Sprintf("a binary message block of %d bytes from the node exceeded the reader's cap and was discarded", size)})
		return p.lr.DiscardBlock(int64(size))
	}
	block, err := p.lr.ReadBlock(size)
	if err != nil {
		return err
	}
	if _, err := CheckBin(block); err != nil {
		p.pushErr(&Error{Code: CodeBadFrame, Message: err.Error()})
		return nil
	}
	block = bytes.Clone(block) // the messages are the receiver's to keep
	for msg := range BinItems(block) {
		p.deliver(Message{From: from, Broadcast: broadcast, Bytes: msg})
	}
	return nil
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
	return p.writeHot(OpSend, to, raw)
}

// Broadcast sends data, marshalled as JSON, to this subservice on every
// other node of the mesh, and returns the frame's id.
func (p *Plugin) Broadcast(data any) (uint64, error) {
	raw, err := marshalData(data)
	if err != nil {
		return 0, fmt.Errorf("subservice: broadcast: marshal data: %w", err)
	}
	return p.writeHot(OpBroadcast, "", raw)
}

// SendBytes sends msg, any bytes, to this subservice on the node with id
// to, as a binary message (docs/PROTOCOL.md §14): neither node looks inside
// it, and a receiving plugin that takes binary messages gets it in
// Message.Bytes; one that does not gets it in Message.Data if it is JSON,
// and otherwise this plugin gets a "rejected" Error for it. It returns
// ErrNoBin when the node does not take binary messages. Otherwise it is
// Send: msg is copied before SendBytes returns.
func (p *Plugin) SendBytes(to string, msg []byte) (uint64, error) {
	if to == "" {
		return 0, fmt.Errorf("subservice: send: empty node id")
	}
	return p.writeBin(OpSend, to, msg)
}

// BroadcastBytes is SendBytes to every other node of the mesh.
func (p *Plugin) BroadcastBytes(msg []byte) (uint64, error) {
	return p.writeBin(OpBroadcast, "", msg)
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

// batchBytes is the size past which a batch frame takes no more messages:
// small enough for the node to read it in place (its reader's buffer is
// 64 KiB) and to keep the node and the mesh busy in parallel, large
// enough that a frame's fixed costs vanish.
const batchBytes = 32 << 10

// tail is what writeHot needs to know to add a message to the send or
// broadcast frame at the end of the write buffer.
type tail struct {
	ok    bool // wbuf ends with such a frame and it may take more
	op    string
	to    string
	first uint64 // the id of its first message
	n     int    // its messages
	start int    // its offset in wbuf
	key   int    // the offset of its "data" key (while n is 1); of its byte count (bin)
	bin   bool   // a bin frame, with its block
	size  int    // its block's size (bin)
}

// writeHot queues a send or broadcast frame for data, which is one
// compact JSON value (from marshalData), and returns its id. When batches
// are on and the frame at the end of the queue is a send to the same node
// (or a broadcast) whose ids precede this one, the message joins it; so
// messages become batches exactly when they pile up behind a write in
// progress. It blocks while the queue is full.
func (p *Plugin) writeHot(op, to string, data []byte) (uint64, error) {
	select {
	case <-p.done:
		return 0, fmt.Errorf("subservice: %s: %w", op, ErrClosed)
	default:
	}
	if len(data) == 0 {
		data = []byte("null")
	}
	if len(data)+len(to) > p.maxLine {
		// Too large whatever else is queued: fail now rather than wait
		// for room behind a slow node.
		return 0, fmt.Errorf("subservice: %s: %w: %d bytes of data, the node accepts frames of %d", op, ErrTooLarge, len(data), p.maxLine)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for p.werr == nil && len(p.wbuf) > 0 && len(p.wbuf)+len(data)+len(to)+64 > writeBuffer {
		p.wcond.Wait()
	}
	if p.werr != nil {
		return 0, p.werr
	}
	id := p.nextID.Add(1)
	t := &p.wtail
	if p.batch && t.ok && !t.bin && t.op == op && t.to == to && t.first+uint64(t.n) == id && t.n < p.maxBatch {
		grow := 1 + len(data) // ",DATA"
		if t.n == 1 {
			grow += 3 // "data": becomes "batch":[ and a ] closes it
		}
		if size := len(p.wbuf) - t.start - 1 + grow; size <= batchBytes && size <= p.maxLine {
			p.join(data)
			return id, nil
		}
	}
	p.seal()
	start := len(p.wbuf)
	b, _ := appendHot(p.wbuf, op, id, to, "", "", false, data, false, true)
	if n := len(b) - start; n > p.maxLine {
		p.wbuf = b[:start]
		return 0, fmt.Errorf("subservice: %s: %w: %d bytes, the node accepts %d", op, ErrTooLarge, n, p.maxLine)
	}
	// The frame ends with "data":DATA}: remember where, to make it a
	// batch if another message joins it.
	*t = tail{ok: true, op: op, to: to, first: id, n: 1, start: start, key: len(b) - 1 - len(data) - len(`"data":`)}
	p.wbuf = append(b, '\n')
	p.kick()
	return id, nil
}

// writeBin queues a binary message for a send or broadcast bin frame and
// returns its id. Like writeHot, a message joins the bin frame at the end
// of the queue when it is for the same node (or a broadcast) and the ids
// follow on; it blocks while the queue is full.
func (p *Plugin) writeBin(op, to string, msg []byte) (uint64, error) {
	if !p.bin {
		return 0, fmt.Errorf("subservice: %s: %w", op, ErrNoBin)
	}
	select {
	case <-p.done:
		return 0, fmt.Errorf("subservice: %s: %w", op, ErrClosed)
	default:
	}
	size := binLenSize + len(msg)
	if size > p.maxLine {
		return 0, fmt.Errorf("subservice: %s: %w: %d bytes of message, the node accepts blocks of %d", op, ErrTooLarge, len(msg), p.maxLine)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for p.werr == nil && len(p.wbuf) > 0 && len(p.wbuf)+size+len(to)+96 > writeBuffer {
		p.wcond.Wait()
	}
	if p.werr != nil {
		return 0, p.werr
	}
	id := p.nextID.Add(1)
	t := &p.wtail
	if t.ok && t.bin && t.op == op && t.to == to && t.first+uint64(t.n) == id && t.n < p.maxBatch {
		if grown := t.size + size; grown <= batchBytes && grown <= p.maxLine {
			p.wbuf = AppendBin(p.wbuf, msg)
			t.size = grown // written into the frame by seal
			t.n++
			p.kick()
			return id, nil
		}
	}
	p.seal()
	start := len(p.wbuf)
	b, at := appendBinHeadWide(p.wbuf, op, id, to, size)
	p.wbuf = AppendBin(b, msg)
	*t = tail{ok: true, bin: true, op: op, to: to, first: id, n: 1, start: start, key: at, size: size}
	p.kick()
	return id, nil
}

// seal writes the byte count of the bin frame at the end of wbuf, if it
// is one, into its line: messages that join it only add to t.size, so
// that the count is written once per frame. It is called before wbuf
// gets another frame and before it is written. p.wmu is held.
func (p *Plugin) seal() {
	if t := &p.wtail; t.ok && t.bin {
		setBinSize(p.wbuf, t.key, t.size)
	}
}

// join adds the message data to the frame at the end of wbuf (wtail),
// turning it into a batch frame if it is not one yet. p.wmu is held.
func (p *Plugin) join(data []byte) {
	t := &p.wtail
	if t.n == 1 {
		// {..."data":D}\n becomes {..."batch":[D,DATA]}\n
		k := t.key
		d := len(p.wbuf) - 2 - (k + len(`"data":`))
		p.wbuf = slices.Grow(p.wbuf, 4+len(data))[:k+len(`"batch":[`)+d+1+len(data)+len("]}\n")]
		copy(p.wbuf[k+len(`"batch":[`):], p.wbuf[k+len(`"data":`):k+len(`"data":`)+d])
		copy(p.wbuf[k:], `"batch":[`)
		j := k + len(`"batch":[`) + d
		p.wbuf[j] = ','
		j += 1 + copy(p.wbuf[j+1:], data)
		copy(p.wbuf[j:], "]}\n")
	} else {
		// {..."batch":[...]}\n becomes {..."batch":[...,DATA]}\n
		p.wbuf = append(p.wbuf[:len(p.wbuf)-len("]}\n")], ',')
		p.wbuf = append(append(p.wbuf, data...), "]}\n"...)
	}
	t.n++
	p.kick()
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
	p.seal()
	p.wbuf = append(p.wbuf, b...)
	p.wtail.ok = false
	p.kick()
	return nil
}

// kick wakes writeLoop. p.wmu is held.
func (p *Plugin) kick() {
	select {
	case p.wkick <- struct{}{}:
	default:
	}
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
			p.seal()
			out := p.wbuf
			p.wbuf = p.wfree[:0]
			p.wfree = nil
			p.wtail.ok = false
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
