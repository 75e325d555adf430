package subservice

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// ProtocolVersion is the version of the plugin protocol this package speaks.
// A plugin sends it in hello; the node refuses any other with bad-protocol.
const ProtocolVersion = 1

// DefaultMaxLine is the default cap, in bytes, on one frame (one line,
// without its newline). The node announces its cap in welcome as max_line.
const DefaultMaxLine = 1 << 20

// FeatureBatch is the protocol feature that lets send, broadcast and
// message frames carry a batch of messages (Frame.Batch) instead of one
// (Frame.Data). A plugin asks for it in hello's features; it may use it
// once the welcome's features list it (docs/PROTOCOL.md §13).
const FeatureBatch = "batch"

// DefaultMaxBatch is the default cap on the number of messages in one
// batch. The node announces its cap in welcome as max_batch.
const DefaultMaxBatch = 1024

// The environment variables the node sets for every plugin it starts.
const (
	EnvSocket     = "NEARBY_SOCKET"     // path of the node's unix socket
	EnvToken      = "NEARBY_TOKEN"      // one-time token for hello
	EnvNodeID     = "NEARBY_NODE_ID"    // id of the node running the plugin
	EnvNodeName   = "NEARBY_NODE_NAME"  // display name of that node
	EnvSubservice = "NEARBY_SUBSERVICE" // the plugin's subservice name
	EnvVersion    = "NEARBY_VERSION"    // the plugin's version
)

// Frame ops. Plugin to node: hello, send, broadcast, menu, open,
// session-data, session-eof, session-close. Node to plugin: welcome,
// message, peer, error, click, session, session-data.
const (
	OpHello     = "hello"
	OpSend      = "send"
	OpBroadcast = "broadcast"
	OpMenu      = "menu"
	OpWelcome   = "welcome"
	OpMessage   = "message"
	OpPeer      = "peer"
	OpError     = "error"
	OpClick     = "click"

	// OpOpen opens a session on a hosted plugin of another node (To,
	// Plugin, optional Version); the answer is a session frame with event
	// "opened" and the same ID, or an error frame with that ID.
	OpOpen = "open"
	// OpSession reports a session event (Event: SessionOpened or
	// SessionClosed).
	OpSession = "session"
	// OpSessionData carries session bytes as a JSON string in Data: to the
	// session's program (plugin to node) or from it (node to plugin).
	OpSessionData = "session-data"
	// OpSessionEOF closes the session program's input.
	OpSessionEOF = "session-eof"
	// OpSessionClose ends a session; a session frame with event "closed"
	// follows.
	OpSessionClose = "session-close"
)

// Session events, in the Event field of session frames.
const (
	SessionOpened = "opened"
	SessionClosed = "closed"
)

// Error codes carried by error frames. docs/PROTOCOL.md says when each is sent.
const (
	CodeBadFrame      = "bad-frame"       // not a JSON object, unknown op, or a field of the wrong type
	CodeTooLarge      = "too-large"       // the line exceeded max_line and was discarded
	CodeBadToken      = "bad-token"       // hello with a token that is unknown or already used; the node closes
	CodeBadProtocol   = "bad-protocol"    // hello with an unsupported protocol version; the node closes
	CodeNotWelcomeYet = "not-welcome-yet" // a frame other than hello before welcome
	CodeNoPeer        = "no-peer"         // send to a node id that is not connected
	CodeNoSubservice  = "no-subservice"   // the remote node does not run this subservice (asynchronous)
	CodeQueueFull     = "queue-full"      // the node's or the remote's queue is full; the frame was not sent
	CodeRejected      = "rejected"        // the remote refused the message for another reason (asynchronous)
	CodeSendFailed    = "send-failed"     // the mesh failed to send for another reason
	CodeDropped       = "dropped"         // the node dropped frames for this plugin because it read too slowly

	CodeSessionRefused = "session-refused" // open: the host refused (not hosted there, a limit, ...); message says why
	CodeNoSession      = "no-session"      // session-data/-eof/-close for a session this plugin does not have open
	CodeSessionBusy    = "session-busy"    // session-data: the session's program did not read its input in time
)

