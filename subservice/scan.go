package subservice

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"iter"
	"math/bits"
	"unicode/utf8"
)

// The hand-written half of the codec. The hot frames (send, broadcast,
// message) are decoded and their data checked here, several times faster
// than encoding/json; anything this code is not sure about (an unknown or
// repeated key, an escape in a key or a string field, a number that is not
// a plain unsigned integer, deep nesting, invalid JSON) is left to
// encoding/json, so that the results are always encoding/json's
// (FuzzDecodeFrameFast, FuzzScanValue).

// maxFastDepth is the nesting depth past which scanValue gives up and
// leaves the value to encoding/json (which allows 10000).
const maxFastDepth = 64

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// scanValue reads the JSON value that starts at b[i] and returns the index
// just past it. compact is false when the value holds whitespace between
// its tokens. ok is false when b[i:] does not start with a valid JSON value
// or the value nests deeper than maxFastDepth.
func scanValue(b []byte, i int) (end int, compact, ok bool) {
	compact = true
	end, ok = scanValueDepth(b, i, 0, &compact)
	return end, compact, ok
}

func scanValueDepth(b []byte, i, depth int, compact *bool) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case c == '{':
		if depth >= maxFastDepth {
			return i, false
		}
		return scanObject(b, i, depth+1, compact)
	case c == '[':
		if depth >= maxFastDepth {
			return i, false
		}
		return scanArray(b, i, depth+1, compact)
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return i, false
}

// space skips whitespace, noting in compact whether there was any.
func space(b []byte, i int, compact *bool) int {
	j := skipSpace(b, i)
	if j != i {
		*compact = false
	}
	return j
}

func scanObject(b []byte, i, depth int, compact *bool) (int, bool) {
	i = space(b, i+1, compact)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		var ok bool
		if i, _, ok = scanString(b, i); !ok {
			return i, false
		}
		i = space(b, i, compact)
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		i = space(b, i+1, compact)
		if i, ok = scanValueDepth(b, i, depth, compact); !ok {
			return i, false
		}
		i = space(b, i, compact)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = space(b, i+1, compact)
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

func scanArray(b []byte, i, depth int, compact *bool) (int, bool) {
	i = space(b, i+1, compact)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = scanValueDepth(b, i, depth, compact); !ok {
			return i, false
		}
		i = space(b, i, compact)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = space(b, i+1, compact)
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// scanString reads the string that starts at b[i] (a '"'). plain reports
// that it holds no escape and no byte outside printable ASCII, so that its
// contents are its value.
func scanString(b []byte, i int) (end int, plain, ok bool) {
	plain = true
	i++
	for {
		// Eight bytes at a time, to the first that needs a look.
		for i+8 <= len(b) {
			if m := special8(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return i, false, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, plain, true
		case c < 0x20:
			return i, false, false
		case c == '\\':
			plain = false
			i++
			if i >= len(b) {
				return i, false, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return i, false, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return i, false, false
					}
				}
				i += 4
			default:
				return i, false, false
			}
		case c >= utf8.RuneSelf:
			plain = false
		}
		i++
	}
}

// Byte-parallel tests on eight bytes in a uint64 (Hacker's Delight 6-1).
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// le64 reads the first eight bytes of s as a little-endian uint64.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// special8 returns a mask whose lowest set bit is the top bit of the first
// of the eight bytes in x (the lowest) that is a control character, '"',
// '\\' or not ASCII; zero when there is none. Bits above the lowest may
// be set falsely (borrows), so only the lowest counts.
func special8(x uint64) uint64 {
	q := x ^ (ones * '"')
	e := x ^ (ones * '\\')
	return ((x-ones*0x20)&^x | (q-ones)&^q | (e-ones)&^e | x) & highs
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanNumber reads a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	return i, true
}

func scanLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return i, false
}

