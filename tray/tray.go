package tray

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// UI is where Run shows the menu: a Backend plus the icon and the clicks.
// Package desktop implements it over fyne.io/systray.
type UI interface {
	Backend
	// Clicks delivers the handle of every clicked item. The channel is
	// never closed while Run uses it.
	Clicks() <-chan Handle
	// SetTitle sets the icon's title and tooltip.
	SetTitle(title string)
}

// Config configures Run. The zero value of each field means its default.
type Config struct {
	// StateDir is the state directory of the node the tray shows; the tray
	// talks only to its control socket. Required unless Client is set.
	StateDir string
	// Client overrides the control API client (default
	// control.NewClient(StateDir)).
	Client *control.Client
	// Logger receives the tray's logs (at Debug); default slog.Default().
	Logger *slog.Logger
	// Debounce is how long the menu waits for more changes before it is
	// rebuilt; default 100 ms.
	Debounce time.Duration
	// MaxDelay bounds how long a steady stream of changes can hold a
	// rebuild back; default 1 s.
	MaxDelay time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to reach the
	// node's event stream; defaults 100 ms and 5 s.
	RetryMin, RetryMax time.Duration
	// RequestTimeout bounds each control API request that is not a
	// stream; default 10 s.
	RequestTimeout time.Duration
}

// Errors returned by Run and Verify.
var (
	// ErrNoStateDir: Config has neither StateDir nor Client.
	ErrNoStateDir = errors.New("tray: no state directory")
	// ErrNilUI: Run was given no UI.
	ErrNilUI = errors.New("tray: no UI")
)

