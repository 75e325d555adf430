package mesh

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
)

// Frame types; docs/WIRE.md describes each byte by byte.
const (
	frameHello   byte = 0x01 // handshake: who we are and the mesh-key proof
	frameOK      byte = 0x02 // handshake: verdict "accepted"
	frameError   byte = 0x03 // handshake or session: rejection with a reason, then close
	frameMsg     byte = 0x10 // a message to a subservice
	frameNack    byte = 0x11 // a message was refused
	frameCatalog byte = 0x12 // the sender's full catalog
	framePing    byte = 0x13 // keepalive probe carrying a token
	framePong    byte = 0x14 // keepalive answer echoing the token
	frameBye     byte = 0x15 // clean shutdown
	frameExtMin  byte = 0x80 // types from here up are optional: skipped when unknown
)

const (
	frameHeaderLen = 5 // type u8, body length u32 big-endian

	maxHelloBody   = 1024
	maxReasonLen   = 1000 // bytes of reason text in error, nack and bye frames
	maxErrorBody   = 1 + maxReasonLen
	maxByeBody     = maxReasonLen
	maxNackBody    = 8 + 1 + maxNameLen + maxReasonLen
	maxMsgOverhead = 1 + 8 + 1 + maxNameLen
	maxCatalogBody = 8 << 20
	maxExtBody     = 64 << 10
	tokenBody      = 8

	// maxFrameSizeLimit is the largest MaxFrameSize a node may configure.
	maxFrameSizeLimit = 64 << 20
)

// Message flags.
const flagBroadcast byte = 1 << 0

// protocolVersion is the protocol this node speaks; minProtocolVersion the
// oldest it accepts. A later version keeps the v1 hello as a prefix.
const (
	protocolVersion    = 1
	minProtocolVersion = 1
)

var helloMagic = [4]byte{'N', 'R', 'B', 'Y'}

// bodyLimit returns the largest body allowed for a frame type, given the
// payload cap; ok is false for an unknown mandatory type.
func bodyLimit(typ byte, maxPayload int) (limit int, ok bool) {
	switch typ {
	case frameHello:
		return maxHelloBody, true
	case frameOK:
		return 0, true
	case frameError:
		return maxErrorBody, true
	case frameMsg:
		return maxMsgOverhead + maxPayload, true
	case frameNack:
		return maxNackBody, true
	case frameCatalog:
		return maxCatalogBody, true
	case framePing, framePong:
		return tokenBody, true
	case frameBye:
		return maxByeBody, true
	}
	if typ >= frameExtMin {
		return maxExtBody, true
	}
	return 0, false
}

// readFrame reads one frame. The body is freshly allocated and belongs to the
// caller. hdr is scratch space, so that a loop does not allocate it per frame.
func readFrame(r io.Reader, hdr *[frameHeaderLen]byte, maxPayload int) (typ byte, body []byte, err error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ = hdr[0]
	n := binary.BigEndian.Uint32(hdr[1:])
	limit, ok := bodyLimit(typ, maxPayload)
	if !ok {
		return typ, nil, fmt.Errorf("%w: unknown frame type 0x%02x", ErrProtocol, typ)
	}
	if uint64(n) > uint64(limit) {
		return typ, nil, fmt.Errorf("%w: frame type 0x%02x of %d bytes (limit %d)", ErrFrameTooLarge, typ, n, limit)
	}
	if typ == framePing || typ == framePong {
		if n != tokenBody {
			return typ, nil, fmt.Errorf("%w: frame type 0x%02x of %d bytes (want %d)", ErrProtocol, typ, n, tokenBody)
		}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return typ, nil, err
	}
	return typ, body, nil
}

// appendFrameHeader appends a frame header for a body of n bytes.
func appendFrameHeader(dst []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(dst, typ), uint32(n))
}

// appendFrame appends a whole frame.
func appendFrame(dst []byte, typ byte, body []byte) []byte {
	return append(appendFrameHeader(dst, typ, len(body)), body...)
}

// msgFrame is the body of a frameMsg.
type msgFrame struct {
	flags   byte
	id      uint64
	sub     string
	payload []byte
}

// msgFrameLen is the encoded size of a message frame, header included.
func msgFrameLen(sub string, payload []byte) int {
	return frameHeaderLen + 1 + 8 + 1 + len(sub) + len(payload)
}

// appendMsg appends a whole message frame. sub must be at most 255 bytes.
func appendMsg(dst []byte, flags byte, id uint64, sub string, payload []byte) []byte {
	dst = appendFrameHeader(dst, frameMsg, 1+8+1+len(sub)+len(payload))
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = append(dst, byte(len(sub)))
	dst = append(dst, sub...)
	return append(dst, payload...)
}

// decodeMsg decodes a message body. The payload aliases b.
func decodeMsg(b []byte) (msgFrame, error) {
	if len(b) < 10 {
		return msgFrame{}, fmt.Errorf("%w: message frame of %d bytes", ErrProtocol, len(b))
	}
	m := msgFrame{flags: b[0], id: binary.BigEndian.Uint64(b[1:9])}
	sl := int(b[9])
	if len(b) < 10+sl {
		return msgFrame{}, fmt.Errorf("%w: message subservice name overruns the frame", ErrProtocol)
	}
	m.sub = string(b[10 : 10+sl])
	m.payload = b[10+sl:]
	return m, nil
}

