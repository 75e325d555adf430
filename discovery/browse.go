package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/nearbymesh/nearby/internal/netsafe"
)

// DefaultBrowseTimeout is how long Browse listens when BrowseConfig.Timeout is 0.
const DefaultBrowseTimeout = 2 * time.Second

// drainTimeout bounds how long a cancelled grandcat browse may take to close
// its entries channel.
const drainTimeout = 3 * time.Second

// Hint is one sighting of another node: where it said it can be reached and
// what its TXT record held. A hint is not proof that the node is alive or
// that it is who it claims to be: the mesh checks both when it connects.
type Hint struct {
	// Instance is the DNS-SD instance name, e.g. "alice-1a2b3c4d".
	Instance string
	// Host is the host name from the SRV record, e.g. "alice-1a2b3c4d.local.".
	// Nothing answers queries for it: dial Addrs instead.
	Host string
	// Addrs are the addresses that came with the response (never empty), in
	// the order the node gave them (IPv4 first). An IPv6 link-local address
	// carries the zone of the interface when only one was browsed.
	Addrs []netip.Addr
	// Port is the mesh port (SRV).
	Port int
	// Record is the decoded TXT record.
	Record Record
	// Seen is when the response was received.
	Seen time.Time
}

// AddrPorts returns each address of h with its port, in the order given.
func (h Hint) AddrPorts() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(h.Addrs))
	for _, a := range h.Addrs {
		out = append(out, netip.AddrPortFrom(a, uint16(h.Port)))
	}
	return out
}

// BrowseConfig configures a one-shot Browse.
type BrowseConfig struct {
	// Timeout is how long to listen; 0 means DefaultBrowseTimeout.
	Timeout time.Duration
	// MeshID, when set, leaves out nodes of other meshes.
	MeshID string
	// Self, when set, is a node id to leave out (the caller's own node).
	Self string
	// Interfaces to browse on; nil means every up, multicast interface.
	Interfaces []net.Interface
	// Logger receives debug logs; nil means slog.Default().
	Logger *slog.Logger
}

// Browse listens for nodes for cfg.Timeout (or until ctx is done) and
// returns one hint per node id, the latest sighting of each, sorted by name
// then node id. Records that are not ours or do not decode are left out
// (logged at debug). It returns an error only when it could not browse at
// all: the netsafe check failed, ctx was already done, or no multicast
// socket could be opened.
func Browse(ctx context.Context, cfg BrowseConfig) ([]Hint, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative browse timeout %v", ErrBadConfig, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultBrowseTimeout
	}
	if cfg.MeshID != "" && !isHex(cfg.MeshID, 16) {
		return nil, fmt.Errorf("%w: mesh id %q is not 16 lowercase hex characters", ErrBadConfig, cfg.MeshID)
	}
	if err := checkInterfaces(cfg.Interfaces); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ifaces := cfg.Interfaces
	if ifaces == nil {
		var err error
		if ifaces, err = multicastInterfaces(); err != nil {
			return nil, err
		}
	}
	b, err := startBrowse(ctx, ifaces)
	if err != nil {
		return nil, err
	}
	f := filter{log: log, self: cfg.Self, mesh: cfg.MeshID, zone: zoneOf(ifaces), ignored: new(atomic.Uint64)}
	byID := map[string]Hint{}
	take := func(e *zeroconf.ServiceEntry) {
		if h, ok := f.hint(e, time.Now()); ok {
			byID[h.Record.NodeID] = h
		}
	}
	t := time.NewTimer(cfg.Timeout)
	defer t.Stop()
loop:
	for {
		select {
		case e, ok := <-b.entries:
			if !ok {
				break loop
			}
			take(e)
		case <-t.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	b.stop(log, take)
	out := make([]Hint, 0, len(byID))
	for _, h := range byID {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Hint) int {
		return cmp.Or(cmp.Compare(a.Record.Name, b.Record.Name), cmp.Compare(a.Record.NodeID, b.Record.NodeID))
	})
	return out, nil
}

// browser is one running grandcat browse. Its owner must call stop, which
// cancels it and drains its entries until grandcat closes them: an undrained
// browse blocks and leaks its sockets and goroutines.
type browser struct {
	cancel  context.CancelFunc
	entries chan *zeroconf.ServiceEntry
}

