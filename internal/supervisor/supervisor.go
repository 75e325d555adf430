package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

// Errors returned by the Supervisor. Router implementations return (or wrap)
// ErrNoPeer and ErrQueueFull so that plugins get the matching error codes.
var (
	// ErrNotRunning reports that no instance of the subservice runs here.
	ErrNotRunning = errors.New("supervisor: subservice not running")
	// ErrQueueFull reports a full queue: the plugin's outbound queue in
	// Deliver, or the mesh's queue for a peer in Router.Send.
	ErrQueueFull = errors.New("supervisor: queue full")
	// ErrNoPeer is returned by Router.Send for a node that is not connected.
	ErrNoPeer = errors.New("supervisor: no such peer")
	// ErrTooLarge is returned (wrapped) by Router.Send for a payload larger
	// than the mesh carries to that node.
	ErrTooLarge = errors.New("supervisor: payload too large for the mesh")
	// ErrUnknown reports a plugin name the supervisor has never started.
	ErrUnknown = errors.New("supervisor: unknown plugin")
	// ErrClosed reports a call after Run has returned (or while it stops).
	ErrClosed = errors.New("supervisor: closed")
	// ErrBadSpec reports an invalid Spec.
	ErrBadSpec = errors.New("supervisor: bad spec")
	// ErrCommand reports a plugin command that is missing or cannot be run.
	ErrCommand = errors.New("supervisor: cannot run command")
	// ErrBadPayload reports a payload from the mesh that is not one JSON
	// value or is larger than Config.MaxLine, or a batch payload that is
	// malformed or holds more than Config.MaxBatch messages.
	ErrBadPayload = errors.New("supervisor: bad payload")
	// ErrMenuItem reports a click on an item the plugin's menu lacks or has disabled.
	ErrMenuItem = errors.New("supervisor: no such enabled menu item")
	// ErrSocketInUse reports that another process serves Config.SocketPath.
	ErrSocketInUse = errors.New("supervisor: socket in use")
)

// Peer is a node of the mesh.
type Peer = subservice.Peer

// MenuItem is one tray menu entry a plugin offers.
type MenuItem = subservice.MenuItem

// Router carries plugin messages between nodes. The node wiring implements
// it over the mesh. Its methods are called from many goroutines, never with
// a Supervisor lock held, and must not block for long (Send may block to
// apply backpressure to the sending plugin). Send and Broadcast must not
// keep payload after they return: its memory is reused.
//
// A payload is one JSON value, or a batch of them (it then starts with a
// 0x00 byte, so it is never a JSON value; docs/WIRE.md §9): the Router
// carries both alike, and the receiving node hands them to Deliver.
type Router interface {
	// Self returns this node.
	Self() Peer
	// Peers returns the other connected nodes.
	Peers() []Peer
	// Send sends payload (one JSON value) to subservice on node to. A
	// non-zero id asks the remote to refuse it with a Nack(subservice, id,
	// ...) on this node if it cannot deliver it. It returns an error
	// wrapping ErrNoPeer or ErrQueueFull in those cases (an error for a
	// node missing from the PeerEvent table also counts as no-peer).
	Send(to, subservice string, payload []byte, id uint64) error
	// Broadcast sends payload to subservice on every other node and returns
	// the number of nodes it was sent to.
	Broadcast(subservice string, payload []byte) int
}

// Spec says how to run one plugin version.
type Spec struct {
	// Name is the plugin name, lowercase [a-z][a-z0-9]*(-[a-z][a-z0-9]*)*.
	// There is one instance per name.
	Name string
	// Subservice is the name the plugin speaks under on the mesh (same
	// form); "" means Name. Several plugins may share one: a message for it
	// reaches each of them.
	Subservice string
	// Version is the plugin version (semver, not interpreted here).
	Version string
	// Dir is the absolute install directory; the plugin runs in it.
	Dir string
	// Argv is the command. Argv[0] with a slash is relative to Dir (or
	// absolute); a bare name is looked for in Dir, then on PATH.
	Argv []string
	// Env holds extra KEY=VALUE variables. It may not set the NEARBY_
	// variables the supervisor sets.
	Env []string
}

// State is a plugin's lifecycle state.
type State = string