// nackFrame is the body of a frameNack.
type nackFrame struct {
	id     uint64
	sub    string
	reason string
}

func appendNack(dst []byte, n nackFrame) []byte {
	reason := truncate(n.reason, maxReasonLen)
	dst = appendFrameHeader(dst, frameNack, 8+1+len(n.sub)+len(reason))
	dst = binary.BigEndian.AppendUint64(dst, n.id)
	dst = append(dst, byte(len(n.sub)))
	dst = append(dst, n.sub...)
	return append(dst, reason...)
}

func decodeNack(b []byte) (nackFrame, error) {
	if len(b) < 9 {
		return nackFrame{}, fmt.Errorf("%w: nack frame of %d bytes", ErrProtocol, len(b))
	}
	n := nackFrame{id: binary.BigEndian.Uint64(b[:8])}
	sl := int(b[8])
	if len(b) < 9+sl {
		return nackFrame{}, fmt.Errorf("%w: nack subservice name overruns the frame", ErrProtocol)
	}
	n.sub = string(b[9 : 9+sl])
	n.reason = string(b[9+sl:])
	if len(n.reason) > maxReasonLen {
		return nackFrame{}, fmt.Errorf("%w: nack reason of %d bytes", ErrProtocol, len(n.reason))
	}
	return n, nil
}

// appendError appends an error frame.
func appendError(dst []byte, code errCode, reason string) []byte {
	reason = truncate(reason, maxReasonLen)
	dst = appendFrameHeader(dst, frameError, 1+len(reason))
	dst = append(dst, byte(code))
	return append(dst, reason...)
}

func decodeError(b []byte) (*remoteError, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty error frame", ErrProtocol)
	}
	return &remoteError{code: errCode(b[0]), reason: string(b[1:])}, nil
}

// appendToken appends a ping or pong frame.
func appendToken(dst []byte, typ byte, token uint64) []byte {
	return binary.BigEndian.AppendUint64(appendFrameHeader(dst, typ, tokenBody), token)
}

// hello is the body of a frameHello.
type hello struct {
	version    uint16
	flags      uint16 // the application's feature bits (Config.Features)
	id         NodeID
	meshID     [8]byte
	instance   [8]byte // random per process: a new value means the peer restarted
	maxPayload uint32
	name       string
	proof      [32]byte
}

// helloFixed is the size of a v1 hello without its name.
const helloFixed = 4 + 2 + 2 + 16 + 8 + 8 + 4 + 1 + 32

func appendHello(dst []byte, h hello) ([]byte, error) {
	raw, err := hex.DecodeString(string(h.id))
	if err != nil || len(raw) != 16 {
		return nil, fmt.Errorf("%w: bad node id %q", ErrProtocol, h.id)
	}
	if len(h.name) > maxNameLen {
		return nil, fmt.Errorf("%w: name of %d bytes", ErrProtocol, len(h.name))
	}
	dst = appendFrameHeader(dst, frameHello, helloFixed+len(h.name))
	dst = append(dst, helloMagic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, h.version)
	dst = binary.BigEndian.AppendUint16(dst, h.flags)
	dst = append(dst, raw...)
	dst = append(dst, h.meshID[:]...)
	dst = append(dst, h.instance[:]...)
	dst = binary.BigEndian.AppendUint32(dst, h.maxPayload)
	dst = append(dst, byte(len(h.name)))
	dst = append(dst, h.name...)
	return append(dst, h.proof[:]...), nil
}

// decodeHello decodes a hello body. Bytes after the v1 fields are ignored
// (later versions may append fields).
func decodeHello(b []byte) (hello, error) {
	var h hello
	if len(b) < 6 || [4]byte(b[:4]) != helloMagic {
		return h, fmt.Errorf("%w: not a nearby hello (bad magic)", ErrProtocol)
	}
	h.version = binary.BigEndian.Uint16(b[4:6])
	if h.version < minProtocolVersion {
		return h, fmt.Errorf("%w: peer speaks version %d, this node %d..%d", ErrVersion, h.version, minProtocolVersion, protocolVersion)
	}
	if len(b) < helloFixed {
		return h, fmt.Errorf("%w: hello of %d bytes", ErrProtocol, len(b))
	}
	p := 6
	h.flags = binary.BigEndian.Uint16(b[p:])
	p += 2
	h.id = NodeID(hex.EncodeToString(b[p : p+16]))
	p += 16
	copy(h.meshID[:], b[p:])
	p += 8
	copy(h.instance[:], b[p:])
	p += 8
	h.maxPayload = binary.BigEndian.Uint32(b[p:])
	p += 4
	nl := int(b[p])
	p++
	if len(b) < p+nl+32 {
		return h, fmt.Errorf("%w: hello name overruns the frame", ErrProtocol)
	}
	h.name = string(b[p : p+nl])
	p += nl
	copy(h.proof[:], b[p:p+32])
	return h, nil
}

// Stream header kinds: the first byte of every yamux stream.
const (
	streamControl byte = 0x00 // the session's control stream (opened once, by the dialer)
	streamService byte = 0x01 // a named service stream: u8 length + name follow
)

// Stream open answers.
const (
	streamAccepted byte = 0x00
	streamUnknown  byte = 0x01 // u8 length + reason follow
	streamRefused  byte = 0x02 // u8 length + reason follow
)

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
