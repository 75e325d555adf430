package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/nearbymesh/nearby/internal/netsafe"
)

// Defaults and bounds of Config.
const (
	// DefaultBrowseInterval is how often a Service starts a fresh browse once
	// it has started up (the first windows are 4 s, 16 s, then this).
	DefaultBrowseInterval = 30 * time.Second
	// MinBrowseInterval and MaxBrowseInterval bound Config.BrowseInterval.
	MinBrowseInterval = 100 * time.Millisecond
	MaxBrowseInterval = 10 * time.Minute
	// DefaultUpdateInterval is the least time between two re-registrations
	// caused by Update; updates in between are coalesced.
	DefaultUpdateInterval = time.Second
	// DefaultHintBuffer is the capacity of the Hints channel.
	DefaultHintBuffer = 256
)

// Config configures a Service. The zero value of every optional field means
// its default.
type Config struct {
	// Instance is the DNS-SD instance name: letters, digits and '-', at most
	// 63 bytes, unique per node. "" means InstanceName(Record.Name, Record.NodeID).
	// It is also used as the host name (Instance + ".local.").
	Instance string
	// Port is the mesh port, advertised in the SRV record. Required.
	Port int
	// Record is the TXT record to advertise. Required; Record.NodeID is also
	// how the Service recognises (and skips) its own responses.
	Record Record
	// MeshID, when set, drops hints whose record carries another mesh id
	// (logged at debug). "" accepts every mesh.
	MeshID string
	// Interfaces to advertise and browse on. nil means every interface that
	// is up and multicast-capable, re-read at every browse window so that
	// address changes are re-advertised.
	Interfaces []net.Interface
	// BrowseInterval is how often a fresh browse is started, between
	// MinBrowseInterval and MaxBrowseInterval. 0 means DefaultBrowseInterval.
	// The first windows are shorter (1 s, then doubling) so that startup is
	// fast; every window is jittered by ±25% so that nodes started together
	// drift apart; each browse is cancelled and drained before the next.
	// Every browse makes every node answer: n nodes cost n² answers per
	// interval on the LAN, so large meshes want a longer interval.
	BrowseInterval time.Duration
	// UpdateInterval is the least time between two re-registrations caused
	// by Update (at most MaxBrowseInterval). 0 means DefaultUpdateInterval.
	UpdateInterval time.Duration
	// HintBuffer is the capacity of the Hints channel. 0 means DefaultHintBuffer.
	HintBuffer int
	// Logger receives debug logs. nil means slog.Default().
	Logger *slog.Logger
}

// Stats are counters of a Service, for status displays and tests.
type Stats struct {
	// Registrations counts successful registrations (the first one, and one
	// per applied Update or address change).
	Registrations uint64
	// Browses counts browse windows started.
	Browses uint64
	// Hints counts hints put on the Hints channel.
	Hints uint64
	// Dropped counts hints dropped (the oldest first) because the Hints
	// channel was full.
	Dropped uint64
	// Ignored counts responses left out: records that are not ours or do not
	// decode, other meshes, no usable address or port.
	Ignored uint64
}

// Service advertises this node and browses for the others over mDNS. Create
// it with New, start it with Run, read Hints. Hints, Update and Stats are
// safe to call from any goroutine, before, during or after Run.
type Service struct {
	cfg      Config
	log      *slog.Logger
	hints    chan Hint
	updateCh chan struct{}
	running  atomic.Bool

	mu      sync.Mutex
	pending *Record // the latest Update not applied yet; guarded by mu

	registrations, browses, delivered, dropped, ignored atomic.Uint64
}

