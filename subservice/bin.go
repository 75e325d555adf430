package subservice

import (
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"strconv"
)

// FeatureBin is the protocol feature of binary messages (docs/PROTOCOL.md
// §14): a send, broadcast or message frame whose "bin" field is a byte
// count N is followed on the socket, right after its newline, by N bytes
// of messages, each a 4-byte big-endian length and that many bytes of any
// kind. Neither the nodes nor the SDK look inside a message's bytes, which
// makes it the fast path between plugins (SendBytes, Message.Bytes).
const FeatureBin = "bin"

// binLenSize is the size of the length before each message in a bin block.
const binLenSize = 4

// binWidth is how many characters the SDK gives a bin frame's byte count:
// the digits, then spaces (JSON whitespace), so that the count can grow in
// place as messages join the frame.
const binWidth = 10

// AppendBin appends one message to a bin block: its length, 4 bytes big
// endian, then its bytes.
func AppendBin(dst, msg []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(msg)))
	return append(dst, msg...)
}

// CheckBin checks a bin block (the bytes after a bin frame's line) and
// returns the number of messages in it. It fails, with an error wrapping
// ErrBadFrame, when the block is empty or its lengths do not add up to its
// size exactly.
func CheckBin(block []byte) (int, error) {
	if len(block) == 0 {
		return 0, fmt.Errorf("%w: bin block with no messages", ErrBadFrame)
	}
	n := 0
	for i := 0; i < len(block); n++ {
		if len(block)-i < binLenSize {
			return n, fmt.Errorf("%w: bin block: %d stray bytes after message %d, too few for a length", ErrBadFrame, len(block)-i, n)
		}
		l := binary.BigEndian.Uint32(block[i:])
		i += binLenSize
		if uint64(l) > uint64(len(block)-i) {
			return n, fmt.Errorf("%w: bin block: message %d says %d bytes, %d are left", ErrBadFrame, n+1, l, len(block)-i)
		}
		i += int(l)
	}
	return n, nil
}

// BinItems returns the messages of a bin block in order, slices of block.
// It stops at the first length that runs past the end (CheckBin fails for
// such a block).
func BinItems(block []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for i := 0; len(block)-i >= binLenSize; {
			l := binary.BigEndian.Uint32(block[i:])
			i += binLenSize
			if uint64(l) > uint64(len(block)-i) {
				return
			}
			end := i + int(l)
			if !yield(block[i:end:end]) {
				return
			}
			i = end
		}
	}
}

// AppendBinAsBatch appends the messages of a checked bin block to dst as a
// batch, a compact JSON array, for a plugin or node that does not take bin
// blocks, and returns the number of messages. Every message must be one
// JSON value; it fails with an error wrapping ErrBadFrame, naming the
// first that is not, and returns dst unchanged.
func AppendBinAsBatch(dst, block []byte) ([]byte, int, error) {
	out := append(dst, '[')
	n := 0
	for msg := range BinItems(block) {
		if n > 0 {
			out = append(out, ',')
		}
		n++
		var err error
		if out, err = appendCompactJSON(out, msg); err != nil {
			return dst, 0, fmt.Errorf("%w: binary message %d of %d is not JSON", ErrBadFrame, n, countBin(block))
		}
	}
	if n == 0 {
		return dst, 0, fmt.Errorf("%w: bin block with no messages", ErrBadFrame)
	}
	return append(out, ']'), n, nil
}

func countBin(block []byte) int {
	n := 0
	for range BinItems(block) {
		n++
	}
	return n
}

// AppendBinHead appends the line of a send, broadcast or message frame
// that carries a bin block of size bytes, newline included; the block
// follows it on the socket.
func AppendBinHead(dst []byte, op string, id uint64, to, from, fromName string, broadcast bool, size int) []byte {
	dst = appendHead(dst, op, id, to, from, fromName, broadcast, keyBin)
	dst = strconv.AppendInt(dst, int64(size), 10)
	return append(dst, '}', '\n')
}

// appendBinHeadWide is AppendBinHead with the byte count written in
// binWidth characters (digits, then spaces), so that setBinSize can change
// it in place. It returns the offset of the count.
func appendBinHeadWide(dst []byte, op string, id uint64, to string, size int) ([]byte, int) {
	dst = appendHead(dst, op, id, to, "", "", false, keyBin)
	at := len(dst)
	dst = append(dst, "          "[:binWidth]...)
	setBinSize(dst, at, size)
	return append(dst, '}', '\n'), at
}

// setBinSize writes size into the binWidth characters at b[at:].
func setBinSize(b []byte, at, size int) {
	field := b[at : at+binWidth]
	d := strconv.AppendInt(field[:0:binWidth], int64(size), 10)
	for i := len(d); i < binWidth; i++ {
		field[i] = ' '
	}
}

// ReadBlock reads the n bytes that follow a bin frame's line. The slice is
// valid until the next call of ReadLine or ReadBlock. n must be at most the
// reader's cap; the caller checks it against the frame first.
func (r *LineReader) ReadBlock(n int) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	if n <= r.br.Size() {
		b, err := r.br.Peek(n)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		r.br.Discard(n)
		return b, nil
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, err
	}
	return b, nil
}

// DiscardBlock skips the n bytes after a bin frame's line, without keeping
// them.
func (r *LineReader) DiscardBlock(n int64) error {
	_, err := io.CopyN(io.Discard, r.br, n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
