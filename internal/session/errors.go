package session

import (
	"errors"

	"github.com/nearbymesh/nearby/subservice"
)

// Peer is a node of the mesh.
type Peer = subservice.Peer

// Errors returned by this package.
var (
	// ErrProtocol reports a frame that breaks the session protocol.
	ErrProtocol = errors.New("session: protocol error")
	// ErrEnded reports an operation on a session that has ended; the error
	// is an *EndedError that says why.
	ErrEnded = errors.New("session: session ended")
	// ErrClosed reports a call on a Host after Close.
	ErrClosed = errors.New("session: host closed")
	// ErrNotServed reports a plugin the Host does not serve.
	ErrNotServed = errors.New("session: plugin not served")
	// ErrBadSpec reports an invalid Spec.
	ErrBadSpec = errors.New("session: bad spec")
	// ErrTimeout reports a write that passed its deadline.
	ErrTimeout = errors.New("session: timeout")
)

// Why a session ended: End.Code.
const (
	// CodeClosed: the presenter closed the session.
	CodeClosed = "closed"
	// CodeExited: the program exited with status 0.
	CodeExited = "exited"
	// CodeCrashed: the program exited with a non-zero status or was killed.
	CodeCrashed = "crashed"
	// CodePresenterLeft: the presenter's node left the mesh (seen by the host).
	CodePresenterLeft = "presenter-left"
	// CodeStopped: the plugin was stopped on its host.
	CodeStopped = "stopped"
	// CodeRestarted: the plugin was restarted on its host (a new version).
	CodeRestarted = "restarted"
	// CodeIdle: nothing went either way for the idle timeout.
	CodeIdle = "idle"
	// CodeOverflow: the program's output went unread past the output buffer.
	CodeOverflow = "overflow"
	// CodeShutdown: the host node is shutting down (or the presenter's).
	CodeShutdown = "shutdown"
	// CodeLost: the stream broke without an end frame (seen by the opener).
	CodeLost = "lost"
	// CodeProtocol: one side broke the protocol.
	CodeProtocol = "protocol"
)

// Why a host refused an open or a control request: Refusal.Code.
const (
	// RefuseNotHosted: the node does not serve the plugin (not hosted
	// there, or stopped).
	RefuseNotHosted = "not-hosted"
	// RefuseVersion: the node runs another version than the one asked for.
	RefuseVersion = "version"
	// RefuseLimit: the plugin (or the node) has as many sessions as allowed.
	RefuseLimit = "limit"
	// RefuseSpawn: the program could not be started.
	RefuseSpawn = "spawn-failed"
	// RefuseShutdown: the node is shutting down.
	RefuseShutdown = "shutting-down"
	// RefuseBadRequest: the request broke the protocol.
	RefuseBadRequest = "bad-request"
	// RefuseNotPresenter: a control request for a session the asking node
	// does not present (or that does not exist: the two are not told apart).
	RefuseNotPresenter = "not-presenter"
	// RefuseEnded: a control request for a session that is ending.
	RefuseEnded = "ended"
	// RefuseBusy: a control write that does not fit the session's input
	// buffer now; try again.
	RefuseBusy = "busy"
)

// RefusedError is a refusal from a host.
type RefusedError struct{ Refusal }

// Error returns the refusal and its hint.
func (e *RefusedError) Error() string {
	if e.Hint != "" {
		return e.Refusal.Error + " (" + e.Hint + ")"
	}
	return e.Refusal.Error
}

// EndedError is returned by operations on a session that has ended. It
// wraps ErrEnded.
type EndedError struct{ End End }

// Error returns why the session ended.
func (e *EndedError) Error() string { return "session ended: " + e.End.Reason }

// Unwrap returns ErrEnded.
func (e *EndedError) Unwrap() error { return ErrEnded }
