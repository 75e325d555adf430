package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf []byte
	buf = appendMsg(buf, flagBroadcast, 7, "chat", []byte("hello"))
	buf = appendNack(buf, nackFrame{id: 9, sub: "chat", reason: strings.Repeat("r", 2000)})
	buf = appendToken(buf, framePing, 1234)
	buf = appendError(buf, codeWrongMesh, "nope")
	buf = appendFrame(buf, frameBye, nil)
	cat := Catalog{Entries: []CatalogEntry{{Name: "a", Version: "1.0.0", Size: -1}}}
	buf = appendFrame(buf, frameCatalog, encodeCatalog(cat))
	h := hello{version: 1, id: NodeID(strings.Repeat("0f", 16)), meshID: [8]byte{1}, maxPayload: 99, name: "n", proof: [32]byte{2}}
	buf, err := appendHello(buf, h)
	if err != nil {
		t.Fatal(err)
	}

	r := bytes.NewReader(buf)
	var hdr [frameHeaderLen]byte
	next := func(want byte) []byte {
		t.Helper()
		typ, body, err := readFrame(r, &hdr, 1<<20)
		if err != nil || typ != want {
			t.Fatalf("got type %#x, %v; want %#x", typ, err, want)
		}
		return body
	}
	if m, err := decodeMsg(next(frameMsg)); err != nil || m.flags != flagBroadcast || m.id != 7 || m.sub != "chat" || string(m.payload) != "hello" {
		t.Errorf("msg %+v %v", m, err)
	}
	if n, err := decodeNack(next(frameNack)); err != nil || n.id != 9 || len(n.reason) != maxReasonLen {
		t.Errorf("nack %+v %v", n, err)
	}
	next(framePing)
	if e, err := decodeError(next(frameError)); err != nil || e.code != codeWrongMesh || e.reason != "nope" || !errors.Is(e, ErrWrongMesh) {
		t.Errorf("error %+v %v", e, err)
	}
	next(frameBye)
	if c, err := decodeCatalog(next(frameCatalog)); err != nil || !c.Equal(cat) {
		t.Errorf("catalog %+v %v", c, err)
	}
	if got, err := decodeHello(next(frameHello)); err != nil || got != h {
		t.Errorf("hello %+v %v", got, err)
	}
	if _, _, err := readFrame(r, &hdr, 1<<20); err != io.EOF {
		t.Errorf("at end: %v", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{frameMsg, 0}, io.ErrUnexpectedEOF},
		{"short body", append(appendFrameHeader(nil, frameMsg, 20), 1, 2), io.ErrUnexpectedEOF},
		{"no body", appendFrameHeader(nil, frameMsg, 20), io.ErrUnexpectedEOF},
		{"unknown type", appendFrame(nil, 0x7f, nil), ErrProtocol},
		{"oversized message", appendFrameHeader(nil, frameMsg, maxMsgOverhead+1001), ErrFrameTooLarge},
		{"oversized extension", appendFrameHeader(nil, 0xff, maxExtBody+1), ErrFrameTooLarge},
		{"body on ok", appendFrame(nil, frameOK, []byte{1}), ErrFrameTooLarge},
		{"short ping", appendFrame(nil, framePing, []byte{1, 2}), ErrProtocol},
		{"huge length", []byte{frameCatalog, 0xff, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr [frameHeaderLen]byte
			_, _, err := readFrame(bytes.NewReader(tt.in), &hdr, 1000)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeHelloErrors(t *testing.T) {
	h := hello{version: 1, id: NodeID(strings.Repeat("0f", 16)), name: "abc"}
	good, _ := appendHello(nil, h)
	body := good[frameHeaderLen:]
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad magic", append([]byte("XRBY"), body[4:]...), ErrProtocol},
		{"version 0", append(append([]byte{}, body[:4]...), 0, 0), ErrVersion},
		{"truncated", body[:20], ErrProtocol},
		{"name overrun", body[:len(body)-1], ErrProtocol},
	}
	for _, tt := range tests {
		if _, err := decodeHello(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// A later version may append fields.
	later := append(append([]byte{}, body...), "future"...)
	later[5] = 2
	if got, err := decodeHello(later); err != nil || got.version != 2 || got.name != "abc" {
		t.Errorf("later version: %+v %v", got, err)
	}
	if _, err := appendHello(nil, hello{id: "xyz"}); err == nil {
		t.Error("bad id encoded")
	}
}

// FuzzReadFrame reads frames from arbitrary bytes. Every frame read must
// re-encode to exactly the bytes consumed, and every body that decodes must
// re-encode to itself (hello: decode to the same value).
func FuzzReadFrame(f *testing.F) {
	seed := appendMsg(nil, 1, 2, "chat", []byte("hi"))
	seed = appendToken(seed, framePong, 5)
	f.Add(seed)
	f.Add(appendNack(nil, nackFrame{id: 1, sub: "s", reason: "r"}))
	f.Add(appendFrame(nil, frameCatalog, encodeCatalog(Catalog{Entries: []CatalogEntry{{Name: "x", Size: 3}}})))
	hb, _ := appendHello(nil, hello{version: 1, id: NodeID(strings.Repeat("ab", 16)), name: "n"})
	f.Add(hb)
	f.Add(appendError(nil, codeVersion, "old"))
	f.Add([]byte{0x90, 0, 0, 0, 1, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var hdr [frameHeaderLen]byte
		for {
			start := len(data) - r.Len()
			typ, body, err := readFrame(r, &hdr, 1<<16)
			if err != nil {
				return
			}
			consumed := data[start : len(data)-r.Len()]
			if enc := appendFrame(nil, typ, body); !bytes.Equal(enc, consumed) {
				t.Fatalf("frame re-encodes to %x, read %x", enc, consumed)
			}
			checkBody(t, typ, body)
		}
	})
}

func checkBody(t *testing.T, typ byte, body []byte) {
	switch typ {
	case frameMsg:
		if m, err := decodeMsg(body); err == nil {
			enc := appendMsg(nil, m.flags, m.id, m.sub, m.payload)
			if !bytes.Equal(enc[frameHeaderLen:], body) {
				t.Fatalf("msg re-encodes to %x, was %x", enc, body)
			}
		}
	case frameNack:
		if n, err := decodeNack(body); err == nil {
			enc := appendNack(nil, n)
			if !bytes.Equal(enc[frameHeaderLen:], body) {
				t.Fatalf("nack re-encodes to %x, was %x", enc, body)
			}
		}
	case frameCatalog:
		if c, err := decodeCatalog(body); err == nil {
			if enc := encodeCatalog(c); !bytes.Equal(enc, body) {
				t.Fatalf("catalog re-encodes to %x, was %x", enc, body)
			}
		}
	case frameError:
		if e, err := decodeError(body); err == nil {
			enc := appendError(nil, e.code, e.reason)
			if !bytes.Equal(enc[frameHeaderLen:], body) {
				t.Fatalf("error re-encodes to %x, was %x", enc, body)
			}
		}
	case frameHello:
		if h, err := decodeHello(body); err == nil {
			enc, err := appendHello(nil, h)
			if err != nil {
				t.Fatal(err)
			}
			h2, err := decodeHello(enc[frameHeaderLen:])
			if err != nil || h2 != h {
				t.Fatalf("hello %+v re-decodes to %+v, %v", h, h2, err)
			}
		}
	}
}

// FuzzDecodeCatalog feeds arbitrary catalog bodies: a body that decodes must
// re-encode to itself, and the digest must not depend on entry order.
func FuzzDecodeCatalog(f *testing.F) {
	f.Add(encodeCatalog(Catalog{}))
	f.Add(encodeCatalog(Catalog{Entries: []CatalogEntry{
		{Name: "chat", Version: "1.2.0", SHA256: "00ff", Size: 1 << 40, Mode: "hosted", Signer: "k", Description: "d", Label: "l"},
		{Name: "draw", Version: "0.0.1"},
	}}))
	f.Add([]byte{0, 0, 0, 1, 1, 'a'})
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := decodeCatalog(body)
		if err != nil {
			return
		}
		if enc := encodeCatalog(c); !bytes.Equal(enc, body) {
			t.Fatalf("re-encodes to %x, was %x", enc, body)
		}
		rev := c.Clone()
		for i, j := 0, len(rev.Entries)-1; i < j; i, j = i+1, j-1 {
			rev.Entries[i], rev.Entries[j] = rev.Entries[j], rev.Entries[i]
		}
		if c.Digest() != rev.Digest() {
			t.Fatal("digest depends on order")
		}
		if n, dropped := c.Normalize(); dropped != 0 || !n.Equal(c) {
			t.Fatalf("a decoded catalog is not normal: dropped %d", dropped)
		}
	})
}

// FuzzParseStreamAddr: whatever parses must print back to an address that
// parses to the same node and service.
func FuzzParseStreamAddr(f *testing.F) {
	f.Add(strings.Repeat("ab", 16) + ".http:80")
	f.Add(strings.Repeat("ab", 16) + ".a.b")
	f.Add("[::1]:80")
	f.Fuzz(func(t *testing.T, addr string) {
		id, svc, err := ParseStreamAddr(addr)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v is not ErrBadAddress", err)
			}
			return
		}
		id2, svc2, err := ParseStreamAddr(StreamHost(id, svc) + ":0")
		if err != nil || id2 != id || svc2 != svc {
			t.Fatalf("%q -> %q %q -> %q %q %v", addr, id, svc, id2, svc2, err)
		}
	})
}

