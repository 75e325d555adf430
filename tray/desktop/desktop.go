package desktop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fyne.io/systray"
	"github.com/godbus/dbus/v5"

	"github.com/nearbymesh/nearby/tray"
)

// Errors returned by Run.
var (
	// ErrAlreadyRan: fyne.io/systray keeps global state and starts once
	// per process.
	ErrAlreadyRan = errors.New("desktop: Run works once per process")
	// ErrNotPublished: the icon did not appear on the session bus.
	ErrNotPublished = errors.New("desktop: the tray icon did not appear on the session bus")
)

// PublishTimeout bounds how long Run waits for its icon to appear on the
// session bus.
const PublishTimeout = 10 * time.Second

var ran atomic.Bool

// ItemName returns the bus name fyne.io/systray takes for the process
// with this pid: org.kde.StatusNotifierItem-PID-1.
func ItemName(pid int) string { return fmt.Sprintf("org.kde.StatusNotifierItem-%d-1", pid) }

// Run shows the menu of the node whose state directory is cfg.StateDir as
// a StatusNotifierItem on the desktop session bus, until ctx is done or
// the user picks Quit (see tray.Run for what it does and returns). Without
// a reachable session bus it returns an error wrapping
// tray.ErrNoSessionBus at once, instead of blocking inside
// fyne.io/systray. It can be called once per process.
func Run(ctx context.Context, cfg tray.Config) error {
	if !ran.CompareAndSwap(false, true) {
		return ErrAlreadyRan
	}
	if err := cfg.Verify(); err != nil {
		return err
	}
	addr, err := tray.SessionBus(ctx)
	if err != nil {
		return err
	}
	// fyne.io/systray reports through the standard logger.
	log.SetFlags(0)
	log.SetOutput(&logWriter{log: cfg.Logger})

	systray.SetIcon(tray.Icon())
	systray.SetTitle("Nearby")
	systray.SetTooltip("Nearby")
	ui := newBackend()
	defer ui.close()
	start, end := systray.RunWithExternalLoop(nil, nil)
	start()
	if err := published(ctx, addr, cfg.Logger); err != nil {
		// Not calling end: with no bus connection it would panic, and the
		// process is about to exit anyway.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	cfg.Logger.Debug("desktop: tray icon published", "bus_name", ItemName(os.Getpid()))
	defer end()
	return tray.Run(ctx, cfg, ui)
}

// published waits until our StatusNotifierItem answers on the bus with
// its icon and title set. fyne.io/systray can lose an icon or title set
// while it starts up; they are set again until the bus shows them.
func published(ctx context.Context, addr string, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, PublishTimeout)
	defer cancel()
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("%w: connect to %s: %v", ErrNotPublished, addr, err)
	}
	defer conn.Close()
	name := ItemName(os.Getpid())
	obj := conn.Object(name, "/StatusNotifierItem")
	var last error
	for attempt := 0; ; attempt++ {
		var props map[string]dbus.Variant
		call := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, "org.kde.StatusNotifierItem")
		if last = call.Store(&props); last == nil {
			icon, title := iconSet(props), titleOf(props)
			if icon && title != "" {
				return nil
			}
			if attempt > 0 {
				logger.Debug("desktop: setting icon and title again", "icon", icon, "title", title)
			}
			systray.SetIcon(tray.Icon())
			systray.SetTitle("Nearby")
			last = errors.New("icon or title not set yet")
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w within %v (bus name %s): %v", ErrNotPublished, PublishTimeout, name, last)
		case <-t.C:
		}
	}
}

func iconSet(props map[string]dbus.Variant) bool {
	var px []struct {
		W, H int32
		Pix  []byte
	}
	v, ok := props["IconPixmap"]
	if !ok || v.Store(&px) != nil {
		return false
	}
	return len(px) > 0 && px[0].W > 0 && len(px[0].Pix) > 0
}

func titleOf(props map[string]dbus.Variant) string {
	var s string
	if v, ok := props["Title"]; ok {
		v.Store(&s)
	}
	return s
}