// Peer events.
const (
	PeerUp   = "up"
	PeerDown = "down"
)

// Errors returned by the codec.
var (
	// ErrTooLarge reports a line longer than the cap. LineReader has already
	// discarded it; the next call reads the following line.
	ErrTooLarge = errors.New("subservice: line too large")
	// ErrBadFrame reports a line that is not a valid frame.
	ErrBadFrame = errors.New("subservice: bad frame")
)

// Peer is a node on the mesh.
type Peer struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// MenuItem is one entry a plugin offers in the tray menu.
type MenuItem struct {
	ID      string `json:"id"`
	Label   string `json:"label"`
	Enabled bool   `json:"enabled"`
	Checked bool   `json:"checked"`
}

// Limits on a menu; ValidateMenu enforces them.
const (
	MaxMenuItems = 32
	MaxMenuIDLen = 64
	MaxMenuLabel = 128
)

// ValidateMenu reports whether items is a menu the node accepts: at most
// MaxMenuItems items, each with a unique non-empty ID of at most
// MaxMenuIDLen bytes and a non-empty Label of at most MaxMenuLabel bytes.
func ValidateMenu(items []MenuItem) error {
	if len(items) > MaxMenuItems {
		return fmt.Errorf("%w: menu has %d items, at most %d allowed", ErrBadFrame, len(items), MaxMenuItems)
	}
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		switch {
		case it.ID == "" || len(it.ID) > MaxMenuIDLen:
			return fmt.Errorf("%w: menu item %d: id must be 1..%d bytes", ErrBadFrame, i, MaxMenuIDLen)
		case it.Label == "" || len(it.Label) > MaxMenuLabel:
			return fmt.Errorf("%w: menu item %q: label must be 1..%d bytes", ErrBadFrame, it.ID, MaxMenuLabel)
		case seen[it.ID]:
			return fmt.Errorf("%w: menu item id %q repeated", ErrBadFrame, it.ID)
		}
		seen[it.ID] = true
	}
	return nil
}

// Frame is one protocol message: the union of the fields of every op. Op
// says which fields matter; the others are zero. Marshalling a Frame writes
// exactly the fields of its op (see docs/PROTOCOL.md), always on one line.
type Frame struct {
	Op string `json:"op"`

	// ID is chosen by the plugin on send and broadcast (0: none) and echoed
	// in error frames about that frame. A batch of n messages uses the ids
	// ID to ID+n-1, one per message.
	ID uint64 `json:"id,omitempty"`

	// hello
	Token    string `json:"token,omitempty"`
	Protocol int    `json:"protocol,omitempty"`
	// hello (the features the plugin asks for), welcome (those the node
	// grants: FeatureBatch, FeatureBin).
	Features []string `json:"features,omitempty"`

	// send (To), error (To: the node the failed send was for)
	To string `json:"to,omitempty"`
	// send, broadcast, message: any JSON value, carried as raw bytes.
	Data json.RawMessage `json:"data,omitempty"`
	// send, broadcast, message with FeatureBatch: a JSON array of messages,
	// each carried as Data would carry it. When Batch is set, Data is not
	// written.
	Batch json.RawMessage `json:"batch,omitempty"`
	// send, broadcast, message with FeatureBin: the size in bytes of the
	// bin block that follows the frame's line on the socket (its messages,
	// each a 4-byte big-endian length and its bytes). Frames with Bin are
	// written with AppendBinHead, not EncodeFrame; Data and Batch are unset.
	Bin int `json:"bin,omitempty"`
	// error: how many ids, from ID on, the error is about (a batch's); 0
	// means one.
	Count int `json:"count,omitempty"`

	// menu
	Items []MenuItem `json:"items,omitempty"`

	// welcome
	Node       *Peer  `json:"node,omitempty"`
	Subservice string `json:"subservice,omitempty"`
	Version    string `json:"version,omitempty"`
	Peers      []Peer `json:"peers,omitempty"`
	MaxLine    int    `json:"max_line,omitempty"`
	// welcome with FeatureBatch or FeatureBin: the cap on messages in one
	// batch or bin block.
	MaxBatch int `json:"max_batch,omitempty"`

	// message
	From      string `json:"from,omitempty"`
	FromName  string `json:"from_name,omitempty"`
	Broadcast bool   `json:"broadcast,omitempty"`

	// peer
	Event string `json:"event,omitempty"`
	Peer  *Peer  `json:"peer,omitempty"`

	// error
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`

	// click
	Item string `json:"item,omitempty"`

	// open (Plugin, Version, To), session (Session, Event, Plugin,
	// Version, Node; for "closed" Code, Reason, Exit), session-data,
	// session-eof and session-close (Session).
	Session string `json:"session,omitempty"`
	Plugin  string `json:"plugin,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Exit    string `json:"exit,omitempty"`
	// open, session "opened": how the session's session-data carries its
	// bytes: "" (text: a JSON string of UTF-8) or EncodingBase64.
	Encoding string `json:"encoding,omitempty"`
}

