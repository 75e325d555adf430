package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// Service is the mesh stream service of sessions, CtlService that of
// control requests on existing sessions.
const (
	Service    = "session"
	CtlService = "session-ctl"
)

// Defaults for Limits and Config.
const (
	DefaultMaxSessions  = 16
	DefaultIdleTimeout  = 10 * time.Minute
	DefaultOutputBuffer = 1 << 20
	DefaultMaxTotal     = 256
	DefaultWindow       = 256 << 10
	DefaultStopGrace    = 2 * time.Second
	DefaultEndTimeout   = 5 * time.Second
	DefaultHandshake    = 10 * time.Second
	DefaultHistory      = 64
)

// ctlBuffer bounds the control-request input waiting for one program, on
// top of the stream's window.
const ctlBuffer = 64 << 10

// Limits bound a hosted plugin's sessions. A zero field means the default.
type Limits struct {
	// MaxSessions caps the plugin's concurrent sessions; an open over it
	// is refused (RefuseLimit).
	MaxSessions int
	// IdleTimeout ends a session when no data has gone either way for
	// this long (CodeIdle).
	IdleTimeout time.Duration
	// OutputBuffer caps the program output held for a presenter that does
	// not read it; past it the session ends (CodeOverflow).
	OutputBuffer int
}

// withDefaults fills the zero fields of l from d, then from the package
// defaults.
func (l Limits) withDefaults(d Limits) Limits {
	pick := func(v, dv, def int) int {
		switch {
		case v > 0:
			return v
		case dv > 0:
			return dv
		}
		return def
	}
	l.MaxSessions = pick(l.MaxSessions, d.MaxSessions, DefaultMaxSessions)
	l.OutputBuffer = pick(l.OutputBuffer, d.OutputBuffer, DefaultOutputBuffer)
	switch {
	case l.IdleTimeout > 0:
	case d.IdleTimeout > 0:
		l.IdleTimeout = d.IdleTimeout
	default:
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// Spec says how to run one hosted plugin's sessions.
type Spec struct {
	// Name and Version of the plugin.
	Name, Version string
	// Dir is the absolute install directory; programs run in it.
	Dir string
	// Argv is the command started for each session. Argv[0] with a slash
	// is relative to Dir (or absolute); a bare name is looked for in Dir,
	// then on PATH.
	Argv []string
	// Limits for its sessions (zero fields: Config.Defaults).
	Limits Limits
}

// Config configures a Host. Zero fields take the defaults shown.
type Config struct {
	// Self is this node (required: its ID).
	Self Peer
	// LogDir holds each plugin's log, NAME.log: its programs' stderr, line
	// by line with the session's id, and a line per session start and end.
	// Empty: stderr is discarded.
	LogDir string
	// LogMaxBytes is the size at which a log is rotated to NAME.log.1
	// (default 4 MiB).
	LogMaxBytes int64
	// Defaults are the limits for specs that leave them zero (default
	// DefaultMaxSessions, DefaultIdleTimeout, DefaultOutputBuffer).
	Defaults Limits
	// MaxTotal caps the sessions of all plugins together (default 256).
	MaxTotal int
	// Window is the input credit of a session in bytes: how much a
	// presenter may send before the program has read it (default 256 KiB).
	Window int
	// StopGrace is how long a program has after SIGTERM before SIGKILL
	// (default 2s).
	StopGrace time.Duration
	// HandshakeTimeout bounds reading a request and writing its answer
	// (default 10s).
	HandshakeTimeout time.Duration
	// EndTimeout bounds delivering the rest of the output and the end frame
	// to a presenter once a session ends (default 5s).
	EndTimeout time.Duration
	// History is how many ended sessions Sessions still lists (default 64).
	History int
	// NotServed, if set, explains why an open of a plugin this host does
	// not serve is refused (the Code is RefuseNotHosted whatever it says).
	NotServed func(plugin string) Refusal
	// OnChange, if set, is called with a session's Info when it opens and
	// when it ends. It runs on the session's goroutines and must not block.
	OnChange func(Info)
	// Logger receives Debug logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.StopGrace, DefaultStopGrace)
	def(&c.HandshakeTimeout, DefaultHandshake)
	def(&c.EndTimeout, DefaultEndTimeout)
	if c.MaxTotal <= 0 {
		c.MaxTotal = DefaultMaxTotal
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.LogMaxBytes <= 0 {
		c.LogMaxBytes = 4 << 20
	}
}

// Session roles and states, as in Info.
const (
	RoleHost      = "host"
	RolePresenter = "presenter"

	StateStarting = "starting" // the program is being started
	StateOpen     = "open"     // established: data flows
	StateEnding   = "ending"   // ended; the program and stream are being closed
	StateEnded    = "ended"
)

// Info describes one session, as its host or its presenter's node sees it.
type Info struct {
	ID        string `json:"id"`
	Plugin    string `json:"plugin"`
	Version   string `json:"version"`
	Role      string `json:"role"`
	Host      Peer   `json:"host"`
	Presenter Peer   `json:"presenter"`
	// Owner is, on the presenter's node, what holds the session: "cli" or
	// "plugin NAME".
	Owner      string    `json:"owner,omitempty"`
	State      string    `json:"state"`
	Started    time.Time `json:"started"`
	LastActive time.Time `json:"last_active"`
	// PID is the program's process id (on the host only).
	PID int `json:"pid,omitempty"`
	// BytesIn went to the program, BytesOut came from it.
	BytesIn  uint64    `json:"bytes_in"`
	BytesOut uint64    `json:"bytes_out"`
	Ended    time.Time `json:"ended,omitzero"`
	End      *End      `json:"end,omitempty"`
}

// Served describes a plugin a Host serves.
type Served struct {
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Since    time.Time `json:"since"`
	Sessions int       `json:"sessions"`
	Limits   Limits    `json:"limits"`
}

// Host runs the host side of sessions: it serves hosted plugins, starts a
// program for each session a presenter opens, bridges it to the
// presenter's stream, and keeps the session table. Its methods are safe
// for concurrent use.
type Host struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	served  map[string]*served
	live    map[string]*hostSession
	history []Info
	logs    map[string]*logFile
	closed  bool
	refused uint64

	wg sync.WaitGroup
}

type served struct {
	spec  Spec
	path  string
	lim   Limits
	since time.Time
}

// NewHost returns a Host that serves nothing yet.
func NewHost(cfg Config) (*Host, error) {
	cfg.setDefaults()
	if cfg.Self.ID == "" {
		return nil, fmt.Errorf("session: Config.Self.ID is required")
	}
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("session: create log dir: %w", err)
		}
	}
	return &Host{
		cfg:    cfg,
		log:    cfg.Logger,
		served: make(map[string]*served),
		live:   make(map[string]*hostSession),
		logs:   make(map[string]*logFile),
	}, nil
}