// New checks cfg and returns a Service that is not running yet. Errors wrap
// ErrBadConfig, or ErrBadRecord (ErrProtoVersion) for cfg.Record.
func New(cfg Config) (*Service, error) {
	if cfg.Record.Proto == 0 {
		cfg.Record.Proto = ProtocolVersion
	}
	if _, err := cfg.Record.Encode(); err != nil {
		return nil, err
	}
	if cfg.Instance == "" {
		cfg.Instance = InstanceName(cfg.Record.Name, cfg.Record.NodeID)
	}
	if err := checkInstance(cfg.Instance); err != nil {
		return nil, err
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d is not 1-65535", ErrBadConfig, cfg.Port)
	}
	if cfg.MeshID != "" && !isHex(cfg.MeshID, 16) {
		return nil, fmt.Errorf("%w: mesh id %q is not 16 lowercase hex characters", ErrBadConfig, cfg.MeshID)
	}
	if cfg.Interfaces != nil && len(cfg.Interfaces) == 0 {
		return nil, fmt.Errorf("%w: empty interface list (nil means all)", ErrBadConfig)
	}
	if err := checkInterfaces(cfg.Interfaces); err != nil {
		return nil, err
	}
	if cfg.BrowseInterval == 0 {
		cfg.BrowseInterval = DefaultBrowseInterval
	}
	if cfg.BrowseInterval < MinBrowseInterval || cfg.BrowseInterval > MaxBrowseInterval {
		return nil, fmt.Errorf("%w: browse interval %v is not within %v-%v", ErrBadConfig, cfg.BrowseInterval, MinBrowseInterval, MaxBrowseInterval)
	}
	if cfg.UpdateInterval == 0 {
		cfg.UpdateInterval = DefaultUpdateInterval
	}
	if cfg.UpdateInterval < 0 || cfg.UpdateInterval > MaxBrowseInterval {
		return nil, fmt.Errorf("%w: update interval %v is not within 0-%v", ErrBadConfig, cfg.UpdateInterval, MaxBrowseInterval)
	}
	if cfg.HintBuffer == 0 {
		cfg.HintBuffer = DefaultHintBuffer
	}
	if cfg.HintBuffer < 0 {
		return nil, fmt.Errorf("%w: negative hint buffer %d", ErrBadConfig, cfg.HintBuffer)
	}
	cfg.Interfaces = slices.Clone(cfg.Interfaces)
	cfg.Record.Subservices = slices.Clone(cfg.Record.Subservices)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{
		cfg:      cfg,
		log:      log.With("self", cfg.Instance),
		hints:    make(chan Hint, cfg.HintBuffer),
		updateCh: make(chan struct{}, 1),
	}, nil
}

// Hints returns the channel of sightings of other nodes: one hint per node
// per browse window (so a node is seen again at every window), plus nodes
// heard announcing themselves while a browse runs. The Service's own
// responses are left out. Sending never blocks Run: when the channel is
// full the oldest hint is dropped (see Stats.Dropped). The channel is never
// closed; stop reading when the context given to Run is done.
func (s *Service) Hints() <-chan Hint { return s.hints }

// Stats returns the Service's counters.
func (s *Service) Stats() Stats {
	return Stats{
		Registrations: s.registrations.Load(),
		Browses:       s.browses.Load(),
		Hints:         s.delivered.Load(),
		Dropped:       s.dropped.Load(),
		Ignored:       s.ignored.Load(),
	}
}

// Update replaces the advertised record. It returns an error, and changes
// nothing, when r does not encode or carries another node id. Run applies
// it by withdrawing the service (a goodbye) and registering it again with
// the new TXT, at most once per UpdateInterval; updates in between are
// coalesced into the latest, and an update that changes nothing on the wire
// is skipped. Browsers running elsewhere see the new record at once (the
// goodbye makes grandcat browsers forget the old one), others at their next
// browse.
func (s *Service) Update(r Record) error {
	if r.Proto == 0 {
		r.Proto = ProtocolVersion
	}
	if r.NodeID != s.cfg.Record.NodeID {
		return fmt.Errorf("%w: update carries node id %q, the service was created for %q", ErrBadRecord, r.NodeID, s.cfg.Record.NodeID)
	}
	if _, err := r.Encode(); err != nil {
		return err
	}
	r.Subservices = slices.Clone(r.Subservices)
	s.mu.Lock()
	s.pending = &r
	s.mu.Unlock()
	select {
	case s.updateCh <- struct{}{}:
	default:
	}
	return nil
}