// TestWireExamples keeps the examples in docs/WIRE.md true.
func TestWireExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/WIRE.md")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		hex  string
		enc  []byte
	}{
		{"msg", "10 00 00 00 10 00 00 00 00 00 00 00 00 07 04 63 68 61 74 68 69", appendMsg(nil, 0, 7, "chat", []byte("hi"))},
		{"ping", "13 00 00 00 08 00 00 00 00 00 00 00 01", appendToken(nil, framePing, 1)},
		{"error", "03 00 00 00 0f 02 64 69 66 66 65 72 65 6e 74 20 6d 65 73 68", appendError(nil, codeWrongMesh, "different mesh")},
	}
	// The document's examples, stripped of comments and line breaks.
	var dumps []string
	for _, block := range strings.Split(string(doc), "```")[1:] {
		var hexes []string
		for _, line := range strings.Split(block, "\n") {
			for _, f := range strings.Fields(line) {
				if len(f) != 2 || strings.Trim(f, "0123456789abcdef") != "" {
					break
				}
				hexes = append(hexes, f)
			}
		}
		if len(hexes) > 0 {
			dumps = append(dumps, strings.Join(hexes, " "))
		}
	}
	for _, tt := range tests {
		if got := fmt.Sprintf("% x", tt.enc); got != tt.hex {
			t.Errorf("%s encodes to %s, want %s", tt.name, got, tt.hex)
		}
		if !slices.Contains(dumps, tt.hex) {
			t.Errorf("%s example %s not in docs/WIRE.md (found %q)", tt.name, tt.hex, dumps)
		}
	}
}
