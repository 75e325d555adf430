// Package control is the node's local control API: HTTP + JSON over a unix
// socket in the state directory (control.sock, mode 0600), used by the CLI
// and the tray. Everything they show comes from here.
//
// Endpoints (all under /v1; errors are a non-2xx status with an Error body):
//
//	GET  /v1/status                 Status
//	GET  /v1/peers                  []Peer
//	GET  /v1/discovered             []Discovered: nodes seen over mDNS
//	GET  /v1/clock                  []PeerClock: clock offsets of the peers
//	GET  /v1/ls?pre=1               Listing: every subservice on the mesh
//	GET  /v1/ps                     []Plugin
//	GET  /v1/logs/{name}?tail=N     text/plain, the plugin's captured output
//	GET  /v1/events                 NDJSON stream of Event, until the client goes away
//	POST /v1/send      SendRequest  -> Result
//	POST /v1/broadcast SendRequest  -> Result
//	POST /v1/fetch     FetchRequest -> NDJSON stream of Event (progress), ending in a "result" event
//	POST /v1/run       FetchRequest -> NDJSON stream like fetch, then the plugin starts
//	POST /v1/stop      NameRequest  -> Result
//	POST /v1/click     ClickRequest -> Result: a tray click on a plugin's menu item
//	POST /v1/publish   PublishRequest -> Result
//	GET  /v1/trust                  map of plugin name to pinned signer
//	POST /v1/trust     TrustRequest -> Result
//	GET  /v1/sessions               Sessions: hosted plugins, sessions hosted here and opened from here
//	POST /v1/open      OpenRequest  -> 101 Switching Protocols (Upgrade: nearby-session), then
//	                                the session stream (internal/session) starting with its opened frame;
//	                                or an Error answer when the host refuses
//	POST /v1/sessions/send  SessionRequest -> Result: write to a session's program (presenter's node only)
//	POST /v1/sessions/close SessionRequest -> Result: end a session (presenter's node only)
//
// Streams are newline-delimited JSON: one Event per line. A stream ends
// with an event of type "result" (Result set) or "error" (Error set).
package control