// startBrowse checks netsafe, opens a resolver on ifaces and starts
// browsing ServiceType. It tries the IP families in order (all of them
// when order is empty: both, then either alone).
func startBrowse(ctx context.Context, ifaces []net.Interface, order ...zeroconf.IPType) (*browser, error) {
	if err := netsafe.CheckIfRequired(); err != nil {
		return nil, err
	}
	if len(ifaces) == 0 {
		return nil, errors.New("discovery: browse: no multicast interface")
	}
	var (
		r   *zeroconf.Resolver
		err error
	)
	if len(order) == 0 {
		order = []zeroconf.IPType{zeroconf.IPv4AndIPv6, zeroconf.IPv4, zeroconf.IPv6}
	}
	for _, ipt := range order {
		if r, err = zeroconf.NewResolver(zeroconf.SelectIfaces(ifaces), zeroconf.SelectIPTraffic(ipt)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("discovery: open resolver: %w", err)
	}
	bctx, cancel := context.WithCancel(ctx)
	b := &browser{cancel: cancel, entries: make(chan *zeroconf.ServiceEntry, 16)}
	if err := r.Browse(bctx, ServiceType, Domain, b.entries); err != nil {
		b.stop(slog.Default(), func(*zeroconf.ServiceEntry) {})
		return nil, fmt.Errorf("discovery: browse: %w", err)
	}
	return b, nil
}

// stop cancels the browse and passes every entry still delivered to take
// until grandcat closes the channel (bounded by drainTimeout).
func (b *browser) stop(log *slog.Logger, take func(*zeroconf.ServiceEntry)) {
	b.cancel()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	for {
		select {
		case e, ok := <-b.entries:
			if !ok {
				return
			}
			take(e)
		case <-t.C:
			log.Debug("mdns browse did not stop in time; abandoning it")
			return
		}
	}
}

// zoneOf returns the name of the only interface in ifaces, or "" when there
// are several: grandcat does not say on which one a response arrived, so an
// IPv6 link-local address gets a zone only when there is no doubt.
func zoneOf(ifaces []net.Interface) string {
	if len(ifaces) == 1 {
		return ifaces[0].Name
	}
	return ""
}

// filter turns grandcat entries into hints, dropping what is not for us.
type filter struct {
	log     *slog.Logger
	self    string // node id to skip silently
	mesh    string // mesh id to require; "" accepts all
	zone    string // zone for IPv6 link-local addresses: the one interface browsed
	ignored *atomic.Uint64
}

// hint converts e, or reports false (and logs at debug why) when e is not a
// usable hint: its record does not decode, it belongs to another mesh, it is
// our own, or it has no usable port or address.
func (f filter) hint(e *zeroconf.ServiceEntry, now time.Time) (Hint, bool) {
	rec, err := DecodeRecord(e.Text)
	if err != nil {
		f.ignored.Add(1)
		f.log.Debug("ignoring mdns service: record is not ours", "instance", e.Instance, "err", err)
		return Hint{}, false
	}
	if rec.NodeID == f.self {
		return Hint{}, false
	}
	if f.mesh != "" && rec.MeshID != f.mesh {
		f.ignored.Add(1)
		f.log.Debug("ignoring node of another mesh", "instance", e.Instance, "node", rec.NodeID, "mesh", rec.MeshID)
		return Hint{}, false
	}
	if e.Port <= 0 || e.Port > 65535 {
		f.ignored.Add(1)
		f.log.Debug("ignoring node with a bad port", "instance", e.Instance, "node", rec.NodeID, "port", e.Port)
		return Hint{}, false
	}
	var addrs []netip.Addr
	for _, ip := range append(append([]net.IP(nil), e.AddrIPv4...), e.AddrIPv6...) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.Is6() && a.IsLinkLocalUnicast() && f.zone != "" {
			a = a.WithZone(f.zone) // dialable only with its interface
		}
		if a.IsUnspecified() || a.IsMulticast() || slices.Contains(addrs, a) {
			continue
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		f.ignored.Add(1)
		f.log.Debug("ignoring node without a usable address", "instance", e.Instance, "node", rec.NodeID)
		return Hint{}, false
	}
	return Hint{
		Instance: e.Instance,
		Host:     e.HostName,
		Addrs:    addrs,
		Port:     e.Port,
		Record:   rec,
		Seen:     now,
	}, true
}
