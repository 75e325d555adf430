// Package tray is Nearby's tray menu, as a client of one node's control
// API (internal/control). It never runs inside the node: the nearby-tray
// binary runs it in its own process, so a tray failure cannot take the node
// down. docs/TRAY.md describes what the user sees.
//
// The package is split so that nearly all of it is testable without a
// desktop:
//
//   - Build turns what the control API says (State) into a tree of Items:
//     labels, enabled and checked states, and the Action of each item.
//   - Menu keeps a Backend in step with successive trees with stable item
//     identity, hiding and reusing items rather than appending forever
//     (fyne.io/systray can only append).
//   - Run is the event loop: it follows /v1/events (reconnecting with
//     backoff), rebuilds the menu debounced, and turns clicks into POST
//     /v1/run, /v1/stop and /v1/click.
//   - SessionBus checks for a desktop session bus without starting one.
//
// The fyne.io/systray glue lives in package tray/desktop. This package
// imports neither fyne.io/systray nor godbus, so the nearby binary can use
// SessionBus without linking them (cmd/nearby/deps_test.go checks).
//
// # Menu
//
//	Nearby: desk · mesh 3f2a9c41 · 2 peers        (status, disabled)
//	chat 1.2.0 started                            (last outcome; hidden when none)
//	──────────
//	Subservices (3)  ▸  chat 1.2.0 (network, running 1.0.0, update available)
//	Running (1)      ▸  chat 1.0.0  ▸  Stop chat / the plugin's own items
//	Peers (2)        ▸  h2 — 10.77.0.2:7946, 0.4 ms, 2 subservices
//	──────────
//	Quit tray
package tray