// logWriter turns the standard logger's lines (fyne.io/systray's reports)
// into slog records.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimPrefix(string(line), "systray error: ")
		if strings.Contains(msg, "StatusNotifierWatcher") {
			w.log.Warn("no StatusNotifierWatcher on the session bus: the panel may not show the tray icon (GNOME needs the AppIndicator extension)", "systray", msg)
			continue
		}
		w.log.Warn("systray: "+msg, "component", "systray")
	}
	return len(p), nil
}

// backend is tray.UI over fyne.io/systray.
type backend struct {
	mu     sync.Mutex
	items  map[tray.Handle]*entry
	next   tray.Handle
	clicks chan tray.Handle
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

type entry struct {
	mi  *systray.MenuItem
	cur tray.Item
}

func newBackend() *backend {
	return &backend{items: make(map[tray.Handle]*entry), clicks: make(chan tray.Handle, 64), done: make(chan struct{})}
}

func (b *backend) parent(h tray.Handle) *systray.MenuItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.items[h]; e != nil {
		return e.mi
	}
	return nil
}

// Add creates the item and one goroutine that waits on its click channel:
// fyne.io/systray drops a click when nobody is waiting.
func (b *backend) Add(parent tray.Handle, it *tray.Item) tray.Handle {
	var mi *systray.MenuItem
	p := b.parent(parent)
	switch {
	case p == nil && it.Checkable:
		mi = systray.AddMenuItemCheckbox(it.Label, it.Tooltip, it.Checked)
	case p == nil:
		mi = systray.AddMenuItem(it.Label, it.Tooltip)
	case it.Checkable:
		mi = p.AddSubMenuItemCheckbox(it.Label, it.Tooltip, it.Checked)
	default:
		mi = p.AddSubMenuItem(it.Label, it.Tooltip)
	}
	if it.Disabled {
		mi.Disable()
	}
	b.mu.Lock()
	b.next++
	h := b.next
	b.items[h] = &entry{mi: mi, cur: *it}
	b.mu.Unlock()
	b.wg.Go(func() {
		for {
			select {
			case _, ok := <-mi.ClickedCh:
				if !ok {
					return
				}
				select {
				case b.clicks <- h:
				case <-b.done:
					return
				}
			case <-b.done:
				return
			}
		}
	})
	return h
}

func (b *backend) AddSeparator(parent tray.Handle) {
	if p := b.parent(parent); p != nil {
		p.AddSeparator()
		return
	}
	systray.AddSeparator()
}

// Update changes only what differs: each systray call emits a
// LayoutUpdated signal.
func (b *backend) Update(h tray.Handle, it *tray.Item) {
	b.mu.Lock()
	e := b.items[h]
	b.mu.Unlock()
	if e == nil {
		return
	}
	if it.Label != e.cur.Label {
		e.mi.SetTitle(it.Label)
	}
	if it.Tooltip != e.cur.Tooltip {
		e.mi.SetTooltip(it.Tooltip)
	}
	if it.Disabled != e.cur.Disabled {
		if it.Disabled {
			e.mi.Disable()
		} else {
			e.mi.Enable()
		}
	}
	if it.Checkable && it.Checked != e.cur.Checked {
		if it.Checked {
			e.mi.Check()
		} else {
			e.mi.Uncheck()
		}
	}
	e.cur = *it
}

func (b *backend) Hide(h tray.Handle) {
	if mi := b.parent(h); mi != nil {
		mi.Hide()
	}
}

func (b *backend) Show(h tray.Handle) {
	if mi := b.parent(h); mi != nil {
		mi.Show()
	}
}

func (b *backend) Clicks() <-chan tray.Handle { return b.clicks }

func (b *backend) SetTitle(t string) {
	systray.SetTitle(t)
	systray.SetTooltip(t)
}

// close stops the click goroutines and waits for them.
func (b *backend) close() {
	b.once.Do(func() { close(b.done) })
	b.wg.Wait()
}
