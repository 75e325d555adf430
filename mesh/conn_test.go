package mesh

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// recordConn records the boundaries of the writes it gets; a real socket
// cannot show them.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordConn) Write(b []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(b))
	return len(b), nil
}

func yamuxHdr(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderLen)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestSessConnCoalesces(t *testing.T) {
	small := bytes.Repeat([]byte("s"), 100)
	large := bytes.Repeat([]byte("L"), coalesceMax+1)
	steps := [][]byte{
		yamuxHdr(1, 5), // window update: straight through
		yamuxHdr(0, 0), // empty data frame (FIN): straight through
		yamuxHdr(0, uint32(len(small))), small,
		yamuxHdr(0, uint32(len(large))), large,
	}
	rc := &recordConn{}
	c := &sessConn{Conn: rc}
	var want []byte
	for _, s := range steps {
		n, err := c.Write(s)
		if err != nil || n != len(s) {
			t.Fatalf("Write(%d bytes) = %d, %v", len(s), n, err)
		}
		want = append(want, s...)
	}
	if got := bytes.Join(rc.writes, nil); !bytes.Equal(got, want) {
		t.Fatal("byte stream changed")
	}
	sizes := make([]int, len(rc.writes))
	for i, w := range rc.writes {
		sizes[i] = len(w)
	}
	wantSizes := []int{12, 12, 12 + len(small), tlsRecordMax, len(large) - (tlsRecordMax - 12)}
	if len(sizes) != len(wantSizes) {
		t.Fatalf("writes %v, want %v", sizes, wantSizes)
	}
	for i := range sizes {
		if sizes[i] != wantSizes[i] {
			t.Fatalf("writes %v, want %v", sizes, wantSizes)
		}
	}
}
