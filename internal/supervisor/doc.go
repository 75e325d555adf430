// Package supervisor is the node's side of plugins: it starts each plugin
// process, restarts it when it crashes, stops it, keeps its log, and serves
// the local unix socket that plugins speak the protocol of
// docs/PROTOCOL.md on.
//
// # Processes
//
// Start runs a Spec: one instance per name, in its install directory, in
// its own process group, with SIGKILL as its parent-death signal and a
// minimal environment (PATH, HOME, LANG, Spec.Env, and NEARBY_SOCKET,
// NEARBY_TOKEN, NEARBY_NODE_ID, NEARBY_NODE_NAME, NEARBY_SUBSERVICE,
// NEARBY_VERSION). Its stdout and stderr are appended to LogDir/NAME.log,
// rotated to NAME.log.1. A process that exits non-zero or by a signal is
// restarted after a backoff that doubles per crash within CrashLoopWindow;
// the crash after CrashLoopCount such restarts marks it "failed". A process
// that exits 0 is "exited" and not restarted. A command that is missing or
// not executable is "failed" at once, with the reason, and never retried.
// Stop sends SIGTERM to the group and SIGKILL after StopGrace.
//
// # Socket
//
// Each instance gets a one-time token; its hello binds the connection to
// that instance, so a plugin speaks only as itself: the subservice of every
// send and broadcast comes from the token, never from the frame. Frames from
// a plugin are read and handled one at a time: when Router.Send blocks, the
// plugin's writes block (backpressure); when it returns ErrQueueFull, the
// plugin gets a queue-full error for that frame. Frames to a plugin go
// through a queue bounded in frames and bytes, drained by one writer
// goroutine; when it is full, frames are dropped, counted in
// Status.Dropped, and reported to the plugin by one "dropped" error once it
// reads again. So neither a flooding plugin nor one that never reads can
// grow the node's memory or stall the node and other plugins.
//
// # Messages between nodes
//
// The node wiring implements Router over the mesh, calls Deliver for
// messages that arrive, PeerEvent for peers that come and go, and Nack when
// a remote refused a message sent with an id. Deliver never blocks.
package supervisor
