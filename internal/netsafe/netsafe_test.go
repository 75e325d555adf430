package netsafe

import "testing"

func TestAllowed(t *testing.T) {
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"lo", true}, {"lan0", true}, {"nbv1a2bh3", true},
		{"eth0", false}, {"wlan0", false}, {"ifb0", false}, {"docker0", false}, {"enp3s0", false},
	} {
		if got := allowed(tt.name); got != tt.want {
			t.Errorf("allowed(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRequiredInTests(t *testing.T) {
	if !Required() {
		t.Fatal("Required() = false inside a test binary")
	}
}

// TestSuiteIsIsolated fails the suite when it runs where a real uplink is
// visible, so that nobody runs the network tests outside `make test`.
func TestSuiteIsIsolated(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}
