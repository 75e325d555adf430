package mesh

import (
	"errors"
	"fmt"
)

// Errors returned by the mesh. Callers match them with errors.Is; the
// returned errors usually wrap one of these with more context.
var (
	// ErrNoPeer is returned when the destination is not connected.
	ErrNoPeer = errors.New("mesh: peer not connected")
	// ErrQueueFull is returned when a peer's outbound queue is full and the
	// message was dropped (and counted in PeerInfo.Dropped).
	ErrQueueFull = errors.New("mesh: peer queue full, message dropped")
	// ErrClosed is returned by operations on a closed mesh.
	ErrClosed = errors.New("mesh: closed")
	// ErrFrameTooLarge is returned for a payload over the frame size cap of
	// this node or of the receiving peer, and for an oversized frame on the wire.
	ErrFrameTooLarge = errors.New("mesh: frame too large")
	// ErrWrongMesh is returned when a peer does not prove it holds our mesh key.
	ErrWrongMesh = errors.New("mesh: peer is not in this mesh (mesh key proof failed)")
	// ErrIdentity is returned when a peer's certificate, its hello and the
	// node id we expected to reach disagree, or when a node reaches itself.
	ErrIdentity = errors.New("mesh: peer identity mismatch")
	// ErrProtocol is returned for malformed or unexpected frames.
	ErrProtocol = errors.New("mesh: protocol error")
	// ErrVersion is returned when a peer speaks a protocol version this node
	// does not support.
	ErrVersion = errors.New("mesh: unsupported protocol version")
	// ErrDuplicate is returned when a connection loses the one-session-per-pair
	// tie-break because the pair already has (or is setting up) a session.
	ErrDuplicate = errors.New("mesh: duplicate connection")
	// ErrUnknownService is returned by OpenStream when the peer has no
	// handler for the service.
	ErrUnknownService = errors.New("mesh: unknown stream service")
	// ErrBadAddress is returned by DialContext and ParseStreamAddr for an
	// address that is not of the form NODEID.SERVICE[:PORT].
	ErrBadAddress = errors.New("mesh: bad stream address (want NODEID.SERVICE[:PORT])")
	// ErrBadName is returned for an empty or over-long subservice or
	// service name.
	ErrBadName = errors.New("mesh: bad name (want 1 to 255 bytes)")
)

// errCode is the one-byte reason carried by an error frame.
type errCode byte

const (
	codeProtocol  errCode = 1
	codeWrongMesh errCode = 2
	codeIdentity  errCode = 3
	codeVersion   errCode = 4
	codeDuplicate errCode = 5
	codeClosing   errCode = 6
)

// sentinel returns the error that a code stands for.
func (c errCode) sentinel() error {
	switch c {
	case codeWrongMesh:
		return ErrWrongMesh
	case codeIdentity:
		return ErrIdentity
	case codeVersion:
		return ErrVersion
	case codeDuplicate:
		return ErrDuplicate
	case codeClosing:
		return ErrClosed
	default:
		return ErrProtocol
	}
}

// codeOf returns the code that describes err to the peer.
func codeOf(err error) errCode {
	switch {
	case errors.Is(err, ErrWrongMesh):
		return codeWrongMesh
	case errors.Is(err, ErrIdentity):
		return codeIdentity
	case errors.Is(err, ErrVersion):
		return codeVersion
	case errors.Is(err, ErrDuplicate):
		return codeDuplicate
	case errors.Is(err, ErrClosed):
		return codeClosing
	default:
		return codeProtocol
	}
}

// remoteError is a rejection that the peer sent us in an error frame.
type remoteError struct {
	code   errCode
	reason string
}

func (e *remoteError) Error() string {
	return fmt.Sprintf("rejected by peer: %s", e.reason)
}

func (e *remoteError) Unwrap() error { return e.code.sentinel() }
