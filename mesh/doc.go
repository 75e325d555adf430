// Package mesh connects the nodes of one Nearby mesh: authenticated,
// encrypted sessions between every pair of nodes that find each other, the
// peer table, direct and broadcast messages to subservices, catalog
// exchange and named byte streams (HTTP, hosted sessions) between peers.
//
// # Sessions
//
// A node listens on one TCP port and dials the peers it learns about from
// discovery (AddHint) or from its configuration (Config.StaticPeers). Each
// connection runs TLS 1.3 with mutual authentication: every node presents a
// self-signed certificate for its ed25519 key, and a peer's node id is the
// hash of that key (see NodeID), so it cannot be claimed without the key.
// When dialling a hint, the node also checks that it reached the node id it
// expected. Then both sides send a hello carrying a proof that they hold the
// mesh key: HMAC-SHA256(mesh key, TLS exporter material ‖ role). The
// exporter material is unique to the TLS session, so a proof recorded from
// one session does not verify in another. A wrong key, id or protocol
// version is rejected before any application data, with an error frame that
// tells the other side why, a Debug log line and an EventRejected on both
// sides.
//
// Each pair of nodes keeps exactly one session. When both dial at once, the
// node with the lower id decides which connection survives (the first one
// to authenticate) and tells the other; the loser is closed before it ever
// shows up in the peer table. A session is a hashicorp/yamux session over
// the TLS connection: one long-lived control stream carries frames
// (messages, nacks, catalogs, keepalives, bye), and further streams carry
// named services (Config.Handlers, OpenStream, DialContext).
//
// The wire format is described byte by byte in docs/WIRE.md.
//
// # Liveness
//
// Every KeepAliveInterval a ping goes to each peer. A peer from which
// nothing at all arrived for 3 intervals is dropped with reason "timeout",
// so a cut cable is noticed within 3 to 4 intervals (6 to 8 s with the
// default 2 s) however busy the link is. A clean shutdown sends bye, and the
// peer drops the session at once with reason "bye" and forgets the hint (a
// static peer is redialled). A closed connection is noticed at once.
// Known peers that are lost otherwise are redialled with exponential
// backoff and jitter (ReconnectMin to ReconnectMax): static peers forever,
// hinted ones for HintTTL.
//
// # Messages and back pressure
//
// Send and Broadcast never block on a peer. Each peer has an outbound queue
// bounded to Config.QueueSize bytes of encoded frames and a writer
// goroutine that writes whatever has accumulated in one write, which is
// what makes fan-out cheap. A message that does not fit is dropped and
// counted (PeerInfo.Dropped, Stats.MessagesDroppedFull; Send returns
// ErrQueueFull). A peer that accepts no data for WriteTimeout, or whose
// queue stays full for WriteTimeout, is disconnected. Messages from one
// sender to one receiver arrive in the order sent, exactly once while the
// session lasts; there is no retransmission across sessions. Incoming
// messages are handed to Config.OnMessage on the sending peer's reader
// goroutine; an error returned for a message with a non-zero ID goes back
// to the sender as a Nack (Config.OnNack).
//
// # Concurrency
//
// All Mesh methods are safe for concurrent use. Run owns every goroutine
// the mesh starts (per peer: a reader, a writer and a stream acceptor, plus
// yamux's own two) and waits for all of them, stream handlers included,
// before it returns. Event channels from Subscribe never block the mesh: a
// subscriber that falls behind loses events, counted in Stats.EventsDropped.
//
// # Dependencies
//
// yamux v0.1.2 is used with a 16 MiB stream window (the default 256 KiB caps
// a stream at window/RTT), its keepalive off (it waits behind bulk data and
// false-fires under load; the mesh's own keepalive counts any received byte
// as a sign of life) and its log sent to the Logger at Debug. Its send loop
// writes a data frame as two writes; the connection under it joins them so
// that a small message costs one TLS record and one system call. yamux gives
// every frame WriteTimeout to go out and turns one stream write into one
// frame as large as the window, so the mesh cuts writes into frames of at
// most 64 KiB (control stream) and 128 KiB (service streams): a multi-
// megabyte write would otherwise fail on a slow link although the peer is
// reading. On this project's 2-core test machine yamux's own copies cost
// about a quarter of TLS's bulk throughput (see BenchmarkBulk).
package mesh
