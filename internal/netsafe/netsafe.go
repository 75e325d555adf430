// Package netsafe keeps tests and harness-run nodes off real networks.
//
// Anything that multicasts (mDNS register or browse) calls CheckIfRequired
// first. Inside a test binary, or in a process started with
// NEARBY_REQUIRE_ISOLATION=1 (the virtual-LAN harness sets it for every node
// it runs), the check fails when the process can see any network interface
// that is not loopback or a harness interface. A production node never sets
// the variable and is not a test binary, so it is unaffected.
package netsafe

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// EnvRequire names the environment variable that turns the check on outside tests.
const EnvRequire = "NEARBY_REQUIRE_ISOLATION"

// HarnessPrefixes are the interface name prefixes the virtual-LAN harness
// uses. Only these and "lo" may be visible where isolation is required.
var HarnessPrefixes = []string{"lan", "nbv", "nbr"}

// Required reports whether this process must prove it is isolated before
// multicasting: it is a test binary, or EnvRequire is "1".
func Required() bool {
	return testing.Testing() || os.Getenv(EnvRequire) == "1"
}

// Check returns an error naming every visible interface that is neither
// loopback nor created by the harness.
func Check() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("netsafe: list interfaces: %w", err)
	}
	var foreign []string
	for _, ifi := range ifs {
		if !allowed(ifi.Name) {
			foreign = append(foreign, ifi.Name)
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("netsafe: refusing to multicast: interface(s) %s are visible and were not created by the test harness; run the tests with `make test` (an isolated network namespace)", strings.Join(foreign, ", "))
	}
	return nil
}

// CheckIfRequired runs Check when Required reports true.
func CheckIfRequired() error {
	if !Required() {
		return nil
	}
	return Check()
}

func allowed(name string) bool {
	if name == "lo" {
		return true
	}
	for _, p := range HarnessPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
