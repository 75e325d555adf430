package node

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/discovery"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/mesh"
)

// Peer exchange. mDNS is lossy (a burst of 30 nodes starting at once drops
// answers in full receive buffers) and stops at the subnet, so when two
// nodes connect each tells the other which nodes it knows, with their
// addresses: those it saw over mDNS, those it is connected to (where they
// listen), and those other peers told it about. The receiver dials those it
// is not connected to; the mesh handshake still proves every identity and
// the mesh key, so a wrong or hostile entry costs one failed dial at most.
//
// That is enough for a full mesh across subnets: every new connection
// carries each side's whole knowledge both ways, so a node that learns of
// another connects to it and tells it all it knows. One static peer between
// two subnets, or a chain of static peers, ends as a full mesh
// (TestStaticChainBecomesFullMesh). News is not pushed to peers already
// connected, except a node's first mDNS sighting (gossipHint), which repairs
// what mDNS loses on one LAN.
//
// It travels as an ordinary mesh message to a reserved subservice name that
// no plugin can have (plugin names start with a letter).
const pexSubservice = "_nearby.pex"

// maxPexEntries bounds what one exchange message may make us dial.
const maxPexEntries = 1024

// maxPexHops bounds how far news of a node travels from connection to
// connection: a chain of that many static peers still ends as a full mesh.
const maxPexHops = 8

type pexEntry struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Addrs []string `json:"addrs"`
	// Port is set on the sender's own entry (ID is the sender) only: its
	// mesh port, which the receiver reaches at the address the connection
	// comes from (the connection's own port is ephemeral when it dialled).
	Port int `json:"port,omitempty"`
	// Hops is how many peers the news went through before the sender: 0
	// when the sender saw the node itself (mDNS, or connected to it).
	Hops int `json:"hops,omitempty"`
}

// isReserved reports whether a subservice name belongs to the node itself.
func isReserved(sub string) bool { return strings.HasPrefix(sub, "_") }

// gossipHint tells every peer about a node we have just seen over mDNS for
// the first time, so that a sighting lost by some nodes (mDNS drops answers
// in bursts) reaches them through the mesh.
func (n *Node) gossipHint(h discovery.Hint) {
	e := pexEntry{ID: h.Record.NodeID, Name: h.Record.Name}
	for _, ap := range h.AddrPorts() {
		e.Addrs = append(e.Addrs, ap.String())
	}
	if b, err := json.Marshal([]pexEntry{e}); err == nil {
		n.mesh.Broadcast(pexSubservice, b)
	}
}

// selfEntry is this node's own entry: its mesh port.
func (n *Node) selfEntry() pexEntry {
	e := pexEntry{ID: string(n.id.ID), Name: n.cfg.Name}
	if a, ok := n.mesh.Addr().(*net.TCPAddr); ok {
		e.Port = a.Port
	}
	return e
}

// sendPex tells peer about every node we know and can give an address for.
func (n *Node) sendPex(to mesh.NodeID) {
	list := []pexEntry{n.selfEntry()}
	listed := map[string]bool{string(to): true, string(n.id.ID): true}
	n.seenMu.Lock()
	for _, d := range n.seen {
		if listed[d.ID] || len(d.Addrs) == 0 || (d.Via != control.ViaMDNS && d.Hops >= maxPexHops) {
			continue
		}
		e := pexEntry{ID: d.ID, Name: d.Name}
		if d.Via != control.ViaMDNS {
			e.Hops = d.Hops
		}
		for _, a := range d.Addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				e.Addrs = append(e.Addrs, netip.AddrPortFrom(ip, uint16(d.Port)).String())
			}
		}
		listed[d.ID] = true
		list = append(list, e)
	}
	for id, ap := range n.peerAddr {
		if listed[string(id)] {
			continue
		}
		if name, ok := n.mesh.PeerName(id); ok {
			list = append(list, pexEntry{ID: string(id), Name: name, Addrs: []string{ap.String()}})
		}
	}
	n.seenMu.Unlock()
	if len(list) > maxPexEntries {
		list = list[:maxPexEntries]
	}
	b, err := json.Marshal(list)
	if err != nil {
		return
	}
	if err := n.mesh.Send(to, pexSubservice, b, 0); err != nil {
		n.log.Debug("peer exchange not sent", "peer", to.Short(), "err", err)
	}
}

// pexPeerUp notes the address of a peer we dialled (a peer that dialled us
// sends its port in its own entry).
func (n *Node) pexPeerUp(id mesh.NodeID) {
	p, ok := n.mesh.Peer(id)
	if !ok || !p.Dialed {
		return
	}
	ap, err := netip.ParseAddrPort(p.Addr)
	if err != nil {
		return
	}
	n.notePeerAddr(id, ap)
}

// notePeerAddr records where a connected peer listens.
func (n *Node) notePeerAddr(id mesh.NodeID, ap netip.AddrPort) {
	n.seenMu.Lock()
	n.peerAddr[id] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	n.seenMu.Unlock()
}

// onPex dials the nodes a peer told us about and remembers them.
func (n *Node) onPex(from mesh.NodeID, payload []byte) {
	var list []pexEntry
	if err := json.Unmarshal(payload, &list); err != nil || len(list) > maxPexEntries {
		n.log.Debug("bad peer exchange message", "peer", from.Short(), "entries", len(list), "err", err)
		return
	}
	for _, e := range list {
		id := mesh.NodeID(e.ID)
		if !id.Valid() || id == n.id.ID {
			continue
		}
		if id == from {
			// The sender's own entry: where it listens.
			p, ok := n.mesh.Peer(from)
			if !ok || e.Port <= 0 || e.Port > 65535 {
				continue
			}
			ra, err := netip.ParseAddrPort(p.Addr)
			if err != nil {
				continue
			}
			n.notePeerAddr(from, netip.AddrPortFrom(ra.Addr(), uint16(e.Port)))
			continue
		}
		hops := e.Hops + 1
		if e.Hops < 0 || hops > maxPexHops {
			continue
		}
		h := mesh.Hint{ID: id, Name: e.Name}
		for _, a := range e.Addrs {
			if ap, err := netip.ParseAddrPort(a); err == nil && len(h.Addrs) < 8 {
				h.Addrs = append(h.Addrs, ap)
			}
		}
		if len(h.Addrs) == 0 {
			continue
		}
		if _, connected := n.mesh.PeerName(id); !connected {
			n.mesh.AddHint(h)
		}
		n.seenMu.Lock()
		if n.seen[e.ID] == nil {
			now := time.Now()
			d := &control.Discovered{ID: e.ID, Name: e.Name, Via: control.ViaPeer, FirstSeen: now, LastSeen: now, Hops: hops}
			for _, ap := range h.Addrs {
				d.Addrs = append(d.Addrs, ap.Addr().String())
				d.Port = int(ap.Port())
			}
			n.seen[e.ID] = d
		}
		n.seenMu.Unlock()
	}
}
