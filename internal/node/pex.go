package node

import (
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/discovery"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/mesh"
)

// Peer exchange. mDNS is lossy (a burst of 30 nodes starting at once drops
// answers in full receive buffers) and stops at the subnet, so when two
// nodes connect each tells the other which nodes it has heard of, with
// their addresses. The receiver dials those it is not connected to; the
// mesh handshake still proves every identity and the mesh key, so a wrong
// or hostile entry costs one failed dial at most.
//
// It travels as an ordinary mesh message to a reserved subservice name that
// no plugin can have (plugin names start with a letter).
const pexSubservice = "_nearby.pex"

// maxPexEntries bounds what one exchange message may make us dial.
const maxPexEntries = 1024

type pexEntry struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Addrs []string `json:"addrs"`
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

// sendPex tells peer about every node we have seen over mDNS.
func (n *Node) sendPex(to mesh.NodeID) {
	var list []pexEntry
	n.seenMu.Lock()
	for _, d := range n.seen {
		if mesh.NodeID(d.ID) == to || len(d.Addrs) == 0 || d.Via != control.ViaMDNS {
			continue
		}
		e := pexEntry{ID: d.ID, Name: d.Name}
		for _, a := range d.Addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				e.Addrs = append(e.Addrs, netip.AddrPortFrom(ip, uint16(d.Port)).String())
			}
		}
		list = append(list, e)
	}
	n.seenMu.Unlock()
	if len(list) == 0 {
		return
	}
	b, err := json.Marshal(list)
	if err != nil {
		return
	}
	if err := n.mesh.Send(to, pexSubservice, b, 0); err != nil {
		n.log.Debug("peer exchange not sent", "peer", to.Short(), "err", err)
	}
}

// onPex dials the nodes a peer told us about.
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
		if _, ok := n.mesh.Peer(id); ok {
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
		n.mesh.AddHint(h)
		n.seenMu.Lock()
		if n.seen[e.ID] == nil {
			now := time.Now()
			d := &control.Discovered{ID: e.ID, Name: e.Name, Via: control.ViaPeer, FirstSeen: now, LastSeen: now}
			for _, ap := range h.Addrs {
				d.Addrs = append(d.Addrs, ap.Addr().String())
				d.Port = int(ap.Port())
			}
			n.seen[e.ID] = d
		}
		n.seenMu.Unlock()
	}
}
