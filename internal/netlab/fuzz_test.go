package netlab

import (
	"strconv"
	"testing"
)

// FuzzParseRate checks that parseRate never panics, accepts only rates in
// range, and that an accepted rate survives the round trip through the
// normalised "<bits>bit" form that is handed to tc.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"1mbit", "500kbit", "2mbps", "1.5gbit", "8kbit", "100gbit", "", "fast", "1e9bit", "-1mbit", " 1MBIT "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bits, err := parseRate(s)
		if err != nil {
			return
		}
		if bits < 8e3 || bits > 100e9 {
			t.Fatalf("parseRate(%q) = %d, out of range", s, bits)
		}
		norm := strconv.FormatUint(bits, 10) + "bit"
		again, err := parseRate(norm)
		if err != nil || again != bits {
			t.Fatalf("round trip %q -> %q -> %d, %v", s, norm, again, err)
		}
	})
}
