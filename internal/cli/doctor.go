package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/tray"
)

// check is one finding of `nearby doctor`.
type check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, warn, fail
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func init() {
	register(&command{
		name: "doctor", short: "check what usually breaks LAN discovery and the mesh, and say what to do",
		long: `
Checks, without sending anything on the network: interfaces that can
multicast, a route for multicast (224.0.0.0/4), a firewall dropping mDNS
(UDP 5353) or the mesh port, inotify limits (the dist folder watch), a
session bus for the tray, whether a node runs for this state directory and
how far its peers' clocks are from ours.

Exit status 0 when nothing failed (warnings allowed), 1 otherwise.

Examples:
  nearby doctor
  nearby doctor --json | jq '.[] | select(.status != "ok")'
`,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			checks := doctor(ctx, env)
			failed := false
			for _, c := range checks {
				failed = failed || c.Status == "fail"
			}
			if env.JSON {
				env.PrintJSON(checks)
			} else {
				tw := env.Table()
				for _, c := range checks {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(c.Status), c.Name, c.Detail)
					if c.Fix != "" && c.Status != "ok" {
						fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
					}
				}
				tw.Flush()
			}
			if failed {
				return errors.New("some checks failed (see above)")
			}
			return nil
		},
	})
}

func doctor(ctx context.Context, env *Env) []check {
	var out []check
	ifaces := multicastInterfaces()
	if len(ifaces) == 0 {
		out = append(out, check{Name: "multicast interface", Status: "fail",
			Detail: "no interface is up, multicast-capable and addressed (besides loopback)",
			Fix:    "connect to the LAN; for a test namespace: ip link set lo multicast on"})
	} else {
		out = append(out, check{Name: "multicast interface", Status: "ok", Detail: strings.Join(ifaces, ", ")})
	}
	out = append(out, multicastRoute())
	var st control.Status
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	nodeErr := env.Client().Get(cctx, "/v1/status", &st)
	port := 0
	if nodeErr != nil {
		out = append(out, check{Name: "node", Status: "warn", Detail: "no node runs for " + env.State, Fix: "nearby up"})
	} else {
		_, p, _ := net.SplitHostPort(st.Listen)
		port, _ = strconv.Atoi(p)
		out = append(out, check{Name: "node", Status: "ok", Detail: fmt.Sprintf("%s (%s), mesh port %d, %d peers", st.Node.Name, st.Node.ID[:8], port, st.Peers)})
	}
	out = append(out, firewall(port))
	out = append(out, inotifyLimits()...)
	out = append(out, sessionBus(ctx))
	if nodeErr == nil {
		out = append(out, clockSkew(cctx, env))
	}
	return out
}

func multicastInterfaces() []string {
	ifs, _ := net.Interfaces()
	var names []string
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		if addrs, _ := ifi.Addrs(); len(addrs) > 0 {
			names = append(names, ifi.Name)
		}
	}
	return names
}

// multicastRoute looks for a route that 224.0.0.251 would take: a
// 224.0.0.0/4 route or a default route (from /proc/net/route).
func multicastRoute() check {
	c := check{Name: "multicast route"}
	f, err := os.Open("/proc/net/route")
	if err != nil {
		c.Status, c.Detail = "warn", "cannot read /proc/net/route: "+err.Error()
		return c
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	var via []string
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 {
			continue
		}
		dest, mask := fl[1], fl[7]
		if (dest == "000000E0" && mask == "000000F0") || (dest == "00000000" && mask == "00000000") {
			via = append(via, fl[0])
		}
	}
	if len(via) == 0 {
		c.Status, c.Detail = "fail", "no route for 224.0.0.251 (mDNS): neither 224.0.0.0/4 nor a default route"
		c.Fix = "ip route add 224.0.0.0/4 dev IFACE (IFACE = your LAN interface)"
		return c
	}
	c.Status, c.Detail = "ok", "mDNS goes out via "+strings.Join(via, ", ")
	return c
}