// EncodingBase64 is the session encoding in which session-data carries
// the program's bytes as standard base64 (RFC 4648, with padding), any
// bytes at all; the default is UTF-8 text (docs/PROTOCOL.md §12).
const EncodingBase64 = "base64"

// frameUnion marshals a Frame of an unknown op: every non-zero field.
type frameUnion Frame

func rawOrNull(d json.RawMessage) json.RawMessage {
	if len(d) == 0 {
		return json.RawMessage("null")
	}
	return d
}

// rawOrEmpty is d, or the empty JSON string.
func rawOrEmpty(d json.RawMessage) json.RawMessage {
	if len(d) == 0 {
		return json.RawMessage(`""`)
	}
	return d
}

// SessionBytes returns the bytes of a session-data frame of a session in
// encoding ("" or EncodingBase64): Data must be a JSON string, of base64
// for EncodingBase64.
func (f *Frame) SessionBytes(encoding string) ([]byte, error) {
	text, err := f.SessionText()
	if err != nil || encoding != EncodingBase64 {
		return []byte(text), err
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %s data of a base64 session: %v", ErrBadFrame, f.Op, err)
	}
	return b, nil
}

// ValidEncoding reports whether e names a session encoding.
func ValidEncoding(e string) bool { return e == "" || e == EncodingBase64 }

// SessionText returns the text of a session-data frame: Data must be a
// JSON string.
func (f *Frame) SessionText() (string, error) {
	var s string
	if len(f.Data) == 0 || f.Data[0] != '"' || json.Unmarshal(f.Data, &s) != nil {
		return "", fmt.Errorf("%w: %s data must be a JSON string", ErrBadFrame, f.Op)
	}
	return s, nil
}