// LogPath returns the log of a plugin's sessions ("" without a LogDir).
func (h *Host) LogPath(name string) string {
	if h.cfg.LogDir == "" {
		return ""
	}
	return filepath.Join(h.cfg.LogDir, name+".log")
}

func (h *Host) logFor(name string) *logFile {
	if h.cfg.LogDir == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	lf := h.logs[name]
	if lf == nil {
		lf = &logFile{fsutil.Log{Path: h.LogPath(name), Max: h.cfg.LogMaxBytes}}
		h.logs[name] = lf
	}
	return lf
}

// Serve starts serving spec: new sessions of spec.Name run it. If another
// version (or another spec) of the name was served, its sessions end with
// CodeRestarted and n says how many; serving the same spec again changes
// nothing. Serve returns at once: old sessions end in the background, and
// new ones can be opened immediately.
func (h *Host) Serve(spec Spec) (n int, err error) {
	switch {
	case !validName(spec.Name):
		return 0, fmt.Errorf("%w: name %q", ErrBadSpec, spec.Name)
	case spec.Version == "" || len(spec.Version) > 128:
		return 0, fmt.Errorf("%w: %s: bad version %q", ErrBadSpec, spec.Name, spec.Version)
	case !filepath.IsAbs(spec.Dir):
		return 0, fmt.Errorf("%w: %s: install dir %q is not absolute", ErrBadSpec, spec.Name, spec.Dir)
	case spec.Limits.MaxSessions < 0 || spec.Limits.OutputBuffer < 0 || spec.Limits.IdleTimeout < 0:
		return 0, fmt.Errorf("%w: %s: negative limit", ErrBadSpec, spec.Name)
	}
	spec.Argv = slices.Clone(spec.Argv)
	path, err := resolveCommand(spec.Dir, spec.Argv)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", spec.Name, spec.Version, err)
	}
	srv := &served{spec: spec, path: path, lim: spec.Limits.withDefaults(h.cfg.Defaults), since: time.Now()}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return 0, ErrClosed
	}
	old := h.served[spec.Name]
	if old != nil && sameSpec(old.spec, spec) {
		h.mu.Unlock()
		return 0, nil
	}
	h.served[spec.Name] = srv
	victims := h.sessionsOf(old)
	h.mu.Unlock()
	if old != nil {
		reason := fmt.Sprintf("%s was restarted on %s (%s replaces %s); open a new session", spec.Name, h.cfg.Self.Name, spec.Version, old.spec.Version)
		for _, s := range victims {
			s.end(End{Code: CodeRestarted, Reason: reason})
		}
	}
	h.log.Debug("serving hosted plugin", "plugin", spec.Name, "version", spec.Version, "ended", len(victims))
	return len(victims), nil
}