// Plugin states.
const (
	StateStarting State = "starting" // process started, hello not yet received
	StateRunning  State = "running"  // hello accepted
	StateBackoff  State = "backoff"  // crashed; waiting to restart
	StateFailed   State = "failed"   // cannot start, or crash loop; not restarted
	StateStopped  State = "stopped"  // stopped by Stop or by Run's exit
	StateExited   State = "exited"   // exited by itself with status 0; not restarted
)

// Status is a snapshot of one plugin.
type Status struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	State    State  `json:"state"`
	PID      int    `json:"pid,omitempty"`
	Restarts int    `json:"restarts"` // automatic restarts since Start
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// LastExit describes the last exit ("exit status 1", "signal: killed").
	LastExit string `json:"last_exit,omitempty"`
	// Error says why State is failed.
	Error string `json:"error,omitempty"`
	// Connected reports whether the plugin holds a welcomed connection.
	Connected bool `json:"connected"`
	// Dropped counts frames for the plugin dropped because its queue was full.
	Dropped uint64     `json:"dropped"`
	Menu    []MenuItem `json:"menu,omitempty"`
}

// Event reports a change. Type is "plugin": Status is the plugin's new status.
type Event struct {
	Type   string `json:"type"`
	Status Status `json:"status"`
}

// EventPlugin is the Type of an Event about a plugin's status.
const EventPlugin = "plugin"

// Config configures a Supervisor. Zero fields take the defaults shown.
type Config struct {
	// SocketPath is the unix socket plugins connect to (required; at most
	// 107 bytes). A stale socket file there is replaced; a live one is an
	// error (ErrSocketInUse).
	SocketPath string
	// LogDir holds each plugin's stdout and stderr in NAME.log, rotated to
	// NAME.log.1 at LogMaxBytes. Empty: plugin output is discarded.
	LogDir string
	// Router carries messages between nodes (required).
	Router Router
	// Logger receives Debug logs (default slog.Default()).
	Logger *slog.Logger
	// StopGrace is how long a plugin has to exit after SIGTERM before its
	// process group gets SIGKILL (default 5s).
	StopGrace time.Duration
	// BackoffInitial and BackoffMax bound the delay before restarting a
	// crashed plugin; it doubles with each crash in CrashLoopWindow
	// (defaults 250ms, 30s).
	BackoffInitial, BackoffMax time.Duration
	// CrashLoopCount restarts within CrashLoopWindow make the next crash
	// final: the plugin is marked failed (defaults 5, 1m).
	CrashLoopCount  int
	CrashLoopWindow time.Duration
	// MaxLine caps one frame from a plugin, in bytes (default 1 MiB).
	MaxLine int
	// MaxBatch caps the messages in one batch, from a plugin or from the
	// mesh (default subservice.DefaultMaxBatch).
	MaxBatch int
	// QueueSize and QueueBytes cap each plugin's outbound queue of frames
	// (defaults 1024 frames, 16 MiB); past them frames are dropped and
	// counted.
	QueueSize  int
	QueueBytes int
	// HelloTimeout is how long a new connection has to send hello (default 10s).
	HelloTimeout time.Duration
	// LogMaxBytes is the size at which a plugin log is rotated (default 4 MiB).
	LogMaxBytes int64
	// Sessions opens hosted sessions for plugins that send "open" and
	// carries their session-data (docs/PROTOCOL.md). Nil: opens are refused.
	Sessions SessionOpener
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
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.StopGrace, 5*time.Second)
	def(&c.BackoffInitial, 250*time.Millisecond)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.CrashLoopWindow, time.Minute)
	def(&c.HelloTimeout, 10*time.Second)
	defInt(&c.CrashLoopCount, 5)
	defInt(&c.MaxLine, subservice.DefaultMaxLine)
	defInt(&c.MaxBatch, subservice.DefaultMaxBatch)
	defInt(&c.QueueSize, 1024)
	defInt(&c.QueueBytes, 16<<20)
	if c.LogMaxBytes <= 0 {
		c.LogMaxBytes = 4 << 20
	}
}

// maxSocketPath is the longest unix socket path Linux accepts.
const maxSocketPath = 107

// pendingCap bounds how many sent message ids are remembered for Nack.
const pendingCap = 16384