// MarshalJSON writes the fields that belong to f.Op, including the required
// ones when they are zero (peers and items as [], data as null).
func (f Frame) MarshalJSON() ([]byte, error) {
	peer := func(p *Peer) Peer {
		if p == nil {
			return Peer{}
		}
		return *p
	}
	switch f.Op {
	case OpHello:
		return marshal(struct {
			Op       string   `json:"op"`
			Token    string   `json:"token"`
			Protocol int      `json:"protocol"`
			Features []string `json:"features,omitempty"`
		}{f.Op, f.Token, f.Protocol, f.Features})
	case OpSend:
		if len(f.Batch) > 0 {
			return marshal(struct {
				Op    string          `json:"op"`
				ID    uint64          `json:"id,omitempty"`
				To    string          `json:"to"`
				Batch json.RawMessage `json:"batch"`
			}{f.Op, f.ID, f.To, f.Batch})
		}
		return marshal(struct {
			Op   string          `json:"op"`
			ID   uint64          `json:"id,omitempty"`
			To   string          `json:"to"`
			Data json.RawMessage `json:"data"`
		}{f.Op, f.ID, f.To, rawOrNull(f.Data)})
	case OpBroadcast:
		if len(f.Batch) > 0 {
			return marshal(struct {
				Op    string          `json:"op"`
				ID    uint64          `json:"id,omitempty"`
				Batch json.RawMessage `json:"batch"`
			}{f.Op, f.ID, f.Batch})
		}
		return marshal(struct {
			Op   string          `json:"op"`
			ID   uint64          `json:"id,omitempty"`
			Data json.RawMessage `json:"data"`
		}{f.Op, f.ID, rawOrNull(f.Data)})
	case OpMenu:
		items := f.Items
		if items == nil {
			items = []MenuItem{}
		}
		return marshal(struct {
			Op    string     `json:"op"`
			Items []MenuItem `json:"items"`
		}{f.Op, items})
	case OpWelcome:
		peers := f.Peers
		if peers == nil {
			peers = []Peer{}
		}
		return marshal(struct {
			Op         string   `json:"op"`
			Protocol   int      `json:"protocol"`
			Node       Peer     `json:"node"`
			Subservice string   `json:"subservice"`
			Version    string   `json:"version"`
			Peers      []Peer   `json:"peers"`
			MaxLine    int      `json:"max_line"`
			Features   []string `json:"features,omitempty"`
			MaxBatch   int      `json:"max_batch,omitempty"`
		}{f.Op, f.Protocol, peer(f.Node), f.Subservice, f.Version, peers, f.MaxLine, f.Features, f.MaxBatch})
	case OpMessage:
		if len(f.Batch) > 0 {
			return marshal(struct {
				Op        string          `json:"op"`
				From      string          `json:"from"`
				FromName  string          `json:"from_name"`
				Broadcast bool            `json:"broadcast"`
				Batch     json.RawMessage `json:"batch"`
			}{f.Op, f.From, f.FromName, f.Broadcast, f.Batch})
		}
		return marshal(struct {
			Op        string          `json:"op"`
			From      string          `json:"from"`
			FromName  string          `json:"from_name"`
			Broadcast bool            `json:"broadcast"`
			Data      json.RawMessage `json:"data"`
		}{f.Op, f.From, f.FromName, f.Broadcast, rawOrNull(f.Data)})
	case OpPeer:
		return marshal(struct {
			Op    string `json:"op"`
			Event string `json:"event"`
			Peer  Peer   `json:"peer"`
		}{f.Op, f.Event, peer(f.Peer)})
	case OpError:
		return marshal(struct {
			Op      string `json:"op"`
			ID      uint64 `json:"id,omitempty"`
			Count   int    `json:"count,omitempty"`
			Code    string `json:"code"`
			Message string `json:"message"`
			To      string `json:"to,omitempty"`
			Session string `json:"session,omitempty"`
		}{f.Op, f.ID, f.Count, f.Code, f.Message, f.To, f.Session})
	case OpOpen:
		return marshal(struct {
			Op       string `json:"op"`
			ID       uint64 `json:"id,omitempty"`
			To       string `json:"to"`
			Plugin   string `json:"plugin"`
			Version  string `json:"version,omitempty"`
			Encoding string `json:"encoding,omitempty"`
		}{f.Op, f.ID, f.To, f.Plugin, f.Version, f.Encoding})
	case OpSession:
		return marshal(struct {
			Op       string `json:"op"`
			ID       uint64 `json:"id,omitempty"`
			Session  string `json:"session"`
			Event    string `json:"event"`
			Plugin   string `json:"plugin,omitempty"`
			Version  string `json:"version,omitempty"`
			Node     *Peer  `json:"node,omitempty"`
			Code     string `json:"code,omitempty"`
			Reason   string `json:"reason,omitempty"`
			Exit     string `json:"exit,omitempty"`
			Encoding string `json:"encoding,omitempty"`
		}{f.Op, f.ID, f.Session, f.Event, f.Plugin, f.Version, f.Node, f.Code, f.Reason, f.Exit, f.Encoding})
	case OpSessionData:
		return marshal(struct {
			Op      string          `json:"op"`
			Session string          `json:"session"`
			Data    json.RawMessage `json:"data"`
		}{f.Op, f.Session, rawOrEmpty(f.Data)})
	case OpSessionEOF, OpSessionClose:
		return marshal(struct {
			Op      string `json:"op"`
			Session string `json:"session"`
		}{f.Op, f.Session})
	case OpClick:
		return marshal(struct {
			Op   string `json:"op"`
			Item string `json:"item"`
		}{f.Op, f.Item})
	}
	return marshal(frameUnion(f))
}