// advert is what Run has registered: the grandcat server (nil while there
// is no usable interface or address, or after a failed registration), the
// network state and record it was built from, and its TXT.
type advert struct {
	server *zeroconf.Server
	net    netState
	rec    Record
	txt    []string
	at     time.Time
}

// Run registers the service and browses until ctx is done, then withdraws
// the service (grandcat sends a goodbye: the records with TTL 0) and returns
// ctx.Err(). While no interface has a usable address it keeps checking at
// every browse window. It returns early with an error when the netsafe
// check fails (before any multicast) or the first registration fails. Run
// may be called once.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	if err := netsafe.CheckIfRequired(); err != nil {
		return err
	}
	ns, err := currentNet(s.cfg.Interfaces)
	if err != nil {
		return err
	}
	rec := s.cfg.Record
	s.mu.Lock()
	if s.pending != nil { // an Update before Run: start with it
		rec, s.pending = *s.pending, nil
	}
	s.mu.Unlock()
	adv, err := s.register(nil, ns, rec)
	if err != nil {
		return err
	}
	defer func() { s.withdraw(adv) }()

	f := filter{log: s.log, self: s.cfg.Record.NodeID, mesh: s.cfg.MeshID, ignored: &s.ignored}
	take := func(e *zeroconf.ServiceEntry) {
		if h, ok := f.hint(e, time.Now()); ok {
			s.deliver(h)
		}
	}
	// Every browse makes every node answer by multicast, and every node
	// hears every answer: n browses cost n² packets for each node to parse.
	// So browses are few: one at start (new nodes are then heard through
	// their own announcements), a second after secondBrowse for answers
	// lost in a start-up burst, then ever longer windows up to
	// BrowseInterval. The mesh's peer exchange repairs what mDNS loses in
	// between.
	window := min(secondBrowse, s.cfg.BrowseInterval)
	var updateC <-chan time.Time // armed while an update waits for UpdateInterval
	// Windows overlap: the next browse starts listening before the previous
	// one is cancelled, so no announcement falls between two windows (a new
	// node is mostly heard through its own announcements, not our queries).
	var b *browser
	defer func() {
		if b != nil {
			b.stop(s.log, take)
		}
	}()
	for {
		if err := netsafe.CheckIfRequired(); err != nil {
			return err
		}
		var (
			entries chan *zeroconf.ServiceEntry
			regErr  error // a re-registration's netsafe failure
		)
		f.zone = zoneOf(adv.net.ifaces)
		nb, err := startBrowse(ctx, adv.net.ifaces, adv.net.browseFamilies()...)
		if b != nil {
			b.stop(s.log, take)
			b = nil
		}
		if err != nil {
			s.log.Debug("mdns browse not started", "err", err)
		} else {
			b = nb
			s.browses.Add(1)
			entries = b.entries
		}
		t := time.NewTimer(jitter(window))
	wait:
		for {
			select {
			case e, ok := <-entries:
				if !ok {
					entries = nil // grandcat gave up; the next window starts afresh
					continue
				}
				take(e)
			case <-t.C:
				break wait
			case <-s.updateCh:
				if wait := s.cfg.UpdateInterval - time.Since(adv.at); wait > 0 {
					if updateC == nil {
						updateC = time.After(wait)
					}
					continue
				}
				adv, regErr = s.applyUpdate(adv)
			case <-updateC:
				updateC = nil
				adv, regErr = s.applyUpdate(adv)
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			if regErr != nil {
				t.Stop()
				return regErr
			}
		}
		window = min(4*window, s.cfg.BrowseInterval)

		// Re-advertise when the addresses changed or the last attempt failed.
		if ns, err := currentNet(s.cfg.Interfaces); err != nil {
			s.log.Debug("cannot read interfaces", "err", err)
		} else if adv.server == nil || ns.key() != adv.net.key() {
			if adv, err = s.register(adv, ns, adv.rec); err != nil {
				return err
			}
		}
	}
}