// appendCompactJSON appends data, which must be one JSON value, without
// insignificant whitespace: byte for byte what json.Compact writes, and
// the same error when data is not one JSON value.
func appendCompactJSON(dst, data []byte) ([]byte, error) {
	if end, compact, ok := scanValue(data, 0); ok && compact && end == len(data) {
		return append(dst, data...), nil
	}
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Bits of the keys decodeFast has seen.
const (
	seenOp = 1 << iota
	seenID
	seenTo
	seenData
	seenFrom
	seenFromName
	seenBroadcast
	seenBatch
	seenBin
)

// decodeFast decodes a frame whose keys are all among op, id, to, data,
// batch, bin, from, from_name and broadcast, each at most once, with plain string
// values and id a plain unsigned integer: every send, broadcast and
// message frame this package writes. It reports false for anything else,
// and the caller asks encoding/json. line has no surrounding whitespace.
// The frame does not alias line.
func decodeFast(line []byte) (*Frame, bool) {
	var f Frame
	if !decodeFastInto(line, &f, nil, false, nil) {
		return nil, false
	}
	return &f, true
}

// batchInfo is what decodeFastInto learns about a frame's batch while it
// checks it: the number of values, whether it is compact and, when spans
// is not nil, the bounds of each value (start and end offsets from the
// batch's first byte, appended in pairs).
type batchInfo struct {
	n       int
	compact bool
	spans   []int
}

// decodeFastInto is decodeFast into f, which must be zero. Strings come
// from strs when it holds them (strs may be nil). With alias, f.Data and
// f.Batch are slices of line rather than copies. bi, when not nil, learns
// about an array batch (it is left zero otherwise); its spans are reset.
func decodeFastInto(line []byte, f *Frame, strs *strCache, alias bool, bi *batchInfo) bool {
	if len(line) < 2 || line[0] != '{' {
		return false
	}
	var seen int
	i := skipSpace(line, 1)
	for {
		// A key: plain, so that its bytes are its name.
		if i >= len(line) || line[i] != '"' {
			return false
		}
		end, plain, ok := scanString(line, i)
		if !ok || !plain {
			return false
		}
		key := line[i+1 : end-1]
		i = skipSpace(line, end)
		if i >= len(line) || line[i] != ':' {
			return false
		}
		i = skipSpace(line, i+1)
		if i >= len(line) {
			return false
		}
		var bit int
		var str *string
		switch string(key) {
		case "op":
			bit = seenOp
			var op []byte
			if op, i, ok = fastBytes(line, i); !ok {
				return false
			}
			f.Op = internOp(op)
		case "id":
			bit = seenID
			if f.ID, i, ok = fastUint(line, i); !ok {
				return false
			}
		case "bin":
			bit = seenBin
			var n uint64
			if n, i, ok = fastUint(line, i); !ok || n > 1<<31 {
				return false
			}
			f.Bin = int(n)
		case "to":
			bit, str = seenTo, &f.To
		case "from":
			bit, str = seenFrom, &f.From
		case "from_name":
			bit, str = seenFromName, &f.FromName
		case "broadcast":
			bit = seenBroadcast
			switch {
			case line[i] == 't' && len(line)-i >= 4 && string(line[i:i+4]) == "true":
				f.Broadcast, i = true, i+4
			case line[i] == 'f' && len(line)-i >= 5 && string(line[i:i+5]) == "false":
				f.Broadcast, i = false, i+5
			default:
				return false
			}
		case "data", "batch":
			bit = seenData
			dst := &f.Data
			if key[0] == 'b' {
				bit, dst = seenBatch, &f.Batch
			}
			start := i
			if bit == seenBatch && bi != nil && line[i] == '[' {
				// The same checks as scanValue, counting as it goes.
				if bi.spans != nil {
					bi.spans = bi.spans[:0]
				}
				var each func(s, e int)
				if bi.spans != nil {
					each = func(s, e int) { bi.spans = append(bi.spans, s-start, e-start) }
				}
				if i, bi.n, bi.compact, ok = scanBatch(line, i, each); !ok {
					return false
				}
			} else if i, _, ok = scanValue(line, i); !ok {
				return false
			}
			if alias {
				*dst = line[start:i:i]
			} else {
				*dst = bytes.Clone(line[start:i])
			}
		default:
			return false
		}
		if str != nil {
			var b []byte
			if b, i, ok = fastBytes(line, i); !ok {
				return false
			}
			*str = strs.get(b)
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		i = skipSpace(line, i)
		if i >= len(line) {
			return false
		}
		switch line[i] {
		case ',':
			i = skipSpace(line, i+1)
		case '}':
			return i+1 == len(line) && f.Op != ""
		default:
			return false
		}
	}
}

// strCache hands out the strings it last made for the same bytes, so that
// decoding the node ids and names that repeat in every frame allocates
// nothing. Not safe for concurrent use; a nil *strCache always allocates.
type strCache struct {
	s    [4]string
	next int
}

func (c *strCache) get(b []byte) string {
	if c == nil {
		return string(b)
	}
	for _, s := range c.s {
		if s == string(b) {
			return s
		}
	}
	s := string(b)
	c.s[c.next] = s
	c.next = (c.next + 1) % len(c.s)
	return s
}

// Decoder decodes frames as DecodeFrame does, but reuses its memory: the
// Frame it returns, and the Data and Batch in it, are valid only until the
// next call and may share memory with the line. It is not safe for
// concurrent use. The zero value is ready to use.
type Decoder struct {
	f    Frame
	strs strCache
	bi   batchInfo
}

// Decode parses one line (without its newline) like DecodeFrame.
func (d *Decoder) Decode(line []byte) (*Frame, error) {
	d.f = Frame{}
	d.bi = batchInfo{}
	if decodeFastInto(bytes.TrimSpace(line), &d.f, &d.strs, true, &d.bi) {
		return &d.f, nil
	}
	d.bi = batchInfo{}
	return DecodeFrame(line)
}

// BatchLen returns, for the frame the last Decode returned, the number of
// values in its Batch and whether the batch is compact (as AppendBatch
// would write it), when the Decoder counted them while decoding: it does
// for the send, broadcast and message frames EncodeFrame writes. n is 0
// when it did not (the frame has no batch, its batch is not an array, or
// the frame took the slow path): AppendBatch counts then.
func (d *Decoder) BatchLen() (n int, compact bool) { return d.bi.n, d.bi.compact }

// fastBytes reads a string value at line[i] that needs no unescaping (no
// escapes, valid UTF-8: encoding/json would replace invalid bytes) and
// returns its contents, a slice of line.
func fastBytes(line []byte, i int) ([]byte, int, bool) {
	if line[i] != '"' {
		return nil, i, false
	}
	end, plain, ok := scanString(line, i)
	if !ok {
		return nil, i, false
	}
	s := line[i+1 : end-1]
	if !plain && (bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s)) {
		return nil, i, false
	}
	return s, end, true
}

// fastUint reads a plain unsigned integer that fits in 64 bits (no sign,
// fraction, exponent or leading zero).
func fastUint(line []byte, i int) (uint64, int, bool) {
	start := i
	var n uint64
	for ; i < len(line) && isDigit(line[i]); i++ {
		d := uint64(line[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, i, false
		}
		n = n*10 + d
	}
	switch {
	case i == start, line[start] == '0' && i-start > 1:
		return 0, i, false
	case i < len(line) && (line[i] == '.' || line[i] == 'e' || line[i] == 'E'):
		return 0, i, false
	}
	return n, i, true
}

// internOp returns op as a string, the constant for a known op, so that
// decoding one allocates nothing.
func internOp(op []byte) string {
	switch string(op) {
	case OpSend:
		return OpSend
	case OpBroadcast:
		return OpBroadcast
	case OpMessage:
		return OpMessage
	}
	return string(op)
}

// scanBatch reads the JSON array that starts at b[i] and returns the index
// just past it and the number of values in it; each, when not nil, is
// called with the bounds of every value. compact and ok are as for
// scanValue.
func scanBatch(b []byte, i int, each func(start, end int)) (end, n int, compact, ok bool) {
	if i >= len(b) || b[i] != '[' {
		return i, 0, false, false
	}
	compact = true
	i = space(b, i+1, &compact)
	if i < len(b) && b[i] == ']' {
		return i + 1, 0, compact, true
	}
	for {
		start := i
		if i, ok = scanValueDepth(b, i, 1, &compact); !ok {
			return i, n, false, false
		}
		n++
		if each != nil {
			each(start, i)
		}
		i = space(b, i, &compact)
		if i >= len(b) {
			return i, n, false, false
		}
		switch b[i] {
		case ',':
			i = space(b, i+1, &compact)
		case ']':
			return i + 1, n, compact, true
		default:
			return i, n, false, false
		}
	}
}

// AppendBatch appends batch, which must be a JSON array of at least one
// value, to dst without insignificant whitespace (as json.Compact writes
// it), and returns the extended buffer and the number of values. When
// batch is not such an array it returns dst unchanged and an error
// wrapping ErrBadFrame.
func AppendBatch(dst, batch []byte) ([]byte, int, error) {
	if end, n, compact, ok := scanBatch(batch, 0, nil); ok && end == len(batch) {
		if n == 0 {
			return dst, 0, fmt.Errorf("%w: empty batch", ErrBadFrame)
		}
		if compact {
			return append(dst, batch...), n, nil
		}
	}
	// Whitespace, deep nesting or invalid: encoding/json decides.
	var items []json.RawMessage
	if err := json.Unmarshal(batch, &items); err != nil {
		return dst, 0, fmt.Errorf("%w: batch is not a JSON array: %v", ErrBadFrame, err)
	}
	if len(items) == 0 {
		return dst, 0, fmt.Errorf("%w: empty batch", ErrBadFrame)
	}
	out, err := appendCompactJSON(dst, batch)
	if err != nil {
		return dst, 0, fmt.Errorf("%w: batch: %v", ErrBadFrame, err)
	}
	return out, len(items), nil
}

// BatchItems returns the values of batch, a JSON array as AppendBatch
// accepts, in order: slices of batch, with any whitespace inside them (or
// copies, for an array nested too deeply for the fast scan). For anything
// else it yields nothing.
func BatchItems(batch []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		if end, _, _, ok := scanBatch(batch, 0, nil); !ok || end != len(batch) {
			var items []json.RawMessage
			if json.Unmarshal(batch, &items) != nil {
				return
			}
			for _, it := range items {
				if !yield(it) {
					return
				}
			}
			return
		}
		// Valid: walk it again, yielding as we go.
		var compact bool
		i := space(batch, 1, &compact)
		for i < len(batch) && batch[i] != ']' {
			start := i
			i, _ = scanValueDepth(batch, i, 1, &compact)
			if !yield(batch[start:i:i]) {
				return
			}
			i = space(batch, i, &compact)
			if batch[i] == ',' {
				i = space(batch, i+1, &compact)
			}
		}
	}
}