// EncodeFrame returns f as one line of JSON ending in "\n": the same bytes
// as f.MarshalJSON, without HTML escaping, plus the newline. It fails when
// f.Data is not valid JSON.
func EncodeFrame(f *Frame) ([]byte, error) {
	switch f.Op {
	case OpSend, OpBroadcast, OpMessage:
		// The hot ops, written directly: several times faster than
		// encoding/json, byte for byte the same (FuzzEncodeFrameFast).
		b, err := AppendFrame(make([]byte, 0, 96+len(f.To)+len(f.From)+len(f.FromName)+len(f.Data)+len(f.Batch)), f)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return encodeGeneric(f)
}

// AppendFrame appends EncodeFrame(f) to dst and returns the extended
// buffer; on error dst is returned unchanged. For send, broadcast and
// message frames it allocates nothing when dst has room.
func AppendFrame(dst []byte, f *Frame) ([]byte, error) {
	switch f.Op {
	case OpSend, OpBroadcast, OpMessage:
		data, batch := f.Data, len(f.Batch) > 0
		if batch {
			data = f.Batch
		}
		b, err := appendHot(dst, f.Op, f.ID, f.To, f.From, f.FromName, f.Broadcast, data, batch, false)
		if err != nil {
			return dst, fmt.Errorf("subservice: encode %s frame: %w", f.Op, err)
		}
		return append(b, '\n'), nil
	}
	g := *f // so that f itself does not escape: the hot ops allocate nothing
	b, err := encodeGeneric(&g)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func encodeGeneric(f *Frame) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("subservice: encode %s frame: %w", f.Op, err)
	}
	return buf.Bytes(), nil
}

