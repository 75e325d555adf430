package mesh

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults used by DefaultConfig and for zero Config fields.
const (
	DefaultKeepAliveInterval = 2 * time.Second
	DefaultWriteTimeout      = 5 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultMaxFrameSize      = 1 << 20
	DefaultQueueSize         = 4 << 20
	DefaultMaxHandshakes     = 32
	DefaultReconnectMin      = 500 * time.Millisecond
	DefaultReconnectMax      = 3 * time.Second
	DefaultHintTTL           = 10 * time.Minute
	DefaultDialQuiet         = 300 * time.Millisecond
	DefaultDialQuietMax      = 3 * time.Second
)

// deadAfterTicks is how many keepalive intervals may pass without a single
// byte from a peer before the peer is dropped.
const deadAfterTicks = 3

// maxNameLen bounds the node display name, subservice names and service names.
const maxNameLen = 255

// Config configures a Mesh. Zero fields take their defaults (see
// DefaultConfig); only Identity and Key are required. A Config must not be
// changed after it is passed to New.
type Config struct {
	// Identity is this node's key pair; its public key is the node id.
	Identity *Identity
	// Key is the mesh key; only nodes that hold it can connect.
	Key Key
	// Name is the display name sent to peers (at most 255 bytes of UTF-8).
	Name string

	// ListenAddr is the "host:port" to accept peers on; default ":0".
	ListenAddr string
	// StaticPeers are "host:port" addresses dialled and redialled forever
	// (with backoff), for peers that mDNS cannot reach.
	StaticPeers []string

	// KeepAliveInterval is how often a ping goes to every peer. A peer from
	// which nothing at all arrives for 3 intervals is dropped with reason
	// "timeout", so a silently cut link disappears within 3 to 4 intervals.
	KeepAliveInterval time.Duration
	// WriteTimeout bounds every write to a peer: a peer that accepts no data
	// for this long is dropped. It also bounds how long the outbound queue
	// may stay full before the peer is dropped.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds TLS, hello and session setup of one connection.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the handshakes of accepted connections running at
	// once; connections over the bound are closed at once (counted in
	// Stats.HandshakesRefused).
	MaxHandshakes int
	// MaxFrameSize caps a message payload, in bytes (default 1 MiB). It is
	// announced to peers, which refuse to send us more.
	MaxFrameSize int
	// Features are bits the application announces to every peer in the
	// hello (docs/WIRE.md §4: the hello's flags), e.g. that it understands a
	// payload form newer peers may send; PeerInfo.Features and
	// Mesh.PeerFeatures give a peer's. The mesh itself gives them no
	// meaning. Peers that predate a bit announce 0 for it.
	Features uint16
	// QueueSize bounds each peer's outbound queue, in bytes of encoded
	// frames waiting to be written (default 4 MiB). A message that does not
	// fit is dropped: Send returns ErrQueueFull and PeerInfo.Dropped counts
	// it. A single message is always accepted into an empty queue. Keepalive,
	// catalog and bye frames are never dropped.
	QueueSize int

	// ReconnectMin and ReconnectMax bound the exponential backoff (with
	// jitter) between dial attempts to a known peer (default 0.5 s to 3 s:
	// a peer that comes back is found within about 3 s).
	ReconnectMin, ReconnectMax time.Duration
	// HintTTL is how long a peer learned from AddHint is redialled after it
	// was last hinted or last connected. A peer that says bye is forgotten at
	// once (static peers are never forgotten).
	HintTTL time.Duration
	// DialQuiet and DialQuietMax hold back the first dial to a node learned
	// from AddHint while new nodes keep being hinted in a burst (at least 4
	// within 4 DialQuiet): until none has been for DialQuiet, DialQuietMax
	// at most (defaults 300 ms and 3 s). While a LAN is coming up, TLS
	// handshakes would compete with discovery for the CPU; done after it,
	// they delay nothing that matters: the mesh is not complete before the
	// last node is known anyway. A few new nodes (a small LAN, one node
	// joining), static peers and redials never wait. A tiny DialQuiet
	// (1 ns) dials at once.
	DialQuiet, DialQuietMax time.Duration

	// OnMessage is called for every incoming message, in order per sender,
	// on that peer's reader goroutine: it must not block long, or that peer's
	// traffic stalls (other peers are unaffected). Message.Payload belongs to
	// the callee. A non-nil error is sent back to the sender as a Nack when
	// Message.ID != 0. Nil discards messages. It may call Send, Broadcast
	// and the other methods, but not Close.
	OnMessage func(Message) error
	// OnNack is called, on the reader goroutine of the peer that sent it,
	// when a peer refused one of our messages. Nil ignores nacks. It must
	// not call Close.
	OnNack func(Nack)
	// Handlers are the named stream services ("http", "session", ...) that
	// peers can open with OpenStream. Names are 1 to 255 bytes.
	Handlers map[string]StreamHandler
	// Logger receives debug logs; default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in and a Name
// from the host name. Identity and Key must still be set.
func DefaultConfig() *Config {
	name, _ := os.Hostname()
	return &Config{
		Name:              name,
		ListenAddr:        ":0",
		KeepAliveInterval: DefaultKeepAliveInterval,
		WriteTimeout:      DefaultWriteTimeout,
		HandshakeTimeout:  DefaultHandshakeTimeout,
		MaxHandshakes:     DefaultMaxHandshakes,
		MaxFrameSize:      DefaultMaxFrameSize,
		QueueSize:         DefaultQueueSize,
		ReconnectMin:      DefaultReconnectMin,
		ReconnectMax:      DefaultReconnectMax,
		HintTTL:           DefaultHintTTL,
		DialQuiet:         DefaultDialQuiet,
		DialQuietMax:      DefaultDialQuietMax,
		Logger:            slog.Default(),
	}
}

// withDefaults returns a copy of c with zero fields defaulted, or an error
// naming the first invalid field.
func (c *Config) withDefaults() (Config, error) {
	if c == nil {
		return Config{}, fmt.Errorf("mesh: nil Config (Identity and Key are required)")
	}
	cfg := *c
	d := DefaultConfig()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = d.ListenAddr
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"KeepAliveInterval", &cfg.KeepAliveInterval, d.KeepAliveInterval},
		{"WriteTimeout", &cfg.WriteTimeout, d.WriteTimeout},
		{"HandshakeTimeout", &cfg.HandshakeTimeout, d.HandshakeTimeout},
		{"ReconnectMin", &cfg.ReconnectMin, d.ReconnectMin},
		{"ReconnectMax", &cfg.ReconnectMax, d.ReconnectMax},
		{"HintTTL", &cfg.HintTTL, d.HintTTL},
		{"DialQuiet", &cfg.DialQuiet, d.DialQuiet},
		{"DialQuietMax", &cfg.DialQuietMax, d.DialQuietMax},
	}
	for _, f := range durations {
		if *f.v < 0 {
			return Config{}, fmt.Errorf("mesh: Config.%s is negative (%v)", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxHandshakes", &cfg.MaxHandshakes, d.MaxHandshakes},
		{"MaxFrameSize", &cfg.MaxFrameSize, d.MaxFrameSize},
		{"QueueSize", &cfg.QueueSize, d.QueueSize},
	}
	for _, f := range ints {
		if *f.v < 0 {
			return Config{}, fmt.Errorf("mesh: Config.%s is negative (%d)", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Identity == nil:
		return Config{}, fmt.Errorf("mesh: Config.Identity is required")
	case !cfg.Identity.ID.Valid() || len(cfg.Identity.Private) == 0 || IDFromPublicKey(cfg.Identity.Public) != cfg.Identity.ID:
		return Config{}, fmt.Errorf("mesh: Config.Identity is inconsistent (id does not match its key)")
	case cfg.Key == Key{}:
		return Config{}, fmt.Errorf("mesh: Config.Key is empty (make one with `nearby key new`)")
	case len(cfg.Name) > maxNameLen || !utf8.ValidString(cfg.Name):
		return Config{}, fmt.Errorf("mesh: Config.Name must be at most %d bytes of UTF-8", maxNameLen)
	case cfg.MaxFrameSize > maxFrameSizeLimit:
		return Config{}, fmt.Errorf("mesh: Config.MaxFrameSize %d is over the limit %d", cfg.MaxFrameSize, maxFrameSizeLimit)
	case cfg.ReconnectMax < cfg.ReconnectMin:
		return Config{}, fmt.Errorf("mesh: Config.ReconnectMax (%v) is below ReconnectMin (%v)", cfg.ReconnectMax, cfg.ReconnectMin)
	}
	for _, a := range cfg.StaticPeers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return Config{}, fmt.Errorf("mesh: Config.StaticPeers: %q: %w", a, err)
		}
	}
	handlers := make(map[string]StreamHandler, len(cfg.Handlers))
	for name, h := range cfg.Handlers {
		if err := checkName(name); err != nil {
			return Config{}, fmt.Errorf("mesh: Config.Handlers: %q: %w", name, err)
		}
		if h == nil {
			return Config{}, fmt.Errorf("mesh: Config.Handlers: %q has a nil handler", name)
		}
		handlers[name] = h
	}
	cfg.Handlers = handlers
	cfg.StaticPeers = append([]string(nil), cfg.StaticPeers...)
	return cfg, nil
}

// checkName validates a subservice or service name.
func checkName(s string) error {
	if len(s) == 0 || len(s) > maxNameLen {
		return ErrBadName
	}
	if strings.ContainsRune(s, 0) {
		return ErrBadName
	}
	return nil
}