// secondBrowse is when (jittered) the second browse starts. Not sooner:
// when many nodes start together, their second browses make a storm of
// answers (each of n nodes parses about 2n² packets), and at 2 s it met
// the mesh's TLS handshakes, which then took longer: 30 nodes on two
// cores reached a full mesh in 3.2 s with the second browse at 2 s, 2.2 s
// with it at 5 s. By 4 s the mesh has formed and repaired most losses.
const secondBrowse = 4 * time.Second

// jitter spreads d uniformly over [0.75d, 1.25d], so that nodes started
// together do not keep querying in step: every query makes every node
// answer, and n nodes querying at once make n² answers arrive together.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}

// applyUpdate re-registers with the pending record, if any and if it
// changes the TXT.
func (s *Service) applyUpdate(adv *advert) (*advert, error) {
	s.mu.Lock()
	r := s.pending
	s.pending = nil
	s.mu.Unlock()
	if r == nil {
		return adv, nil
	}
	return s.register(adv, adv.net, *r)
}

// register withdraws old (if any) and registers rec on ns. It returns an
// error only for the netsafe check, or for a failed first registration;
// later failures are logged and retried at the next browse window (the
// returned advert then has no server).
func (s *Service) register(old *advert, ns netState, rec Record) (*advert, error) {
	if err := netsafe.CheckIfRequired(); err != nil {
		return old, err
	}
	adv := &advert{net: ns, rec: rec, at: time.Now()}
	if len(ns.ifaces) == 0 || len(ns.addrs) == 0 {
		s.withdraw(old)
		s.log.Debug("not advertising: no usable interface or address yet", "interfaces", len(ns.ifaces))
		return adv, nil
	}
	txt, err := rec.EncodeLimit(txtBudget(s.cfg.Instance, s.cfg.Instance, ns.addrs))
	if err != nil {
		// New and Update checked the record; only an absurd budget gets here.
		s.log.Debug("cannot encode record", "err", err)
		if old == nil {
			return nil, fmt.Errorf("discovery: register: %w", err)
		}
		return old, nil
	}
	adv.txt = txt
	if old != nil && old.server != nil && slices.Equal(old.txt, txt) && old.net.key() == ns.key() {
		return old, nil // nothing changes on the wire
	}
	s.withdraw(old)
	ips := make([]string, len(ns.addrs))
	for i, a := range ns.addrs {
		ips[i] = a.String()
	}
	srv, err := zeroconf.RegisterProxy(s.cfg.Instance, ServiceType, Domain, s.cfg.Port, s.cfg.Instance, ips, txt, ns.ifaces)
	if err != nil {
		if old == nil {
			return nil, fmt.Errorf("discovery: register %s: %w", s.cfg.Instance, err)
		}
		s.log.Debug("mdns register failed; retrying at the next browse", "err", err)
		return adv, nil
	}
	s.registrations.Add(1)
	adv.server = srv
	s.log.Debug("advertising", "port", s.cfg.Port, "addrs", ips, "txt_strings", len(txt), "txt_bytes", txtSize(txt), "more", rec.More)
	return adv, nil
}

// minAdvertLife is how long a registration lives at least before
// withdraw shuts it down. grandcat v1.0.0's Server.Shutdown waits on a
// WaitGroup that its receive goroutines Add to only once they run, so a
// Shutdown right after RegisterProxy races with them (-race reports it,
// and the goroutines may outlive the server); by then they have started.
const minAdvertLife = 100 * time.Millisecond

// withdraw shuts adv's server down, which sends the goodbye.
func (s *Service) withdraw(adv *advert) {
	if adv == nil || adv.server == nil {
		return
	}
	if young := minAdvertLife - time.Since(adv.at); young > 0 {
		time.Sleep(young)
	}
	adv.server.Shutdown()
	adv.server = nil
}

// deliver puts h on the Hints channel, dropping the oldest hint when full.
// Only Run's goroutine sends, so the loop ends within two rounds unless a
// reader keeps emptying and the channel refilling, which it bounds anyway.
func (s *Service) deliver(h Hint) {
	for range 3 {
		select {
		case s.hints <- h:
			s.delivered.Add(1)
			return
		default:
		}
		select {
		case <-s.hints:
			s.dropped.Add(1)
		default:
		}
	}
	s.dropped.Add(1)
}