func sameSpec(a, b Spec) bool {
	return a.Name == b.Name && a.Version == b.Version && a.Dir == b.Dir &&
		slices.Equal(a.Argv, b.Argv) && a.Limits == b.Limits
}

// sessionsOf returns the live sessions of srv. h.mu must be held.
func (h *Host) sessionsOf(srv *served) []*hostSession {
	var out []*hostSession
	if srv == nil {
		return out
	}
	for _, s := range h.live {
		if s.srv == srv {
			out = append(out, s)
		}
	}
	return out
}

// Stop stops serving the named plugin: new opens are refused and its
// sessions end with CodeStopped (n says how many). It returns at once and
// an error wrapping ErrNotServed for a plugin not served.
func (h *Host) Stop(name string) (n int, err error) {
	h.mu.Lock()
	srv := h.served[name]
	if srv == nil {
		h.mu.Unlock()
		return 0, fmt.Errorf("%w: %s", ErrNotServed, name)
	}
	delete(h.served, name)
	victims := h.sessionsOf(srv)
	h.mu.Unlock()
	reason := fmt.Sprintf("%s was stopped on %s", name, h.cfg.Self.Name)
	for _, s := range victims {
		s.end(End{Code: CodeStopped, Reason: reason})
	}
	return len(victims), nil
}

// Served lists the plugins served, sorted by name.
func (h *Host) Served() []Served {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Served, 0, len(h.served))
	for _, srv := range h.served {
		out = append(out, Served{Name: srv.spec.Name, Version: srv.spec.Version, Since: srv.since,
			Sessions: h.countLive(srv), Limits: srv.lim})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Serving returns the version of name being served.
func (h *Host) Serving(name string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if srv := h.served[name]; srv != nil {
		return srv.spec.Version, true
	}
	return "", false
}

// countLive counts srv's sessions that have not ended. h.mu must be held.
func (h *Host) countLive(srv *served) int {
	n := 0
	for _, s := range h.live {
		if s.srv == srv && !s.isEnded() {
			n++
		}
	}
	return n
}

// Sessions lists the live sessions, then the most recently ended ones,
// each group oldest first.
func (h *Host) Sessions() []Info {
	h.mu.Lock()
	live := make([]*hostSession, 0, len(h.live))
	for _, s := range h.live {
		live = append(live, s)
	}
	out := slices.Clone(h.history)
	h.mu.Unlock()
	cur := make([]Info, 0, len(live))
	for _, s := range live {
		cur = append(cur, s.info())
	}
	sort.Slice(cur, func(i, j int) bool { return cur[i].Started.Before(cur[j].Started) })
	return append(cur, out...)
}

// Session returns one session, live or recently ended.
func (h *Host) Session(id string) (Info, bool) {
	h.mu.Lock()
	s := h.live[id]
	if s == nil {
		defer h.mu.Unlock()
		for _, in := range h.history {
			if in.ID == id {
				return in, true
			}
		}
		return Info{}, false
	}
	h.mu.Unlock()
	return s.info(), true
}

// PeerDown ends every session presented by node id (CodePresenterLeft).
func (h *Host) PeerDown(id, name string) {
	h.mu.Lock()
	var victims []*hostSession
	for _, s := range h.live {
		if s.presenter.ID == id {
			victims = append(victims, s)
		}
	}
	h.mu.Unlock()
	if name == "" {
		name = short(id)
	}
	for _, s := range victims {
		s.end(End{Code: CodePresenterLeft, Reason: fmt.Sprintf("the presenter's node %s left the mesh", name)})
	}
}

// RefusedControls counts control requests refused because they did not come
// from the session's presenter.
func (h *Host) RefusedControls() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// Close refuses new sessions, ends every session with CodeShutdown (each
// presenter is told, within EndTimeout) and waits until their programs
// have exited. It is idempotent.
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	victims := make([]*hostSession, 0, len(h.live))
	for _, s := range h.live {
		victims = append(victims, s)
	}
	h.mu.Unlock()
	reason := fmt.Sprintf("the host %s is shutting down", h.cfg.Self.Name)
	for _, s := range victims {
		s.end(End{Code: CodeShutdown, Reason: reason})
	}
	h.wg.Wait()
	h.mu.Lock()
	for _, lf := range h.logs {
		lf.close()
	}
	h.mu.Unlock()
}

