// Package discovery advertises a Nearby node over multicast DNS / DNS-SD and
// browses for the others, using github.com/grandcat/zeroconf v1.0.0.
//
// Discovery only produces hints: "a node with this id says it listens on
// these addresses and this port, and holds this catalog". It is never the
// source of truth for liveness (the mesh connects, proves the mesh key and
// keeps the peer table) and it never reports removals.
//
// # Wire format
//
// Each node registers one DNS-SD service:
//
//	service   _nearby._tcp   domain local.
//	instance  NAME-ID8       InstanceName: [a-z0-9-], no dots, at most 63 bytes
//	host      NAME-ID8.local.
//	port      the mesh port (SRV)
//	A/AAAA    the addresses of the chosen interfaces (see below)
//	TXT       v=1  id=<node id, 32 hex>  n=<display name>  m=<mesh id, 16 hex>
//	          d=<catalog digest>  s=<name>@<version> ...  [more=<k>]
//
// Every TXT string is at most 255 bytes and the whole TXT at most 1300 bytes;
// a Service lowers that budget so that every message it sends fits in one
// 1500-byte frame with IPv6 and UDP headers. The largest is grandcat's
// goodbye: SRV, TXT, PTR, the DNS-SD meta PTR and the address records,
// packed without name compression. Subservices are listed in the given
// order as long as they fit; more=k counts the ones left out, which peers
// learn from the mesh catalog (d= tells them whether theirs is current).
// Keys are case-insensitive; unknown keys are ignored so that later
// versions can add some. A record with another v= is not ours to read.
//
// Addresses: IPv4 (except loopback) and global or unique-local IPv6 of the
// chosen interfaces; IPv6 link-local only when there is none of those, and
// loopback only when there is nothing else (a test namespace holding only
// lo). Nothing answers A/AAAA queries for the host name, so peers dial the
// addresses that came with the response.
//
// # Behaviour of grandcat/zeroconf v1.0.0 this package works around
//
//   - Register skips loopback addresses and uses os.Hostname: Service always
//     uses RegisterProxy with its own host name and addresses.
//   - RegisterProxy with domain "local." turns host "x.local." into
//     "x.local.local.": the host is passed without the domain.
//   - A browse reports each instance once and never reports removals or TXT
//     changes: Service runs a fresh browse every BrowseInterval, cancelling
//     and draining the previous one (an undrained browse blocks and leaks).
//   - Server.SetText races with the responder goroutines: Update withdraws
//     and registers again instead. The goodbye makes running grandcat
//     browsers forget the instance, so they report the new record at once.
//   - NewResolver fails when either IPv4 or IPv6 cannot be joined: the
//     browser falls back to one family.
//   - Shutdown does not stop the announcement goroutine; it lingers for up to
//     about 3.5 s after a registration, writing to closed sockets.
//
// Every path that multicasts first calls netsafe.CheckIfRequired.
package discovery
