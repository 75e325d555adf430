package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/grandcat/zeroconf"
)

// MaxAdvertisedAddrs bounds the addresses a Service puts in its responses
// (IPv4 first), which keeps every response inside one frame.
const MaxAdvertisedAddrs = 6

// FrameBytes is the size of the frame a response must fit in: one Ethernet
// MTU. The budget subtracts a 40-byte IPv6 header and an 8-byte UDP header.
const FrameBytes = 1500

// netState is what a Service registers with: the interfaces it speaks on
// and the addresses it advertises.
type netState struct {
	ifaces []net.Interface
	addrs  []netip.Addr
}

// key identifies a netState, to notice when interfaces or addresses change.
func (n netState) key() string {
	var b strings.Builder
	for _, ifi := range n.ifaces {
		fmt.Fprintf(&b, "%d:%s,", ifi.Index, ifi.Name)
	}
	b.WriteByte('|')
	for _, a := range n.addrs {
		b.WriteString(a.String())
		b.WriteByte(',')
	}
	return b.String()
}

// multicastInterfaces lists the interfaces that are up and multicast-capable,
// as grandcat/zeroconf does by default.
func multicastInterfaces() ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("discovery: list interfaces: %w", err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			out = append(out, ifi)
		}
	}
	return out, nil
}

// checkInterfaces verifies interfaces given in a Config: each must exist
// under the same index and name, and be able to multicast.
func checkInterfaces(ifaces []net.Interface) error {
	for _, want := range ifaces {
		got, err := net.InterfaceByIndex(want.Index)
		if err != nil || got.Name != want.Name {
			return fmt.Errorf("%w: interface %q (index %d) does not exist", ErrBadConfig, want.Name, want.Index)
		}
		if got.Flags&net.FlagMulticast == 0 {
			return fmt.Errorf("%w: interface %q cannot multicast", ErrBadConfig, want.Name)
		}
	}
	return nil
}

// currentNet returns the interfaces to use (configured, or all up multicast
// interfaces when configured is nil) and the addresses to advertise on them.
func currentNet(configured []net.Interface) (netState, error) {
	ifaces := configured
	if ifaces == nil {
		var err error
		if ifaces, err = multicastInterfaces(); err != nil {
			return netState{}, err
		}
	} else {
		// Refresh flags: an interface given at start may be down now.
		var live []net.Interface
		for _, ifi := range configured {
			if got, err := net.InterfaceByIndex(ifi.Index); err == nil && got.Flags&net.FlagUp != 0 {
				live = append(live, *got)
			}
		}
		ifaces = live
	}
	var sets [][]net.Addr
	for _, ifi := range ifaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		sets = append(sets, addrs)
	}
	return netState{ifaces: ifaces, addrs: pickAddrs(sets)}, nil
}

// pickAddrs chooses the addresses to advertise from the interfaces'
// addresses: IPv4 (except loopback), then global and unique-local IPv6; only
// when there is none of those, IPv6 link-local; only when there is still
// none, loopback (a test namespace holding only lo). At most
// MaxAdvertisedAddrs, without zones or duplicates.
func pickAddrs(sets [][]net.Addr) []netip.Addr {
	var v4, v6, ll, lo []netip.Addr
	for _, addrs := range sets {
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap().WithZone("")
			switch {
			case ip.IsLoopback():
				lo = append(lo, ip)
			case ip.IsMulticast() || ip.IsUnspecified():
			case ip.Is4():
				v4 = append(v4, ip)
			case ip.IsLinkLocalUnicast():
				ll = append(ll, ip)
			case ip.IsGlobalUnicast():
				v6 = append(v6, ip)
			}
		}
	}
	out := append(v4, v6...)
	if len(out) == 0 {
		out = ll
	}
	if len(out) == 0 {
		out = lo
	}
	var uniq []netip.Addr
	for _, a := range out {
		if !slices.Contains(uniq, a) && len(uniq) < MaxAdvertisedAddrs {
			uniq = append(uniq, a)
		}
	}
	return uniq
}

// txtBudget returns how many TXT bytes can go with this instance, host and
// addresses so that every message grandcat/zeroconf v1.0.0 sends for the
// service fits in FrameBytes, at most MaxTXTBytes. The largest one is the
// goodbye: the same records as an announcement (SRV, TXT, PTR, the DNS-SD
// meta PTR, the address records) but packed without name compression.
func txtBudget(instance, host string, addrs []netip.Addr) int {
	const (
		ipUDP   = 40 + 8 // IPv6 header, UDP header
		header  = 12
		rrFixed = 10                                // type, class, TTL, rdlength
		service = 1 + 7 + 1 + 4 + 1 + 5 + 1         // _nearby._tcp.local.
		meta    = 1 + 9 + 1 + 7 + 1 + 4 + 1 + 5 + 1 // _services._dns-sd._udp.local.
	)
	inst := 1 + len(instance) + service
	hostName := 1 + len(host) + 1 + 5 + 1
	n := ipUDP + header
	n += inst + rrFixed + 6 + hostName // SRV
	n += inst + rrFixed                // TXT, without its strings
	n += service + rrFixed + inst      // PTR
	n += meta + rrFixed + service      // meta PTR
	for _, a := range addrs {
		n += hostName + rrFixed + len(a.AsSlice())
	}
	return min(MaxTXTBytes, FrameBytes-n)
}

// browseFamilies is the order of IP families the continuous browse tries:
// one family, not both. A grandcat responder answers a query on both
// families, and its answers carry A and AAAA records alike, so a query on
// one family learns as much as on both; a query on both makes every
// responder answer twice and every node hear twice as many packets (a
// browse costs each of n nodes about 2n² packets to parse). IPv4 when we
// have an IPv4 address, IPv6 otherwise; the other one if that fails.
func (n netState) browseFamilies() []zeroconf.IPType {
	for _, a := range n.addrs {
		if a.Is4() {
			return []zeroconf.IPType{zeroconf.IPv4, zeroconf.IPv6}
		}
	}
	return []zeroconf.IPType{zeroconf.IPv6, zeroconf.IPv4}
}
