// Package desktop draws the tray menu (package tray) with fyne.io/systray:
// a StatusNotifierItem with a com.canonical.dbusmenu menu on the desktop
// session bus, in pure Go over godbus (no cgo, no X). cmd/nearby-tray is
// its only user; it runs in a process of its own, so the node never links
// fyne.io/systray or godbus and a tray failure cannot touch the node.
//
// What it does about fyne.io/systray v1.12.2's known limits:
//
//   - With no session bus, systray's loop blocks forever: Run checks for a
//     reachable bus first (tray.SessionBus) and fails fast.
//   - The icon and title can be lost while systray starts: Run reads them
//     back over its own bus connection and sets them again until they show.
//   - A click is dropped when nobody waits on an item's channel: each item
//     has a goroutine that only forwards the click to a buffered channel.
//   - Disabled items still deliver clicks sent over D-Bus: tray.Menu.Lookup
//     ignores them.
//   - Items can only be appended: tray.Menu hides and reuses them.
//   - systray's state is global: Run refuses a second call.
//
// The menu is exported at /StatusNotifierItem/menu (the StatusNotifierItem's
// Menu property), under the bus name ItemName(pid).
package desktop
