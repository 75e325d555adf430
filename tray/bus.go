package tray

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"
)

// EnvSessionBus is the variable that holds the desktop session bus address.
const EnvSessionBus = "DBUS_SESSION_BUS_ADDRESS"

// Errors about the session bus.
var (
	// ErrNoSessionBus means there is no desktop session bus to show an
	// icon on: the tray cannot run (fyne.io/systray would block forever).
	ErrNoSessionBus = errors.New("tray: no desktop session bus")
	// ErrBadBusAddress means a D-Bus address could not be parsed.
	ErrBadBusAddress = errors.New("tray: bad D-Bus address")
)

// BusAddress is one entry of a D-Bus server address list, such as
// "unix:path=/run/user/1000/bus" (see the D-Bus specification, "Server
// Addresses"). Values are stored unescaped.
type BusAddress struct {
	Transport string
	Params    map[string]string
}

// ParseBusAddresses parses a D-Bus address list: entries separated by
// ";", each "transport:key=value,key=value" with values %-escaped.
func ParseBusAddresses(s string) ([]BusAddress, error) {
	var out []BusAddress
	for _, entry := range strings.Split(s, ";") {
		if entry == "" {
			continue
		}
		a, err := parseBusAddress(entry)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q is empty", ErrBadBusAddress, s)
	}
	return out, nil
}

func parseBusAddress(entry string) (BusAddress, error) {
	tr, rest, ok := strings.Cut(entry, ":")
	if !ok || tr == "" {
		return BusAddress{}, fmt.Errorf("%w: %q has no transport (want e.g. unix:path=/run/user/1000/bus)", ErrBadBusAddress, entry)
	}
	a := BusAddress{Transport: tr, Params: map[string]string{}}
	if rest == "" {
		return a, nil
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return BusAddress{}, fmt.Errorf("%w: %q: want key=value, got %q", ErrBadBusAddress, entry, kv)
		}
		if _, dup := a.Params[k]; dup {
			return BusAddress{}, fmt.Errorf("%w: %q: key %q given twice", ErrBadBusAddress, entry, k)
		}
		uv, err := unescapeBusValue(v)
		if err != nil {
			return BusAddress{}, fmt.Errorf("%w: %q: %v", ErrBadBusAddress, entry, err)
		}
		a.Params[k] = uv
	}
	return a, nil
}

func unescapeBusValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+2 >= len(v) || unhex(v[i+1]) < 0 || unhex(v[i+2]) < 0 {
			return "", fmt.Errorf("bad escape at %q", v[i:])
		}
		b.WriteByte(byte(unhex(v[i+1])<<4 | unhex(v[i+2])))
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// optionallyEscaped reports whether c may appear unescaped in a value.
func optionallyEscaped(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		strings.IndexByte("-_/.\\*", c) >= 0
}

// String formats the address, keys sorted and values escaped, so that
// ParseBusAddresses(a.String()) gives a back.
func (a BusAddress) String() string {
	keys := make([]string, 0, len(a.Params))
	for k := range a.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(a.Transport)
	b.WriteByte(':')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		v := a.Params[k]
		for j := 0; j < len(v); j++ {
			if optionallyEscaped(v[j]) {
				b.WriteByte(v[j])
			} else {
				fmt.Fprintf(&b, "%%%02x", v[j])
			}
		}
	}
	return b.String()
}

// Dial returns the network and address to connect to, or ok false for
// transports and forms that cannot be connected to (listen-only forms such
// as unix:tmpdir=, and autolaunch:, which the tray never uses: it would
// start a bus nobody looks at).
func (a BusAddress) Dial() (network, address string, ok bool) {
	switch a.Transport {
	case "unix":
		if p := a.Params["path"]; p != "" {
			return "unix", p, true
		}
		if p := a.Params["abstract"]; p != "" {
			return "unix", "@" + p, true
		}
	case "tcp":
		if h, p := a.Params["host"], a.Params["port"]; h != "" && p != "" {
			return "tcp", net.JoinHostPort(h, p), true
		}
	}
	return "", "", false
}

// SessionBus returns the desktop session bus address from
// DBUS_SESSION_BUS_ADDRESS once one of its endpoints accepts a
// connection. Otherwise it returns an error wrapping ErrNoSessionBus that
// says why. It never starts a bus.
func SessionBus(ctx context.Context) (string, error) {
	addr := os.Getenv(EnvSessionBus)
	if addr == "" {
		return "", fmt.Errorf("%w: %s is not set (no desktop session)", ErrNoSessionBus, EnvSessionBus)
	}
	if err := CheckBus(ctx, addr); err != nil {
		return "", err
	}
	return addr, nil
}

// CheckBus returns nil when an endpoint of the D-Bus address list addr
// accepts a connection (each is tried for at most a second).
func CheckBus(ctx context.Context, addr string) error {
	as, err := ParseBusAddresses(addr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoSessionBus, err)
	}
	var why []string
	for _, a := range as {
		network, target, ok := a.Dial()
		if !ok {
			why = append(why, a.Transport+": not a transport the tray connects to")
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		var d net.Dialer
		c, err := d.DialContext(dctx, network, target)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		why = append(why, err.Error())
	}
	return fmt.Errorf("%w: cannot reach %s: %s", ErrNoSessionBus, addr, strings.Join(why, "; "))
}
