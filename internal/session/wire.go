package session

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
)

// Frame types (see doc.go for who sends which).
const (
	frameOpen      byte = 0x01 // opener -> host: JSON Request
	frameOpened    byte = 0x02 // host -> opener: JSON Opened
	frameRefused   byte = 0x03 // host -> opener: JSON Refusal, then the host closes
	frameData      byte = 0x10 // both ways: raw bytes
	frameEOF       byte = 0x11 // opener -> host: no more input (the program's stdin is closed)
	frameWindow    byte = 0x12 // host -> opener: 4-byte big-endian input credit
	frameClose     byte = 0x13 // opener -> host: end the session
	frameEnd       byte = 0x14 // host -> opener: JSON End, the last frame of a session
	frameCtl       byte = 0x20 // any node -> host: JSON CtlRequest (service "session-ctl")
	frameCtlAnswer byte = 0x21 // host -> node: JSON CtlAnswer
)

const (
	// ProtocolVersion is the version of the session stream protocol, sent
	// in every Request.
	ProtocolVersion = 1
	// MaxFrame caps the body of any frame, in bytes.
	MaxFrame = 64 << 10
	// MaxData is the largest data frame body a sender writes; longer writes
	// are split.
	MaxData = 32 << 10
	// headerLen is a frame header: type, then the body length as a 4-byte
	// big-endian integer.
	headerLen = 5
)

// Request is the first frame of a session stream: what the opener asks the
// host for.
type Request struct {
	// V is ProtocolVersion.
	V int `json:"v"`
	// Plugin is the hosted plugin's name.
	Plugin string `json:"plugin"`
	// Version, if set, must equal the version the host runs.
	Version string `json:"version,omitempty"`
}

// Opened is the host's answer to a Request it accepted: the session exists
// and its program runs.
type Opened struct {
	// Session is the session id: 32 lowercase hex digits, random.
	Session string `json:"session"`
	Plugin  string `json:"plugin"`
	Version string `json:"version"`
	// Host is the node running the program.
	Host Peer `json:"host"`
	// Window is the opener's initial input credit, in bytes: it may send
	// that many data bytes before the host grants more.
	Window int `json:"window"`
	// Started is when the program was started (the host's clock).
	Started time.Time `json:"started"`
}

// Refusal is the host's answer to a Request it refused, and the answer to
// a refused control request.
type Refusal struct {
	// Code is one of the Refuse* codes.
	Code string `json:"code"`
	// Error says what went wrong, for people.
	Error string `json:"error"`
	// Hint says what to do about it, when the host knows.
	Hint string `json:"hint,omitempty"`
}

// End is the last frame of a session: why it ended.
type End struct {
	// Code is one of the Code* constants.
	Code string `json:"code"`
	// Reason says why, for people.
	Reason string `json:"reason"`
	// Exit is the program's exit status ("exit status 0", "signal:
	// killed") when the program's end caused the session's.
	Exit string `json:"exit,omitempty"`
}

// Normal reports whether the session ended the way sessions are meant to:
// closed by its presenter, or its program exited with status 0.
func (e End) Normal() bool { return e.Code == CodeClosed || e.Code == CodeExited }

// String returns the reason with the code.
func (e End) String() string { return e.Reason + " [" + e.Code + "]" }

// Control request operations.
const (
	CtlWrite = "write" // Data goes to the program's stdin
	CtlClose = "close" // the session ends (CodeClosed)
)

// CtlRequest is one control operation on an existing session, sent on a
// "session-ctl" stream. Only the session's presenter node may make it.
type CtlRequest struct {
	V       int    `json:"v"`
	Op      string `json:"op"`
	Session string `json:"session"`
	Data    []byte `json:"data,omitempty"`
}

// CtlAnswer answers a CtlRequest: OK, or Refusal set.
type CtlAnswer struct {
	OK      bool     `json:"ok"`
	Refusal *Refusal `json:"refusal,omitempty"`
}

