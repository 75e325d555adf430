package discovery

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nearbymesh/nearby/internal/netsafe"
)

// packet is an mDNS response seen on lo, reduced to what the tests check.
type packet struct {
	size     int    // UDP payload bytes
	instance string // owner of the SRV record, "" if none
	ttl      uint32 // TTL of that SRV record
	ptr      bool   // it has a PTR for the instance
	meta     bool   // it has the _services._dns-sd._udp PTR (an announcement)
	txt      []string
	txtSize  int
}

func (p packet) from(instance string) bool {
	return p.instance == instance+"."+ServiceType+"."+Domain
}

// sniffer listens to IPv4 mDNS on lo, as any other responder would.
type sniffer struct {
	conn *net.UDPConn
	ch   chan packet
	wg   sync.WaitGroup
}

func sniff(t testing.TB) *sniffer {
	t.Helper()
	if err := netsafe.CheckIfRequired(); err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenMulticastUDP("udp4", lo, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
	if err != nil {
		t.Fatal(err)
	}
	s := &sniffer{conn: conn, ch: make(chan packet, 4096)}
	s.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if p, ok := parsePacket(buf[:n]); ok {
				select {
				case s.ch <- p:
				default:
				}
			}
		}
	})
	t.Cleanup(func() {
		conn.Close()
		s.wg.Wait()
	})
	return s
}

func parsePacket(b []byte) (packet, bool) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil || !m.Header.Response {
		return packet{}, false
	}
	p := packet{size: len(b)}
	for _, rr := range append(append(m.Answers, m.Authorities...), m.Additionals...) {
		switch body := rr.Body.(type) {
		case *dnsmessage.SRVResource:
			p.instance, p.ttl = rr.Header.Name.String(), rr.Header.TTL
		case *dnsmessage.PTRResource:
			if strings.HasPrefix(rr.Header.Name.String(), "_services.") {
				p.meta = true
			} else {
				p.ptr = true
			}
		case *dnsmessage.TXTResource:
			p.txt = body.TXT
			p.txtSize = txtSize(body.TXT)
		}
	}
	return p, true
}

// wait returns the first packet satisfying ok, or fails after d.
func (s *sniffer) wait(t testing.TB, d time.Duration, ok func(packet) bool) packet {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-s.ch:
			if ok(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("no matching mDNS packet within %v", d)
			return packet{}
		}
	}
}