// Verify fills in defaults and checks the configuration.
func (c *Config) Verify() error {
	if c.Client == nil {
		if c.StateDir == "" {
			return ErrNoStateDir
		}
		c.Client = control.NewClient(c.StateDir)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Debounce <= 0 {
		c.Debounce = 100 * time.Millisecond
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = time.Second
	}
	if c.MaxDelay < c.Debounce {
		c.MaxDelay = c.Debounce
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	return nil
}

// Run shows the node's menu on ui until ctx is done (it returns ctx.Err())
// or the user picks Quit (it returns nil). It follows the node's event
// stream, rebuilds the menu (debounced) from /v1/status, /v1/ls, /v1/ps and
// /v1/peers after every change, reconnects with backoff when the node goes
// away, and turns clicks into POST /v1/run, /v1/stop and /v1/click. It
// waits for every goroutine it started before it returns.
func Run(ctx context.Context, cfg Config, ui UI) error {
	if ui == nil {
		return ErrNilUI
	}
	if err := cfg.Verify(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &loop{
		cfg:    cfg,
		log:    cfg.Logger,
		c:      cfg.Client,
		ui:     ui,
		menu:   NewMenu(ui),
		events: make(chan streamNote, 64),
		snaps:  make(chan snapshot, 1),
		acts:   make(chan actionNote, 64),
		timer:  time.NewTimer(time.Hour),
	}
	l.timer.Stop()
	l.st.Activity = make(map[string]Activity)
	l.wg.Go(func() { l.watch(ctx) })
	err := l.run(ctx)
	cancel()
	l.wg.Wait()
	l.c.Close()
	return err
}

// loop is Run's state, owned by the goroutine in loop.run.
type loop struct {
	cfg  Config
	log  *slog.Logger
	c    *control.Client
	ui   UI
	menu *Menu
	wg   sync.WaitGroup

	events chan streamNote
	snaps  chan snapshot
	acts   chan actionNote

	st        State
	title     string
	fetching  bool
	needFetch bool
	needDraw  bool
	armed     bool
	first     time.Time
	timer     *time.Timer
}

// streamNote is news from the event-stream watcher.
type streamNote struct {
	up    bool // the stream (re)connected
	down  bool // the stream ended
	err   error
	event control.Event
}

// snapshot is the answer of one fetch.
type snapshot struct {
	status  control.Status
	listing control.Listing
	plugins []control.Plugin
	peers   []control.Peer
	err     error
}

// actionNote is news about an action the tray started.
type actionNote struct {
	name     string
	activity Activity
	notice   string // set: replaces the notice line
	done     bool   // the action ended: the activity is cleared, the state refetched
}

func (l *loop) run(ctx context.Context) error {
	l.draw()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case n := <-l.events:
			l.onStream(n)
		case s := <-l.snaps:
			l.onSnapshot(s)
		case a := <-l.acts:
			l.onAction(a)
		case h := <-l.ui.Clicks():
			it, ok := l.menu.Lookup(h)
			if !ok {
				l.log.Debug("tray: click ignored (disabled, hidden or gone)", "handle", h)
				continue
			}
			if it.Action.Kind == ActionQuit {
				l.log.Debug("tray: quit")
				return nil
			}
			l.do(ctx, it.Action)
		case <-l.timer.C:
			l.armed = false
			l.flush(ctx)
		}
	}
}

// schedule asks for a refetch (fetch) or only a redraw, debounced.
func (l *loop) schedule(fetch bool) {
	l.needFetch = l.needFetch || fetch
	l.needDraw = true
	now := time.Now()
	if !l.armed {
		l.armed = true
		l.first = now
		l.timer.Reset(l.cfg.Debounce)
		return
	}
	d := min(l.cfg.Debounce, l.first.Add(l.cfg.MaxDelay).Sub(now))
	l.timer.Reset(max(d, 0))
}

func (l *loop) flush(ctx context.Context) {
	if l.needFetch && !l.fetching {
		l.needFetch = false
		l.fetching = true
		l.wg.Go(func() { l.fetch(ctx) })
	}
	if l.needDraw {
		l.needDraw = false
		l.draw()
	}
}

func (l *loop) draw() {
	l.menu.Apply(Build(l.st))
	if t := Title(l.st); t != l.title {
		l.title = t
		l.ui.SetTitle(t)
	}
}

func (l *loop) onStream(n streamNote) {
	switch {
	case n.up:
		l.log.Debug("tray: event stream connected")
		l.st.Connected = true
		l.st.Problem = ""
		l.schedule(true)
	case n.down:
		l.st.Connected = false
		l.st.Problem = problem(n.err)
		l.log.Debug("tray: event stream ended", "err", n.err)
		l.schedule(false)
	default:
		switch n.event.Type {
		case control.EventProgress, control.EventMessage, control.EventHello:
			// Progress of our own actions arrives on their streams; a
			// download started elsewhere ends in an install event.
		case control.EventError:
			if n.event.Error != nil {
				l.st.Notice = n.event.Error.Error
				l.schedule(true)
			}
		default:
			l.schedule(true)
		}
	}
}

func (l *loop) onSnapshot(s snapshot) {
	l.fetching = false
	if s.err != nil {
		l.log.Debug("tray: refresh failed", "err", s.err)
		if l.st.Connected {
			l.st.Problem = problem(s.err)
		}
	} else {
		l.st.Have = true
		l.st.Status, l.st.Listing, l.st.Plugins, l.st.Peers = s.status, s.listing, s.plugins, s.peers
	}
	l.draw()
	if l.needFetch && !l.armed {
		l.schedule(true) // changes arrived while we fetched
	}
}

func (l *loop) onAction(a actionNote) {
	if a.done {
		delete(l.st.Activity, a.name)
	} else if a.name != "" {
		l.st.Activity[a.name] = a.activity
	}
	if a.notice != "" {
		l.st.Notice = a.notice
	}
	l.schedule(a.done)
}

// fetch reads the node's state and hands it to the loop.
func (l *loop) fetch(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	var s snapshot
	s.err = l.c.Get(ctx, "/v1/status", &s.status)
	if s.err == nil {
		s.err = l.c.Get(ctx, "/v1/ls", &s.listing)
	}
	if s.err == nil {
		s.err = l.c.Get(ctx, "/v1/ps", &s.plugins)
	}
	if s.err == nil {
		s.err = l.c.Get(ctx, "/v1/peers", &s.peers)
	}
	select {
	case l.snaps <- s:
	case <-ctx.Done():
	}
}

// watch follows /v1/events until ctx is done, reconnecting with backoff.
func (l *loop) watch(ctx context.Context) {
	delay := l.cfg.RetryMin
	for ctx.Err() == nil {
		start := time.Now()
		err := l.c.Stream(ctx, "/v1/events", nil, func(e control.Event) error {
			if e.Type == control.EventHello {
				l.note(ctx, streamNote{up: true})
			}
			if e.Type != "tick" {
				l.note(ctx, streamNote{event: e})
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		var ae *control.APIError
		if errors.As(err, &ae) && ae.Status/100 == 2 {
			// An "error" event (e.g. a failed automatic update) ends the
			// stream although the node is fine: the event was delivered
			// above; reconnect soon, without calling the node down.
			delay = l.cfg.RetryMin
		} else {
			l.note(ctx, streamNote{down: true, err: err})
			if time.Since(start) > l.cfg.RetryMax {
				delay = l.cfg.RetryMin // it was up for a while: start over
			}
		}
		// Jitter of ±25% so trays of many users do not reconnect in step.
		d := delay + time.Duration(rand.Int64N(int64(delay)/2+1)) - delay/4
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, l.cfg.RetryMax)
	}
}

func (l *loop) note(ctx context.Context, n streamNote) {
	select {
	case l.events <- n:
	case <-ctx.Done():
	}
}

func (l *loop) act(ctx context.Context, a actionNote) {
	select {
	case l.acts <- a:
	case <-ctx.Done():
	}
}

// do starts an action in its own goroutine; its news comes back on l.acts.
func (l *loop) do(ctx context.Context, a Action) {
	l.log.Debug("tray: action", "action", a.Kind.String(), "plugin", a.Name, "item", a.Item)
	switch a.Kind {
	case ActionRun:
		l.st.Activity[a.Name] = Activity{Busy: true, Text: "starting…"}
		l.schedule(false)
		l.wg.Go(func() { l.runPlugin(ctx, a.Name) })
	case ActionStop:
		l.wg.Go(func() {
			var res control.Result
			err := l.post(ctx, "/v1/stop", control.NameRequest{Name: a.Name}, &res)
			l.act(ctx, actionNote{done: true, notice: outcome(a.Name, res, err)})
		})
	case ActionClick:
		l.wg.Go(func() {
			var res control.Result
			err := l.post(ctx, "/v1/click", control.ClickRequest{Plugin: a.Name, Item: a.Item}, &res)
			n := actionNote{done: true}
			if err != nil {
				n.notice = a.Name + ": " + errText(err)
			}
			l.act(ctx, n)
		})
	}
}

func (l *loop) post(ctx context.Context, path string, body, v any) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	return l.c.Post(ctx, path, body, v)
}

// runPlugin does what `nearby run NAME` does: POST /v1/run (the node
// fetches a newer version first, then starts it) and follows its progress.
func (l *loop) runPlugin(ctx context.Context, name string) {
	var (
		res     *control.Result
		message string
	)
	err := l.c.Stream(ctx, "/v1/run", control.FetchRequest{Name: name}, func(e control.Event) error {
		switch e.Type {
		case control.EventProgress:
			if e.Progress != nil {
				l.act(ctx, actionNote{name: name, activity: Activity{Busy: true, Text: progressText(e.Progress)}})
			}
		case control.EventMessage:
			// e.g. "update failed (...); running installed 1.0.0"
			message = e.Message
			l.act(ctx, actionNote{name: name, activity: Activity{Busy: true, Text: "starting…"}, notice: name + ": " + e.Message})
		case control.EventResult:
			res = e.Result
		}
		return nil
	})
	n := actionNote{name: name, done: true}
	switch {
	case err != nil:
		n.notice = name + ": " + errText(err)
	case message != "":
		n.notice = name + ": " + message
	case res != nil:
		n.notice = res.Message
	default:
		n.notice = name + ": the node ended the run without a result"
	}
	l.act(ctx, n)
}

func progressText(p *control.Progress) string {
	s := "fetching " + p.Version
	if p.Node != "" {
		s += " from " + p.Node
	}
	if p.Total > 0 {
		s += fmt.Sprintf(" %d%%", p.Done*100/p.Total)
	}
	return s
}

func outcome(name string, res control.Result, err error) string {
	if err != nil {
		return name + ": " + errText(err)
	}
	if res.Message != "" {
		return res.Message
	}
	return name + ": done"
}

// errText is an error as the menu shows it: the message, then the hint on
// a second line (which goes to the tooltip).
func errText(err error) string {
	var ae *control.APIError
	if errors.As(err, &ae) {
		if ae.Body.Hint != "" {
			return ae.Body.Error + "\nhint: " + ae.Body.Hint
		}
		return ae.Body.Error
	}
	return problem(err)
}

// problem says in a few words why the node cannot be reached.
func problem(err error) string {
	switch {
	case err == nil:
		return "event stream ended"
	case errors.Is(err, control.ErrNoNode):
		return "not running"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s)-i < 60 {
		return s[i+2:]
	}
	return s
}
