// Package netlab builds virtual LANs of hosts out of Linux network namespaces,
// for end-to-end tests and for `nearby demo`.
//
// A LAN is one bridge namespace and N host namespaces:
//
//	nb<rid>-br   bridge nbr0 (stp off, forward_delay 0, multicast snooping off)
//	             ports nbv<rid>h1 ... nbv<rid>hN, nftables "table bridge nb"
//	nb<rid>-h1   lo, lan0 = 10.77.0.1/16 and fd00:6e62::1/64, hostname "h1"
//	...
//	nb<rid>-hN   lo, lan0 = 10.77.0.N/16 and fd00:6e62::N/64, hostname "hN"
//
// rid is a random run id, so LANs of parallel tests and packages never
// collide. Host i (0-based, as in LAN.Host(i)) is named "h<i+1>" and gets the
// (i+1)-th address of each prefix. Inside a host, IPv4 and IPv6 multicast
// (224.0.0.251, ff02::fb) reach every other host; DAD is off so addresses work
// at once. Interface names are limited to the prefixes that
// internal/netsafe accepts: lo, lan*, nbv*, nbr*.
//
// Programs run on a host through Host.Command, Host.Start (long-running, with
// captured output) or Host.Run (to completion). Each runs in the host's
// network namespace and in its own UTS namespace whose hostname is the
// host's Name, with NEARBY_REQUIRE_ISOLATION=1 in its environment. The PID of
// a started command is the PID of the program itself. Children get
// SIGKILL if the process that started them dies (Pdeathsig).
//
// Faults are applied to a host's link: Cut (silent drop both ways, carrier
// stays up), Unplug (the host sees NO-CARRIER), Loss (random drop both ways),
// Rate (token bucket both ways) and Heal (undo all of them). There is no
// delay or reordering: the kernels this runs on have no sch_netem.
//
// Close stops every process the LAN started (SIGTERM, then SIGKILL), kills
// anything else still running inside its namespaces, and deletes the
// namespaces. New wraps Create for tests: it skips when the harness cannot
// run here (fails instead when CI=true) and closes the LAN in t.Cleanup.
//
// Everything needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), iproute2 (ip,
// tc), nftables (nft) and util-linux (unshare). The package never changes
// the namespace it is called from: it works inside scripts/isolated.sh and in
// the root namespace alike. See docs/TESTING.md.
package netlab
