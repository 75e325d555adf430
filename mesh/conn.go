package mesh

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
)

// yamux v0.1.2 frame header layout (see its spec.md): version u8, type u8,
// flags u16, stream id u32, length u32.
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
	// coalesceMax is the largest body that is copied to travel in one TLS
	// record write with its header; larger bodies are written separately.
	coalesceMax = 32 << 10
	// tlsRecordMax is the plaintext size of a full TLS record.
	tlsRecordMax = 16 << 10
)

var coalescePool = sync.Pool{New: func() any {
	b := make([]byte, 0, yamuxHeaderLen+coalesceMax)
	return &b
}}

// sessConn is the connection yamux runs on: the TLS connection, plus two
// things. It counts reads, which is how the keepalive knows a peer is alive
// even when the peer is too busy to answer pings. And it joins each yamux
// data header to the body that follows it: yamux v0.1.2's send loop writes a
// data frame as two Writes (header, then body), which over TLS costs two
// records and two system calls per message. A data header with a non-zero
// length is always followed at once by its body in that loop, so holding the
// 12 bytes back until the next Write never delays anything; every other
// write goes straight through, and byte order is unchanged. Only the yamux
// send loop writes, so Write needs no lock.
type sessConn struct {
	net.Conn
	reads   atomic.Uint64
	held    [yamuxHeaderLen]byte
	holding bool
}

func (c *sessConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

func (c *sessConn) Write(b []byte) (int, error) {
	if c.holding {
		c.holding = false
		// Header plus the body (a small one) or the body's first full TLS
		// record (a large one) go out in one write.
		k := len(b)
		if k > coalesceMax {
			k = tlsRecordMax - yamuxHeaderLen
		}
		bp := coalescePool.Get().(*[]byte)
		buf := append(append((*bp)[:0], c.held[:]...), b[:k]...)
		_, err := c.Conn.Write(buf)
		*bp = buf[:0]
		coalescePool.Put(bp)
		if err != nil {
			return 0, err
		}
		if k == len(b) {
			return len(b), nil
		}
		n, err := c.Conn.Write(b[k:])
		return k + n, err
	}
	if len(b) == yamuxHeaderLen && b[1] == yamuxTypeData && binary.BigEndian.Uint32(b[8:]) > 0 {
		copy(c.held[:], b)
		c.holding = true
		return len(b), nil
	}
	return c.Conn.Write(b)
}