// Supervisor runs plugin processes and serves their local socket. Its
// methods are safe for concurrent use.
type Supervisor struct {
	cfg Config
	log *slog.Logger
	ln  *net.UnixListener

	mu       sync.Mutex
	plugins  map[string]*plugin
	tokens   map[string]*instance
	peers    map[string]Peer
	subs     map[int]chan Event
	nextSub  int
	conns    map[net.Conn]struct{}
	opLocks  map[string]*sync.Mutex
	ran      bool
	closed   bool // no more Start; set when Run begins to stop
	finished bool // Run has returned

	pendMu sync.Mutex
	ring   []pending // by mesh id % pendingCap
	meshID atomic.Uint64

	logsMu sync.Mutex
	logs   map[string]*logFile

	sessMu sync.Mutex
	psess  map[*instance]*instSessions // hosted sessions opened by plugins

	wg sync.WaitGroup
}

// pending remembers a plugin's send so that a Nack can be routed back.
type pending struct {
	id       uint64 // the mesh id; 0: a free slot
	inst     *instance
	pluginID uint64
	count    int // messages: the plugin's ids pluginID..pluginID+count-1
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*$`)

// New binds cfg.SocketPath (mode 0600) and returns a Supervisor. Call Run to
// serve it; plugins may be started before Run.
func New(cfg Config) (*Supervisor, error) {
	cfg.setDefaults()
	if cfg.Router == nil {
		return nil, errors.New("supervisor: Config.Router is required")
	}
	if cfg.SocketPath == "" {
		return nil, errors.New("supervisor: Config.SocketPath is required")
	}
	if len(cfg.SocketPath) > maxSocketPath {
		return nil, fmt.Errorf("supervisor: socket path %q is %d bytes, longer than the %d a unix socket allows", cfg.SocketPath, len(cfg.SocketPath), maxSocketPath)
	}
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("supervisor: create log dir: %w", err)
		}
	}
	ln, err := listen(cfg.SocketPath)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger,
		ln:      ln,
		plugins: make(map[string]*plugin),
		tokens:  make(map[string]*instance),
		peers:   make(map[string]Peer),
		subs:    make(map[int]chan Event),
		conns:   make(map[net.Conn]struct{}),
		opLocks: make(map[string]*sync.Mutex),
		ring:    make([]pending, pendingCap),
		logs:    make(map[string]*logFile),
		psess:   make(map[*instance]*instSessions),
	}
	self := cfg.Router.Self()
	for _, p := range cfg.Router.Peers() {
		if p.ID != "" && p.ID != self.ID {
			s.peers[p.ID] = p
		}
	}
	return s, nil
}

// listen binds path with mode 0600: it binds a temporary name, restricts
// it, then renames it into place, so the socket is never reachable by
// others.
func listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("supervisor: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s", ErrSocketInUse, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("supervisor: remove stale socket: %w", err)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("supervisor: create socket dir: %w", err)
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".nearby-sock-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9))
	if len(tmp) > maxSocketPath {
		tmp = path // no room for a temporary name: bind in place
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("supervisor: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("supervisor: chmod socket: %w", err)
	}
	if tmp != path {
		if err := os.Rename(tmp, path); err != nil {
			ln.Close()
			os.Remove(tmp)
			return nil, fmt.Errorf("supervisor: place socket: %w", err)
		}
	}
	return ln, nil
}

// Run serves the socket until ctx is done, then stops every plugin (SIGTERM,
// SIGKILL after StopGrace), closes every connection, waits for all its
// goroutines, removes the socket and returns ctx.Err(). Call it once.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.ran = true
	s.wg.Add(1)
	s.mu.Unlock()
	go s.acceptLoop()
	<-ctx.Done()
	s.shutdown()
	return ctx.Err()
}

func (s *Supervisor) shutdown() {
	s.mu.Lock()
	s.closed = true
	ps := make([]*plugin, 0, len(s.plugins))
	for _, p := range s.plugins {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	s.ln.Close()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			p.requestStop()
			<-p.done
		})
	}
	wg.Wait()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(s.cfg.SocketPath)
	s.logsMu.Lock()
	for _, lf := range s.logs {
		lf.Close()
	}
	s.logsMu.Unlock()
	s.mu.Lock()
	for id, ch := range s.subs {
		delete(s.subs, id)
		close(ch)
	}
	s.finished = true
	s.mu.Unlock()
	s.log.Debug("supervisor stopped", "socket", s.cfg.SocketPath)
}

func (s *Supervisor) opLock(name string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.opLocks[name]
	if l == nil {
		l = new(sync.Mutex)
		s.opLocks[name] = l
	}
	return l
}

func validateSpec(spec Spec) error {
	switch {
	case len(spec.Name) > 64 || !nameRE.MatchString(spec.Name):
		return fmt.Errorf("%w: name %q is not lowercase [a-z][a-z0-9]*(-[a-z][a-z0-9]*)*", ErrBadSpec, spec.Name)
	case spec.Subservice != "" && (len(spec.Subservice) > 64 || !nameRE.MatchString(spec.Subservice)):
		return fmt.Errorf("%w: %s: subservice %q is not lowercase [a-z][a-z0-9]*(-[a-z][a-z0-9]*)*", ErrBadSpec, spec.Name, spec.Subservice)
	case spec.Version == "" || len(spec.Version) > 128 || strings.ContainsAny(spec.Version, " \t\r\n/"):
		return fmt.Errorf("%w: %s: bad version %q", ErrBadSpec, spec.Name, spec.Version)
	case !filepath.IsAbs(spec.Dir):
		return fmt.Errorf("%w: %s: install dir %q is not absolute", ErrBadSpec, spec.Name, spec.Dir)
	case len(spec.Argv) == 0 || spec.Argv[0] == "":
		return fmt.Errorf("%w: %s: empty command", ErrBadSpec, spec.Name)
	}
	for _, kv := range spec.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("%w: %s: env entry %q is not KEY=VALUE", ErrBadSpec, spec.Name, kv)
		}
		if slices.Contains(reservedEnv, k) {
			return fmt.Errorf("%w: %s: env may not set %s", ErrBadSpec, spec.Name, k)
		}
	}
	if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s: install dir %s is not a directory", ErrBadSpec, spec.Name, spec.Dir)
	}
	return nil
}

func sameSpec(a, b Spec) bool {
	return a.Name == b.Name && a.Version == b.Version && a.Dir == b.Dir &&
		slices.Equal(a.Argv, b.Argv) && slices.Equal(a.Env, b.Env)
}

// Start starts spec.Name. There is one instance per name: if it already
// runs the same spec, Start does nothing; if it runs another version (or
// another spec), Start checks that the new command can run, then stops the
// old instance gracefully and starts the new one. A command that is missing
// or not executable leaves the name "failed" with the reason (or the old
// version running) and returns an error wrapping ErrCommand; it is not
// retried.
func (s *Supervisor) Start(spec Spec) error {
	if err := validateSpec(spec); err != nil {
		return err
	}
	spec.Argv = slices.Clone(spec.Argv)
	spec.Env = slices.Clone(spec.Env)
	path, cmdErr := resolveCommand(spec)
	l := s.opLock(spec.Name)
	l.Lock()
	defer l.Unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if old := s.plugins[spec.Name]; old != nil && old.active() {
		if sameSpec(old.spec, spec) {
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if cmdErr != nil {
			return fmt.Errorf("supervisor: %s %s not started, %s keeps running: %w", spec.Name, spec.Version, old.spec.Version, cmdErr)
		}
		s.log.Debug("replacing plugin", "plugin", spec.Name, "old", old.spec.Version, "new", spec.Version)
		old.requestStop()
		<-old.done
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
	}
	p := newPlugin(spec)
	s.plugins[spec.Name] = p
	if cmdErr != nil {
		p.fail(cmdErr.Error())
		close(p.done)
		s.emit(p)
		s.mu.Unlock()
		s.logLine(spec.Name, "cannot start %s %s: %v", spec.Name, spec.Version, cmdErr)
		return fmt.Errorf("supervisor: start %s: %w", spec.Name, cmdErr)
	}
	s.wg.Add(1) // the manager
	s.mu.Unlock()

	inst, err := s.spawn(p, path, false)
	if err != nil {
		s.mu.Lock()
		p.fail(err.Error())
		s.emit(p)
		s.mu.Unlock()
		close(p.done)
		s.wg.Done()
		return fmt.Errorf("supervisor: start %s: %w", spec.Name, err)
	}
	go s.manage(p, path, inst)
	return nil
}

// Stop stops the named plugin: SIGTERM to its process group, SIGKILL after
// StopGrace. Its status becomes "stopped". It returns ErrUnknown for a name
// never started.
func (s *Supervisor) Stop(name string) error {
	l := s.opLock(name)
	l.Lock()
	defer l.Unlock()
	s.mu.Lock()
	p := s.plugins[name]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: %s", ErrUnknown, name)
	}
	p.requestStop()
	<-p.done
	s.mu.Lock()
	if p.state != StateStopped {
		p.setState(StateStopped)
		s.emit(p)
	}
	s.mu.Unlock()
	return nil
}

// List returns the status of every plugin started so far, sorted by name.
func (s *Supervisor) List() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.plugins))
	for _, p := range s.plugins {
		out = append(out, p.status())
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Status returns the named plugin's status.
func (s *Supervisor) Status(name string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plugins[name]
	if p == nil {
		return Status{}, false
	}
	return p.status(), true
}

// Running reports whether a process of the named plugin is alive (starting
// or running).
func (s *Supervisor) Running(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plugins[name]
	return p != nil && p.cur != nil
}

// LogPath returns the path of the named plugin's log file ("" without LogDir).
func (s *Supervisor) LogPath(name string) string {
	if s.cfg.LogDir == "" {
		return ""
	}
	return filepath.Join(s.cfg.LogDir, name+".log")
}

// Subscribe returns a channel of events with buf slots and a cancel
// function. Events that do not fit are dropped for that subscriber, so a
// slow subscriber never delays the supervisor; List gives the full state.
// The channel is closed by cancel or when Run returns.
func (s *Supervisor) Subscribe(buf int) (<-chan Event, func()) {
	ch := make(chan Event, max(buf, 0))
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	if s.finished {
		close(ch)
	} else {
		s.subs[id] = ch
	}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c, ok := s.subs[id]; ok {
			delete(s.subs, id)
			close(c)
		}
	}
}

// emit sends p's status to every subscriber. s.mu must be held.
func (s *Supervisor) emit(p *plugin) {
	if len(s.subs) == 0 {
		return
	}
	ev := Event{Type: EventPlugin, Status: p.status()}
	for _, ch := range s.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// Deliver hands a message from the mesh to every local plugin that speaks
// subservice (usually one). payload is one JSON value, or a batch of them
// (a batch payload, docs/WIRE.md §9): a plugin that asked for batches gets
// it as one batch frame, the others as a message frame per value, each
// plugin all of it or none. It never blocks: it returns an error wrapping
// ErrNotRunning when no instance runs it (the wiring answers with a
// Nack), ErrQueueFull when the plugin's queue is full (the message is
// dropped and counted), or ErrBadPayload when payload is not one JSON
// value of at most MaxLine bytes or a valid batch.
func (s *Supervisor) Deliver(from Peer, name string, payload []byte, broadcast bool) error {
	if IsBinPayload(payload) {
		return s.deliverBin(from, name, payload, broadcast)
	}
	if len(payload) > s.cfg.MaxLine {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrBadPayload, len(payload), s.cfg.MaxLine)
	}
	if len(payload) == 0 {
		return fmt.Errorf("%w: not a JSON value", ErrBadPayload)
	}
	if payload[0] == 0 {
		return s.deliverBatch(from, name, payload, broadcast)
	}
	bp := scratchPool.Get().(*[]byte)
	line, err := subservice.AppendFrame((*bp)[:0], &subservice.Frame{Op: subservice.OpMessage, From: from.ID, FromName: from.Name, Broadcast: broadcast, Data: payload})
	defer func() {
		if cap(line) <= 64<<10 {
			*bp = line[:0]
			scratchPool.Put(bp)
		}
	}()
	if err != nil {
		return fmt.Errorf("%w: not a JSON value", ErrBadPayload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fanOut(name, func(inst *instance) error { return s.push(inst, line) })
}

// fanOut calls push for the running instance of every plugin that speaks
// subservice name (usually one). It returns nil when one took it, else the
// first error, else an ErrNotRunning error. s.mu must be held.
func (s *Supervisor) fanOut(name string, push func(*instance) error) error {
	var delivered int
	var firstErr error
	for _, p := range s.plugins {
		if p.sub != name || p.cur == nil || p.cur.gone {
			continue
		}
		if err := push(p.cur); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		delivered++
	}
	if delivered > 0 {
		return nil
	}
	if firstErr != nil {
		return firstErr
	}
	return fmt.Errorf("%w: %s", ErrNotRunning, name)
}

// batchMagic starts a batch payload: 0x00 (so that it is never a JSON
// value) and 'B', then the batch, a JSON array (docs/WIRE.md §9).
const batchMagic = "\x00B"

// BatchValues returns the values of payload when it is a batch payload
// (docs/WIRE.md §9), for a Router that must send them one by one, and
// false for any other payload.
func BatchValues(payload []byte) (iter.Seq[[]byte], bool) {
	if !isBatchPayload(payload) {
		return nil, false
	}
	return subservice.BatchItems(payload[len(batchMagic):]), true
}

func isBatchPayload(payload []byte) bool {
	return len(payload) >= len(batchMagic) && string(payload[:len(batchMagic)]) == batchMagic
}

// binMagic starts a bin payload: 0x00 and 'b', then a bin block, the
// messages each as a 4-byte big-endian length and its bytes (docs/WIRE.md
// §9, docs/PROTOCOL.md §14).
const binMagic = "\x00b"

// IsBinPayload reports whether payload is a bin payload.
func IsBinPayload(payload []byte) bool {
	return len(payload) >= len(binMagic) && string(payload[:len(binMagic)]) == binMagic
}

// BinAsBatch turns a bin payload into a batch payload (or, for one
// message, an ordinary one), for a node that does not take bin payloads.
// It fails, wrapping ErrBadPayload, when a message is not JSON.
func BinAsBatch(payload []byte) ([]byte, error) {
	b, n, err := subservice.AppendBinAsBatch([]byte(batchMagic), payload[len(binMagic):])
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	case n == 1:
		return b[len(batchMagic)+1 : len(b)-1], nil
	}
	return b, nil
}

// deliverBin is Deliver for a bin payload. Plugins that asked for binary
// messages get its block as one bin frame; for the others it becomes a
// batch (each message must then be JSON), all or none.
func (s *Supervisor) deliverBin(from Peer, name string, payload []byte, broadcast bool) error {
	block := payload[len(binMagic):]
	if len(block) > s.cfg.MaxLine {
		return fmt.Errorf("%w: a bin block of %d bytes, more than %d", ErrBadPayload, len(block), s.cfg.MaxLine)
	}
	n, err := subservice.CheckBin(block)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	case n > s.cfg.MaxBatch:
		return fmt.Errorf("%w: a bin block of %d messages, more than %d", ErrBadPayload, n, s.cfg.MaxBatch)
	}
	if s.anyRunning(name, func(inst *instance) bool { return !inst.bin }) {
		// A plugin without binary messages runs it: all of them get the
		// messages as JSON, or none does.
		batch, err := BinAsBatch(payload)
		if err != nil {
			return fmt.Errorf("%w (the %s plugin here did not ask for binary messages)", err, name)
		}
		return s.Deliver(from, name, batch, broadcast)
	}
	lp := scratchPool.Get().(*[]byte)
	line := subservice.AppendBinHead((*lp)[:0], subservice.OpMessage, 0, "", from.ID, from.Name, broadcast, len(block))
	line = append(line, block...)
	defer func() {
		if cap(line) <= 1<<20 {
			*lp = line[:0]
		}
		scratchPool.Put(lp)
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fanOut(name, func(inst *instance) error {
		if !inst.bin {
			return fmt.Errorf("%w: the %s plugin does not take binary messages (it connected meanwhile)", ErrBadPayload, name)
		}
		return s.pushN(inst, line, 1, n)
	})
}

// anyRunning reports whether a running instance of a plugin that speaks
// subservice name is one for which match is true.
func (s *Supervisor) anyRunning(name string, match func(*instance) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.plugins {
		if p.sub == name && p.cur != nil && !p.cur.gone && match(p.cur) {
			return true
		}
	}
	return false
}

// deliverBatch is Deliver for a payload that starts with 0x00.
func (s *Supervisor) deliverBatch(from Peer, name string, payload []byte, broadcast bool) error {
	if !isBatchPayload(payload) {
		return fmt.Errorf("%w: unknown payload form 0x%x (not JSON, not a batch)", ErrBadPayload, payload[:min(len(payload), 2)])
	}
	batch := payload[len(batchMagic):]
	// The batch frame first: it checks the batch and counts its messages.
	lp, sp := scratchPool.Get().(*[]byte), scratchPool.Get().(*[]byte)
	line, n, err := subservice.AppendBatchFrame((*lp)[:0], &subservice.Frame{Op: subservice.OpMessage, From: from.ID, FromName: from.Name, Broadcast: broadcast, Batch: batch})
	var split []byte // a message frame per value, for plugins without batches
	defer func() {
		if cap(line) <= 1<<20 {
			*lp = line[:0]
		}
		if cap(split) <= 1<<20 && cap(split) > cap(*sp) {
			*sp = split[:0]
		}
		scratchPool.Put(lp)
		scratchPool.Put(sp)
	}()
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	case n > s.cfg.MaxBatch:
		return fmt.Errorf("%w: a batch of %d messages, more than %d", ErrBadPayload, n, s.cfg.MaxBatch)
	}
	makeSplit := func() error {
		split = (*sp)[:0]
		f := subservice.Frame{Op: subservice.OpMessage, From: from.ID, FromName: from.Name, Broadcast: broadcast}
		for d := range subservice.BatchItems(batch) {
			f.Data = d
			var err error
			if split, err = subservice.AppendFrame(split, &f); err != nil {
				return fmt.Errorf("%w: %v", ErrBadPayload, err)
			}
		}
		return nil
	}
	// Plugins without batches need the split form: make it outside the
	// lock if any is there now (and under it if one came meanwhile).
	if s.anyRunning(name, func(inst *instance) bool { return !inst.batch }) {
		if err := makeSplit(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fanOut(name, func(inst *instance) error {
		if inst.batch {
			return s.pushN(inst, line, 1, n)
		}
		if split == nil {
			if err := makeSplit(); err != nil {
				return err
			}
		}
		return s.pushN(inst, split, n, n)
	})
}

// scratchPool holds buffers for encoding message frames in Deliver (the
// queues copy them).
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// push queues a copy of a frame for inst. s.mu must be held.
func (s *Supervisor) push(inst *instance, line []byte) error { return s.pushN(inst, line, 1, 1) }

// pushN queues a copy of frames, n frames that carry msgs messages, for
// inst: all of them or none. s.mu must be held.
func (s *Supervisor) pushN(inst *instance, frames []byte, n, msgs int) error {
	switch inst.q.pushN(frames, n, msgs) {
	case pushFull:
		inst.p.dropped.Add(uint64(msgs))
		return fmt.Errorf("%w: %s", ErrQueueFull, inst.p.name)
	case pushClosed:
		return fmt.Errorf("%w: %s", ErrNotRunning, inst.p.name)
	}
	return nil
}

// NackReason returns the reason a node sends back in a nack for a Deliver
// error: "no-subservice", "queue-full" or "rejected". Nack turns it back
// into the error code the sending plugin sees.
func NackReason(err error) string {
	switch {
	case errors.Is(err, ErrNotRunning):
		return subservice.CodeNoSubservice
	case errors.Is(err, ErrQueueFull):
		return subservice.CodeQueueFull
	}
	return subservice.CodeRejected
}

// track remembers that mesh id refers to the plugin's own id on inst.
// Mesh ids count up from 1, so the last pendingCap of them each have a slot
// of their own in the ring: no map, nothing to delete.
func (s *Supervisor) track(inst *instance, pluginID uint64) uint64 {
	return s.trackN(inst, pluginID, 1)
}

// trackN is track for a batch: the mesh id refers to the plugin's ids
// pluginID..pluginID+count-1.
func (s *Supervisor) trackN(inst *instance, pluginID uint64, count int) uint64 {
	id := s.meshID.Add(1)
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	if slot := &s.ring[id%pendingCap]; slot.id < id {
		*slot = pending{id: id, inst: inst, pluginID: pluginID, count: count}
	}
	return id
}

// untrack forgets mesh id and returns what it referred to. With a
// non-empty name it forgets it only if it belongs to that plugin.
func (s *Supervisor) untrack(id uint64, name string) (pending, bool) {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	slot := &s.ring[id%pendingCap]
	if id == 0 || slot.id != id || (name != "" && slot.inst.p.sub != name) {
		return pending{}, false
	}
	p := *slot
	*slot = pending{}
	return p, true
}

// nackCode classifies a nack reason: one of the codes NackReason returns,
// or the text of a Deliver error as a mesh carries it (err.Error()).
func nackCode(reason string) string {
	switch {
	case reason == subservice.CodeNoSubservice || strings.Contains(reason, ErrNotRunning.Error()) ||
		strings.Contains(reason, "not running"):
		return subservice.CodeNoSubservice
	case reason == subservice.CodeQueueFull || strings.Contains(reason, ErrQueueFull.Error()):
		return subservice.CodeQueueFull
	}
	return subservice.CodeRejected
}

// Nack reports that from refused the message this node sent with mesh id
// id for subservice name: the plugin that sent it gets an error frame with
// its own id for that send and to = from.ID (for a batch, its first id and
// count, the number of ids the batch used). The code is "no-subservice"
// when reason is that code or the text of an ErrNotRunning error (or says
// "not running"), "queue-full" likewise for ErrQueueFull, else "rejected"
// with reason in the message. Nacks for unknown ids (too old: only the last
// 16384 sends are remembered), for another plugin's ids, or for a plugin
// instance that has gone are dropped.
func (s *Supervisor) Nack(name string, id uint64, from Peer, reason string) {
	pd, ok := s.untrack(id, name)
	if !ok {
		s.log.Debug("nack for unknown message", "plugin", name, "id", id, "peer", from.ID)
		return
	}
	code := nackCode(reason)
	var msg string
	switch {
	case code == subservice.CodeNoSubservice:
		msg = fmt.Sprintf("node %s (%s) does not run %s", from.ID, from.Name, name)
	case code == subservice.CodeQueueFull:
		msg = fmt.Sprintf("node %s (%s): the %s plugin's queue is full", from.ID, from.Name, name)
	default:
		msg = fmt.Sprintf("node %s (%s) refused the message: %s", from.ID, from.Name, reason)
	}
	count := 0
	if pd.count > 1 {
		count = pd.count
	}
	line, err := subservice.EncodeFrame(&subservice.Frame{Op: subservice.OpError, ID: pd.pluginID, Count: count, Code: code, Message: msg, To: from.ID})
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pd.inst.conn != nil && !pd.inst.gone {
		s.push(pd.inst, line)
	}
}

// PeerEvent tells every connected plugin that p came up or went down. Events
// that change nothing (up for a known peer, down for an unknown one) are
// ignored, so plugins see each change once.
func (s *Supervisor) PeerEvent(up bool, p Peer) {
	self := s.cfg.Router.Self()
	if p.ID == "" || p.ID == self.ID {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, known := s.peers[p.ID]
	ev := subservice.PeerDown
	if up {
		if known && old == p {
			return
		}
		s.peers[p.ID] = p
		ev = subservice.PeerUp
	} else {
		if !known {
			return
		}
		delete(s.peers, p.ID)
		if p.Name == "" {
			p.Name = old.Name
		}
	}
	line, err := subservice.EncodeFrame(&subservice.Frame{Op: subservice.OpPeer, Event: ev, Peer: &p})
	if err != nil {
		return
	}
	for _, pl := range s.plugins {
		if inst := pl.cur; inst != nil && inst.conn != nil && !inst.gone {
			s.push(inst, line)
		}
	}
}

// Click delivers a click on menu item item to the named plugin. It returns
// ErrNotRunning when the plugin is not connected and ErrMenuItem when its
// menu has no such enabled item.
func (s *Supervisor) Click(name, item string) error {
	line, err := subservice.EncodeFrame(&subservice.Frame{Op: subservice.OpClick, Item: item})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plugins[name]
	if p == nil || p.cur == nil || p.cur.conn == nil || p.cur.gone {
		return fmt.Errorf("%w: %s", ErrNotRunning, name)
	}
	if !slices.ContainsFunc(p.menu, func(m MenuItem) bool { return m.ID == item && m.Enabled }) {
		return fmt.Errorf("%w: %s: %q", ErrMenuItem, name, item)
	}
	return s.push(p.cur, line)
}