var (
	nameRE      = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*$`)
	sessionIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// validName reports whether s is a plugin name.
func validName(s string) bool { return len(s) <= 64 && nameRE.MatchString(s) }

// ValidID reports whether s has the form of a session id.
func ValidID(s string) bool { return sessionIDRE.MatchString(s) }

// maxText bounds the human-readable strings carried in frames.
const maxText = 4096

func (r *Request) validate() error {
	switch {
	case r.V != ProtocolVersion:
		return fmt.Errorf("%w: protocol version %d, this node speaks %d", ErrProtocol, r.V, ProtocolVersion)
	case !validName(r.Plugin):
		return fmt.Errorf("%w: bad plugin name %q", ErrProtocol, r.Plugin)
	case len(r.Version) > 128:
		return fmt.Errorf("%w: version longer than 128 bytes", ErrProtocol)
	}
	return nil
}

func (o *Opened) validate() error {
	switch {
	case !ValidID(o.Session):
		return fmt.Errorf("%w: bad session id %q", ErrProtocol, o.Session)
	case !validName(o.Plugin):
		return fmt.Errorf("%w: bad plugin name %q", ErrProtocol, o.Plugin)
	case o.Window <= 0 || o.Window > 1<<30:
		return fmt.Errorf("%w: bad window %d", ErrProtocol, o.Window)
	case len(o.Version) > 128 || len(o.Host.ID) > 128 || len(o.Host.Name) > 255:
		return fmt.Errorf("%w: oversized field in opened", ErrProtocol)
	}
	return nil
}

func (r *Refusal) validate() error {
	if r.Code == "" || len(r.Code) > 64 || len(r.Error) > maxText || len(r.Hint) > maxText {
		return fmt.Errorf("%w: bad refusal", ErrProtocol)
	}
	return nil
}

func (e *End) validate() error {
	if e.Code == "" || len(e.Code) > 64 || len(e.Reason) > maxText || len(e.Exit) > 256 {
		return fmt.Errorf("%w: bad end", ErrProtocol)
	}
	return nil
}

func (c *CtlRequest) validate() error {
	switch {
	case c.V != ProtocolVersion:
		return fmt.Errorf("%w: protocol version %d, this node speaks %d", ErrProtocol, c.V, ProtocolVersion)
	case c.Op != CtlWrite && c.Op != CtlClose:
		return fmt.Errorf("%w: unknown control op %q", ErrProtocol, c.Op)
	case !ValidID(c.Session):
		return fmt.Errorf("%w: bad session id %q", ErrProtocol, c.Session)
	case c.Op == CtlClose && len(c.Data) > 0:
		return fmt.Errorf("%w: close carries no data", ErrProtocol)
	}
	return nil
}

func (a *CtlAnswer) validate() error {
	if a.OK == (a.Refusal != nil) {
		return fmt.Errorf("%w: control answer must be ok or a refusal", ErrProtocol)
	}
	if a.Refusal != nil {
		return a.Refusal.validate()
	}
	return nil
}

// decodeJSON decodes a frame body into v (one JSON object, unknown fields
// ignored for forward compatibility) and validates it.
func decodeJSON[T any, P interface {
	*T
	validate() error
}](body []byte) (*T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrProtocol)
	}
	if err := P(&v).validate(); err != nil {
		return nil, err
	}
	return &v, nil
}

// appendFrame appends one frame to dst.
func appendFrame(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(body)))
	return append(dst, body...)
}

// encodeJSON returns a frame whose body is v as JSON.
func encodeJSON(typ byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("session: marshal %T: %v", v, err)) // only our own types
	}
	return appendFrame(nil, typ, b)
}

func windowFrame(n int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	return appendFrame(nil, frameWindow, b[:])
}

func decodeWindow(body []byte) (int, error) {
	if len(body) != 4 {
		return 0, fmt.Errorf("%w: window frame of %d bytes", ErrProtocol, len(body))
	}
	n := binary.BigEndian.Uint32(body)
	if n == 0 || n > 1<<30 {
		return 0, fmt.Errorf("%w: window credit %d", ErrProtocol, n)
	}
	return int(n), nil
}

// frameReader reads frames from a stream. It is not safe for concurrent use.
type frameReader struct {
	br  *bufio.Reader
	hdr [headerLen]byte
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next frame. body is valid until the following call. A
// frame whose type is unknown or whose body is over MaxFrame is an error
// wrapping ErrProtocol; a stream that ends inside a frame gives
// io.ErrUnexpectedEOF, and one that ends between frames io.EOF.
func (fr *frameReader) next() (typ byte, body []byte, err error) {
	if _, err := io.ReadFull(fr.br, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	typ = fr.hdr[0]
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if !knownFrame(typ) {
		return 0, nil, fmt.Errorf("%w: unknown frame type 0x%02x", ErrProtocol, typ)
	}
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("%w: frame 0x%02x of %d bytes, more than %d", ErrProtocol, typ, n, MaxFrame)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n, max(n, 4<<10))
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.br, fr.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return typ, fr.buf, nil
}

func knownFrame(typ byte) bool {
	switch typ {
	case frameOpen, frameOpened, frameRefused, frameData, frameEOF, frameWindow,
		frameClose, frameEnd, frameCtl, frameCtlAnswer:
		return true
	}
	return false
}
