// Package session runs hosted sessions: a hosted plugin runs on its host
// node, and every presenter (a node that opens it) gets a program of its
// own there, bridged to it over one mesh stream. docs/SESSIONS.md is the
// user's guide; this comment is the contract.
//
// # Host side
//
// A Host serves hosted plugins (Serve, Stop) and handles the streams
// presenters open to its "session" service (HandleStream): it reads the
// request, checks the limits, starts the plugin's command in its install
// directory — stdin, stdout and stderr are pipes, the environment holds
// PATH, HOME, LANG and the NEARBY_SESSION, NEARBY_PRESENTER_ID/_NAME,
// NEARBY_NODE_ID/_NAME, NEARBY_PLUGIN and NEARBY_VERSION variables, the
// program runs in its own process group with SIGKILL as parent-death
// signal — answers, and bridges: presenter data to stdin, stdout to the
// presenter, stderr line by line to the plugin's log. A session ends when
// its presenter closes it or its stream breaks, its presenter's node
// leaves (PeerDown), its program exits, it is idle for Limits.IdleTimeout,
// its output overflows Limits.OutputBuffer, its plugin is stopped or
// restarted, or the Host closes; the first reason is the one the
// presenter is told. The program then gets SIGTERM, and SIGKILL after
// Config.StopGrace. The presenter's node is the peer that opened the
// stream, as the mesh authenticated it: the "session-ctl" service
// (HandleCtl) writes to or closes a session only for that node.
//
// # Presenter side
//
// Handshake sends a request on a stream and reads the answer; the Pending
// session becomes a Conn (read, write, close from Go) or a Relay (frames
// passed through to a local process that speaks the protocol itself, such
// as `nearby open` over the control socket). A Registry is the presenter
// node's table of the sessions opened from it.
//
// # Wire format
//
// A session stream carries frames: a 1-byte type, a 4-byte big-endian body
// length (at most MaxFrame, 64 KiB), then the body.
//
//	0x01 open     presenter -> host  JSON Request {"v":1,"plugin":"rev","version":"1.0.0"}
//	0x02 opened   host -> presenter  JSON Opened {"session":ID,"plugin","version","host":{"id","name"},"window":N,"started"}
//	0x03 refused  host -> presenter  JSON Refusal {"code","error","hint"}; the host closes
//	0x10 data     both ways          raw bytes, at most 32 KiB per frame
//	0x11 eof      presenter -> host  empty: close the program's stdin once it has read what came before
//	0x12 window   host -> presenter  4-byte big-endian credit: the presenter may send that many more data bytes
//	0x13 close    presenter -> host  empty: end the session (CodeClosed)
//	0x14 end      host -> presenter  JSON End {"code","reason","exit"}; the last frame, then the host closes
//
// The presenter starts with Opened.Window bytes of input credit and may
// never have more data in flight; the host returns credit as the program
// reads its stdin, so it always reads the presenter's frames at once and
// a close is never stuck behind data. Output needs no credit: the stream's
// own window holds the presenter back, and the host buffers at most
// Limits.OutputBuffer bytes before ending the session (CodeOverflow).
//
// A "session-ctl" stream carries one request and one answer:
//
//	0x20 ctl        JSON CtlRequest {"v":1,"op":"write"|"close","session":ID,"data":BASE64}
//	0x21 ctl-answer JSON CtlAnswer {"ok":true} or {"ok":false,"refusal":{...}}
//
// A request for a session the asking node does not present is refused with
// RefuseNotPresenter, whether or not the session exists. Unknown frame
// types and oversized frames are protocol errors: the stream is closed
// (during a session, with an end frame whose code is CodeProtocol).
package session