// newID returns a random session id.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// refuse answers a request with a refusal and closes the stream.
func (h *Host) refuse(c net.Conn, r Refusal) {
	c.SetWriteDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	c.Write(encodeJSON(frameRefused, r))
	c.Close()
}

// HandleStream serves one "session" stream that the node from opened: it
// reads the request, starts the program, answers, and bridges the two
// until the session ends. It owns c and returns once the session has
// ended and its program has exited. from must be the authenticated peer of
// the stream (the mesh handshake proved it).
func (h *Host) HandleStream(from Peer, c net.Conn) {
	c.SetDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	fr := newFrameReader(c)
	typ, body, err := fr.next()
	if err != nil {
		h.log.Debug("session request unreadable", "peer", from.ID, "err", err)
		h.refuse(c, Refusal{Code: RefuseBadRequest, Error: "session: no readable request: " + err.Error()})
		return
	}
	if typ != frameOpen {
		h.refuse(c, Refusal{Code: RefuseBadRequest, Error: fmt.Sprintf("session: want an open frame first, got 0x%02x", typ)})
		return
	}
	req, err := decodeJSON[Request](body)
	if err != nil {
		h.refuse(c, Refusal{Code: RefuseBadRequest, Error: err.Error()})
		return
	}
	s, refusal := h.admit(from, req, c)
	if refusal != nil {
		h.log.Debug("session refused", "peer", from.ID, "plugin", req.Plugin, "code", refusal.Code, "reason", refusal.Error)
		h.refuse(c, *refusal)
		return
	}
	defer h.wg.Done()
	s.run(fr)
}

