package discovery

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/grandcat/zeroconf"
)

func TestBrowseFamilies(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
		want  []zeroconf.IPType
	}{
		{"dual stack", []netip.Addr{v6, v4}, []zeroconf.IPType{zeroconf.IPv4, zeroconf.IPv6}},
		{"IPv4 only", []netip.Addr{v4}, []zeroconf.IPType{zeroconf.IPv4, zeroconf.IPv6}},
		{"IPv6 only", []netip.Addr{v6}, []zeroconf.IPType{zeroconf.IPv6, zeroconf.IPv4}},
		{"no address", nil, []zeroconf.IPType{zeroconf.IPv6, zeroconf.IPv4}},
	} {
		if got := (netState{addrs: tc.addrs}).browseFamilies(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The IPv6 half (no browse query on IPv6) needs IPv6 multicast, which lo
// lacks: internal/e2e's TestBrowseAsksOnOneFamily checks it on a virtual LAN.