// appendHot appends a send, broadcast or message frame (without the
// newline) to dst. Empty data is null. With batch, data is the frame's
// batch (never empty) rather than its data. Unless trusted (data is known
// to be one compact JSON value), data is checked and compacted.
func appendHot(dst []byte, op string, id uint64, to, from, fromName string, broadcast bool, data []byte, batch, trusted bool) ([]byte, error) {
	key := keyData
	if batch {
		key = keyBatch
	}
	dst = appendHead(dst, op, id, to, from, fromName, broadcast, key)
	if len(data) == 0 {
		dst = append(dst, "null"...)
	} else if trusted {
		dst = append(dst, data...)
	} else {
		var err error
		if dst, err = appendCompactJSON(dst, data); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// The keys of the value that ends a send, broadcast or message frame.
const (
	keyData  = `,"data":`
	keyBatch = `,"batch":`
	keyBin   = `,"bin":`
)

// appendHead appends a send, broadcast or message frame up to the value of
// its last key (keyData, keyBatch or keyBin): everything before the value.
func appendHead(dst []byte, op string, id uint64, to, from, fromName string, broadcast bool, key string) []byte {
	dst = append(dst, `{"op":`...)
	dst = appendString(dst, op)
	switch op {
	case OpSend, OpBroadcast:
		if id != 0 {
			dst = append(dst, `,"id":`...)
			dst = strconv.AppendUint(dst, id, 10)
		}
		if op == OpSend {
			dst = append(dst, `,"to":`...)
			dst = appendString(dst, to)
		}
	case OpMessage:
		dst = append(dst, `,"from":`...)
		dst = appendString(dst, from)
		dst = append(dst, `,"from_name":`...)
		dst = appendString(dst, fromName)
		dst = append(dst, `,"broadcast":`...)
		dst = strconv.AppendBool(dst, broadcast)
	}
	return append(dst, key...)
}

// AppendBatchFrame is AppendFrame for a send, broadcast or message frame
// that carries a batch (f.Data is ignored), and also returns the number of
// messages in it. It fails, returning dst unchanged, when f.Batch is not a
// JSON array of at least one value (the error wraps ErrBadFrame) or f.Op
// is another op. It allocates nothing when dst has room.
func AppendBatchFrame(dst []byte, f *Frame) ([]byte, int, error) {
	switch f.Op {
	case OpSend, OpBroadcast, OpMessage:
	default:
		return dst, 0, fmt.Errorf("%w: a %s frame carries no batch", ErrBadFrame, f.Op)
	}
	b := appendHead(dst, f.Op, f.ID, f.To, f.From, f.FromName, f.Broadcast, keyBatch)
	b, n, err := AppendBatch(b, f.Batch)
	if err != nil {
		return dst, 0, err
	}
	return append(b, '}', '\n'), n, nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json does
// without HTML escaping: control characters escaped, invalid UTF-8 replaced
// by U+FFFD, U+2028 and U+2029 escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time, to the first that needs a look.
		for i+8 <= len(s) {
			if m := special8(le64(s[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(s) {
			break
		}
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// marshal is json.Marshal without HTML escaping, so that data is carried
// byte for byte (escaping "<" would grow it sixfold).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// marshalData is marshal, faster for a json.RawMessage that is already
// compact (returned as is, not copied) and for a string. The result is one
// compact JSON value.
func marshalData(v any) ([]byte, error) {
	switch v := v.(type) {
	case json.RawMessage:
		if v == nil {
			return []byte("null"), nil
		}
		if end, compact, ok := scanValue(v, 0); ok && compact && end == len(v) {
			return v, nil
		}
	case string:
		return appendString(nil, v), nil
	}
	return marshal(v)
}

// DecodeFrame parses one line (without its newline) into a Frame. It fails
// with an error wrapping ErrBadFrame when the line is not a JSON object with
// a non-empty string op, or a known field has the wrong type. Unknown fields
// are ignored, so newer peers can add fields.
func DecodeFrame(line []byte) (*Frame, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadFrame)
	}
	if f, ok := decodeFast(line); ok {
		return f, nil
	}
	var f Frame
	if err := json.Unmarshal(line, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if f.Op == "" {
		return nil, fmt.Errorf("%w: missing op", ErrBadFrame)
	}
	return &f, nil
}

// LineReader splits a stream into lines of at most a fixed number of bytes.
// It is not safe for concurrent use.
type LineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
}

// NewLineReader returns a LineReader over r that accepts lines of at most
// max bytes, not counting the "\n" or "\r\n" terminator (max <= 0 means
// DefaultMaxLine).
func NewLineReader(r io.Reader, max int) *LineReader {
	if max <= 0 {
		max = DefaultMaxLine
	}
	size := 64 << 10
	if max+2 < size {
		size = max + 2
	}
	return &LineReader{br: bufio.NewReaderSize(r, size), max: max}
}

// ReadLine returns the next line that is not blank, without its terminator.
// The slice is valid until the next call. A line longer than the cap is
// read to its end and discarded, and ReadLine returns ErrTooLarge; the
// reader stays usable. An unterminated last line before EOF is returned as a
// line; then ReadLine returns io.EOF.
func (r *LineReader) ReadLine() ([]byte, error) {
	for {
		tooLarge := false
		line, err := r.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the reader's buffer: gather it in r.buf.
			// (Otherwise the line is used in place, without a copy.)
			r.buf = append(r.buf[:0], line...)
			if len(r.buf) > r.max+2 {
				tooLarge = true
				r.buf = r.buf[:0]
			}
			for err == bufio.ErrBufferFull {
				var chunk []byte
				chunk, err = r.br.ReadSlice('\n')
				if !tooLarge {
					if len(r.buf)+len(chunk) > r.max+2 {
						tooLarge = true
						r.buf = r.buf[:0]
					} else {
						r.buf = append(r.buf, chunk...)
					}
				}
			}
			line = r.buf
		} else if len(line) > r.max+2 {
			tooLarge = true
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if tooLarge {
			return nil, ErrTooLarge
		}
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
		}
		if len(line) > r.max {
			return nil, ErrTooLarge
		}
		if len(bytes.TrimSpace(line)) == 0 {
			if err == io.EOF {
				return nil, io.EOF
			}
			continue
		}
		return line, nil
	}
}