// admit checks a request against what is served and the limits, then
// starts the program. It returns the new session, or why not.
func (h *Host) admit(from Peer, req *Request, c net.Conn) (*hostSession, *Refusal) {
	self := h.cfg.Self.Name
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, &Refusal{Code: RefuseShutdown, Error: fmt.Sprintf("node %s is shutting down", self)}
	}
	srv := h.served[req.Plugin]
	if srv == nil {
		h.mu.Unlock()
		r := Refusal{Error: fmt.Sprintf("node %s does not run a hosted plugin %q", self, req.Plugin),
			Hint: "`nearby ls` shows which node hosts what"}
		if h.cfg.NotServed != nil {
			r = h.cfg.NotServed(req.Plugin)
		}
		r.Code = RefuseNotHosted
		return nil, &r
	}
	if req.Version != "" && req.Version != srv.spec.Version {
		h.mu.Unlock()
		return nil, &Refusal{Code: RefuseVersion, Error: fmt.Sprintf("node %s runs %s %s, not %s", self, req.Plugin, srv.spec.Version, req.Version),
			Hint: fmt.Sprintf("open %s without a version to get %s", req.Plugin, srv.spec.Version)}
	}
	if n := h.countLive(srv); n >= srv.lim.MaxSessions {
		h.mu.Unlock()
		return nil, &Refusal{Code: RefuseLimit,
			Error: fmt.Sprintf("%s on %s already has %d sessions, its limit (sessions.max_sessions)", req.Plugin, self, n),
			Hint:  "close one of yours (`nearby sessions` lists them) and try again, or ask the publisher to raise max_sessions"}
	}
	total := 0
	for _, s := range h.live {
		if !s.isEnded() {
			total++
		}
	}
	if total >= h.cfg.MaxTotal {
		h.mu.Unlock()
		return nil, &Refusal{Code: RefuseLimit, Error: fmt.Sprintf("node %s already runs %d sessions, its limit", self, total),
			Hint: "try again when sessions have ended"}
	}
	now := time.Now()
	s := &hostSession{
		h: h, srv: srv, id: newID(), presenter: from, conn: c,
		started: now, state: StateStarting,
		allowed: h.cfg.Window,
		wake:    make(chan struct{}, 1),
		inWake:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		outDone: make(chan struct{}),
	}
	s.lastActive.Store(now.UnixNano())
	h.live[s.id] = s
	h.wg.Add(1)
	h.mu.Unlock()

	s.log = h.logFor(srv.spec.Name)
	env := environ(s.id, from, h.cfg.Self, srv.spec)
	p, err := startProc(srv.path, srv.spec.Argv, srv.spec.Dir, env)
	if err != nil {
		h.mu.Lock()
		delete(h.live, s.id)
		h.mu.Unlock()
		h.wg.Done()
		s.log.printf(s.id, "cannot start for %s: %v", from.Name, err)
		return nil, &Refusal{Code: RefuseSpawn, Error: fmt.Sprintf("%s on %s: %v", req.Plugin, self, err),
			Hint: "the host's `nearby logs " + req.Plugin + "` may say more"}
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return s, nil
}

// HandleCtl serves one "session-ctl" stream from node from: one control
// request on an existing session, allowed only from that session's
// presenter node. It owns c.
func (h *Host) HandleCtl(from Peer, c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	answer := func(a CtlAnswer) { c.Write(encodeJSON(frameCtlAnswer, a)) }
	fr := newFrameReader(c)
	typ, body, err := fr.next()
	if err != nil || typ != frameCtl {
		answer(CtlAnswer{Refusal: &Refusal{Code: RefuseBadRequest, Error: "session: want one control frame"}})
		return
	}
	req, err := decodeJSON[CtlRequest](body)
	if err != nil {
		answer(CtlAnswer{Refusal: &Refusal{Code: RefuseBadRequest, Error: err.Error()}})
		return
	}
	h.mu.Lock()
	s := h.live[req.Session]
	mine := s != nil && s.presenter.ID == from.ID
	if !mine {
		h.refused++
	}
	h.mu.Unlock()
	if !mine {
		// The same answer whether the session exists or not: a node learns
		// nothing about sessions that are not its own.
		why := "no such session"
		if s != nil {
			why = "presented by node " + s.presenter.ID
		}
		h.log.Warn("session control refused: not from the session's presenter", "peer", from.ID, "peer_name", from.Name,
			"session", short(req.Session), "op", req.Op, "why", why)
		answer(CtlAnswer{Refusal: &Refusal{Code: RefuseNotPresenter,
			Error: fmt.Sprintf("node %s presents no session %s on %s", from.Name, short(req.Session), h.cfg.Self.Name),
			Hint:  "only the node that opened a session can write to it or close it"}})
		return
	}
	switch req.Op {
	case CtlClose:
		s.end(End{Code: CodeClosed, Reason: "closed by the presenter's node"})
		answer(CtlAnswer{OK: true})
	case CtlWrite:
		if r := s.ctlWrite(req.Data); r != nil {
			answer(CtlAnswer{Refusal: r})
			return
		}
		answer(CtlAnswer{OK: true})
	}
}

// finish moves s from the live table to the history.
func (h *Host) finish(s *hostSession) {
	in := s.info()
	h.mu.Lock()
	delete(h.live, s.id)
	h.history = append(h.history, in)
	if len(h.history) > h.cfg.History {
		h.history = slices.Delete(h.history, 0, len(h.history)-h.cfg.History)
	}
	h.mu.Unlock()
	if h.cfg.OnChange != nil {
		h.cfg.OnChange(in)
	}
}

// Run waits for ctx, then calls Close. It returns ctx.Err().
func (h *Host) Run(ctx context.Context) error {
	<-ctx.Done()
	h.Close()
	return ctx.Err()
}