// firewall reads the nftables ruleset (when nft is installed and we may)
// and warns about input chains that drop by default without a visible
// accept for mDNS or the mesh port.
func firewall(port int) check {
	c := check{Name: "firewall"}
	nft, err := exec.LookPath("nft")
	if err != nil {
		c.Status, c.Detail = "ok", "nft not installed; no nftables ruleset to check"
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, nft, "list", "ruleset").Output()
	if err != nil {
		c.Status, c.Detail = "warn", "cannot read the nftables ruleset (run as root to check): "+err.Error()
		return c
	}
	rules := string(b)
	if !strings.Contains(rules, "hook input") || !strings.Contains(rules, "policy drop") {
		c.Status, c.Detail = "ok", "no input chain drops by default"
		return c
	}
	var missing []string
	if !strings.Contains(rules, "5353") {
		missing = append(missing, "udp 5353 (mDNS)")
	}
	if port != 0 && !strings.Contains(rules, strconv.Itoa(port)) {
		missing = append(missing, fmt.Sprintf("tcp %d (mesh)", port))
	}
	if len(missing) == 0 {
		c.Status, c.Detail = "ok", "input policy is drop, with rules for mDNS and the mesh port"
		return c
	}
	c.Status = "warn"
	c.Detail = "an input chain drops by default and has no rule mentioning " + strings.Join(missing, ", ")
	c.Fix = fmt.Sprintf("allow them, e.g. nft add rule inet filter input udp dport 5353 accept; nft add rule inet filter input tcp dport %d accept (and start the node with a fixed --listen port)", port)
	return c
}

func inotifyLimits() []check {
	var out []check
	for _, l := range []struct {
		file string
		min  int
		fix  string
	}{
		{"max_user_instances", 128, "sysctl fs.inotify.max_user_instances=512"},
		{"max_user_watches", 8192, "sysctl fs.inotify.max_user_watches=65536"},
	} {
		c := check{Name: "inotify " + l.file}
		b, err := os.ReadFile("/proc/sys/fs/inotify/" + l.file)
		if err != nil {
			c.Status, c.Detail = "warn", err.Error()
			out = append(out, c)
			continue
		}
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if v < l.min {
			c.Status, c.Detail, c.Fix = "warn", fmt.Sprintf("%d is low: the dist folder watch may fail", v), l.fix
		} else {
			c.Status, c.Detail = "ok", strconv.Itoa(v)
		}
		out = append(out, c)
	}
	return out
}

func sessionBus(ctx context.Context) check {
	c := check{Name: "tray (session bus)"}
	addr, err := tray.SessionBus(ctx)
	if err != nil {
		c.Status, c.Detail = "warn", err.Error()+": the node runs without a tray icon"
		c.Fix = "run nearby up from a desktop session (or run `nearby tray` from the session's autostart)"
		return c
	}
	c.Status, c.Detail = "ok", addr
	return c
}

func clockSkew(ctx context.Context, env *Env) check {
	c := check{Name: "clock skew"}
	var ps []control.PeerClock
	if err := env.Client().Get(ctx, "/v1/clock", &ps); err != nil {
		c.Status, c.Detail = "warn", "cannot ask the node: "+err.Error()
		return c
	}
	if len(ps) == 0 {
		c.Status, c.Detail = "ok", "no peers to compare with"
		return c
	}
	var bad []string
	worst := 0.0
	for _, p := range ps {
		if p.Error != "" {
			continue
		}
		off := p.OffsetSeconds
		if off < 0 {
			off = -off
		}
		worst = max(worst, off)
		if off > 5 {
			bad = append(bad, fmt.Sprintf("%s %+.0fs", p.Name, p.OffsetSeconds))
		}
	}
	if len(bad) > 0 {
		c.Status, c.Detail = "warn", "peers whose clocks differ from ours: "+strings.Join(bad, ", ")
		c.Fix = "run NTP (systemd-timesyncd or chrony) on every machine; TLS certificates and logs need sane clocks"
		return c
	}
	c.Status, c.Detail = "ok", fmt.Sprintf("%d peers within %.0fs of our clock", len(ps), worst)
	return c
}
