// Package subservice is the plugin side of Nearby: the types of the local
// socket protocol and a Go SDK for plugin authors.
//
// A plugin is a process the node starts with NEARBY_SOCKET and NEARBY_TOKEN
// in its environment. Connect dials the socket, says hello with the token
// and returns a Plugin once the node has welcomed it:
//
//	p, err := subservice.Connect(ctx)
//	p.Broadcast(map[string]string{"text": "hello"})
//	for m := range p.Messages() {
//		p.Send(m.From.ID, m.Data) // echo
//	}
//
// # Wire format
//
// Newline-delimited JSON over a unix stream socket: one object per line,
// each with an "op" field, at most max_line bytes (DefaultMaxLine unless the
// node's welcome says otherwise). Frame is the union of every op's fields;
// EncodeFrame writes exactly the fields of its op, on one line, without
// HTML escaping (data is carried byte for byte). DecodeFrame ignores unknown
// fields. LineReader splits a stream into capped lines and survives an
// oversized one. The hot frames (send, broadcast, message) are encoded and
// decoded by hand, several times faster than encoding/json and with the
// same results (anything unusual is left to encoding/json); AppendFrame and
// Decoder do the same without allocating, for a loop that handles one frame
// at a time. docs/PROTOCOL.md is the full contract, with a transcript:
//
//	plugin: {"op":"hello","token":"c63f…","protocol":1}
//	node:   {"op":"welcome","protocol":1,"node":{"id":"…","name":"alpha"},"subservice":"chat","version":"1.2.0","peers":[…],"max_line":1048576}
//	plugin: {"op":"send","id":2,"to":"…","data":{"text":"hi"}}
//	node:   {"op":"message","from":"…","from_name":"bravo","broadcast":false,"data":{"text":"hi alpha"}}
//	node:   {"op":"error","id":3,"code":"no-subservice","message":"…","to":"…"}
//
// Binary messages (the "bin" feature, docs/PROTOCOL.md §14) skip JSON
// altogether: SendBytes and BroadcastBytes send any bytes, which follow
// the frame's line on the socket with a 4-byte length each, and arrive in
// Message.Bytes. No node looks inside them, which makes them the fastest
// way between plugins; a receiver without the feature gets them as JSON
// when they are JSON:
//
//	p.SendBytes(peerID, []byte{0x00, 0x0a, 0xff})
//	for m := range p.Messages() {
//		if m.Bytes != nil { /* binary */ }
//	}
//
// A plugin can also open a session on a hosted plugin of another node: a
// program of its own runs there, fed by Session.Write and read from
// Session.Data (docs/PROTOCOL.md §12, docs/SESSIONS.md):
//
//	s, err := p.Open(ctx, "gpu-box", "rev")
//	s.Write("hello\n")
//	fmt.Print(<-s.Data()) // "olleh\n"
//	s.Close()
//
// The node side (supervisor, socket server) lives in internal/supervisor.
package subservice
