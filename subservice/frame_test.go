package subservice

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestEncodeFrame(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want string
	}{
		{"hello", Frame{Op: OpHello, Token: "t1", Protocol: 1}, `{"op":"hello","token":"t1","protocol":1}`},
		{"send", Frame{Op: OpSend, ID: 7, To: "n2", Data: json.RawMessage(`{"text": "hi"}`)}, `{"op":"send","id":7,"to":"n2","data":{"text":"hi"}}`},
		{"send without id or data", Frame{Op: OpSend, To: "n2"}, `{"op":"send","to":"n2","data":null}`},
		{"broadcast", Frame{Op: OpBroadcast, ID: 1, Data: json.RawMessage(`"<&>"`)}, `{"op":"broadcast","id":1,"data":"<&>"}`},
		{"menu", Frame{Op: OpMenu, Items: []MenuItem{{ID: "a", Label: "A", Enabled: true}}}, `{"op":"menu","items":[{"id":"a","label":"A","enabled":true,"checked":false}]}`},
		{"empty menu", Frame{Op: OpMenu}, `{"op":"menu","items":[]}`},
		{"welcome", Frame{Op: OpWelcome, Protocol: 1, Node: &Peer{ID: "n1", Name: "one"}, Subservice: "chat", Version: "1.0.0", MaxLine: 1024},
			`{"op":"welcome","protocol":1,"node":{"id":"n1","name":"one"},"subservice":"chat","version":"1.0.0","peers":[],"max_line":1024}`},
		{"message", Frame{Op: OpMessage, From: "n2", FromName: "two", Data: json.RawMessage(`[1, 2]`)}, `{"op":"message","from":"n2","from_name":"two","broadcast":false,"data":[1,2]}`},
		{"peer", Frame{Op: OpPeer, Event: PeerDown, Peer: &Peer{ID: "n2", Name: "two"}}, `{"op":"peer","event":"down","peer":{"id":"n2","name":"two"}}`},
		{"error", Frame{Op: OpError, ID: 3, Code: CodeNoPeer, Message: "gone", To: "n9"}, `{"op":"error","id":3,"code":"no-peer","message":"gone","to":"n9"}`},
		{"error without id", Frame{Op: OpError, Code: CodeBadFrame, Message: "x"}, `{"op":"error","code":"bad-frame","message":"x"}`},
		{"click", Frame{Op: OpClick, Item: "a"}, `{"op":"click","item":"a"}`},
		{"unknown op keeps its fields", Frame{Op: "future", To: "x", ID: 2}, `{"op":"future","id":2,"to":"x"}`},
		{"open", Frame{Op: OpOpen, ID: 4, To: "n3", Plugin: "rev"}, `{"op":"open","id":4,"to":"n3","plugin":"rev"}`},
		{"session opened", Frame{Op: OpSession, ID: 4, Session: "s1", Event: SessionOpened, Plugin: "rev", Version: "1.0.0", Node: &Peer{ID: "n3", Name: "three"}},
			`{"op":"session","id":4,"session":"s1","event":"opened","plugin":"rev","version":"1.0.0","node":{"id":"n3","name":"three"}}`},
		{"session closed", Frame{Op: OpSession, Session: "s1", Event: SessionClosed, Code: "crashed", Reason: "the program ended", Exit: "exit status 2"},
			`{"op":"session","session":"s1","event":"closed","code":"crashed","reason":"the program ended","exit":"exit status 2"}`},
		{"session data", Frame{Op: OpSessionData, Session: "s1", Data: json.RawMessage(`"hi\n<&>"`)}, `{"op":"session-data","session":"s1","data":"hi\n<&>"}`},
		{"session data without data", Frame{Op: OpSessionData, Session: "s1"}, `{"op":"session-data","session":"s1","data":""}`},
		{"session eof", Frame{Op: OpSessionEOF, Session: "s1"}, `{"op":"session-eof","session":"s1"}`},
		{"session close", Frame{Op: OpSessionClose, Session: "s1"}, `{"op":"session-close","session":"s1"}`},
		{"session error", Frame{Op: OpError, Code: CodeNoSession, Message: "x", Session: "s9"}, `{"op":"error","code":"no-session","message":"x","session":"s9"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeFrame(&tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != tt.want+"\n" {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			back, err := DecodeFrame(bytes.TrimSuffix(b, []byte("\n")))
			if err != nil {
				t.Fatalf("decode own encoding: %v", err)
			}
			if back.Op != tt.f.Op || back.ID != tt.f.ID || back.To != tt.f.To || back.Code != tt.f.Code {
				t.Errorf("round trip changed the frame: %+v", back)
			}
		})
	}
}

func TestSessionText(t *testing.T) {
	for data, want := range map[string]string{`"a\nb"`: "a\nb", `""`: "", `"\u00e9"`: "é"} {
		f := Frame{Op: OpSessionData, Data: json.RawMessage(data)}
		if got, err := f.SessionText(); err != nil || got != want {
			t.Errorf("SessionText(%s) = %q, %v", data, got, err)
		}
	}
	for _, data := range []string{``, `5`, `null`, `["a"]`, `"unterminated`} {
		f := Frame{Op: OpSessionData, Data: json.RawMessage(data)}
		if _, err := f.SessionText(); !errors.Is(err, ErrBadFrame) {
			t.Errorf("SessionText(%s): %v, want ErrBadFrame", data, err)
		}
	}
}

func TestEncodeFrameRejectsInvalidData(t *testing.T) {
	_, err := EncodeFrame(&Frame{Op: OpSend, To: "x", Data: json.RawMessage(`{"a":`)})
	if err == nil {
		t.Fatal("invalid data encoded")
	}
}

func TestDecodeFrameErrors(t *testing.T) {
	for _, line := range []string{
		``, `   `, `null`, `[1,2]`, `"hello"`, `42`, `{`, `{"op":1}`, `{}`, `{"op":""}`,
		`{"op":"send","id":-1}`, `{"op":"send","id":1.5}`, `{"op":"send","id":"7"}`,
		`{"op":"menu","items":{}}`, `{"op":"hello","protocol":"1"}`, `{"op":"send"} trailing`,
	} {
		if f, err := DecodeFrame([]byte(line)); !errors.Is(err, ErrBadFrame) {
			t.Errorf("DecodeFrame(%q) = %+v, %v; want ErrBadFrame", line, f, err)
		}
	}
}

func TestDecodeFrame(t *testing.T) {
	f, err := DecodeFrame([]byte(` {"op":"send","id":18446744073709551615,"to":"n","data":null,"extra":{"x":1}} `))
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != 1<<64-1 || f.To != "n" || string(f.Data) != "null" {
		t.Errorf("got %+v", f)
	}
}

func TestValidateMenu(t *testing.T) {
	many := make([]MenuItem, MaxMenuItems+1)
	for i := range many {
		many[i] = MenuItem{ID: strings.Repeat("x", i+1), Label: "l"}
	}
	tests := []struct {
		name  string
		items []MenuItem
		ok    bool
	}{
		{"empty", nil, true},
		{"good", []MenuItem{{ID: "a", Label: "A"}, {ID: "b", Label: "B", Checked: true}}, true},
		{"max", many[:MaxMenuItems], true},
		{"too many", many, false},
		{"no id", []MenuItem{{Label: "A"}}, false},
		{"no label", []MenuItem{{ID: "a"}}, false},
		{"long id", []MenuItem{{ID: strings.Repeat("a", MaxMenuIDLen+1), Label: "A"}}, false},
		{"long label", []MenuItem{{ID: "a", Label: strings.Repeat("a", MaxMenuLabel+1)}}, false},
		{"duplicate", []MenuItem{{ID: "a", Label: "A"}, {ID: "a", Label: "B"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateMenu(tt.items)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateMenu = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
		})
	}
}

// readAll reads every line (or error) from r until EOF.
func readAll(t *testing.T, lr *LineReader) []string {
	t.Helper()
	var out []string
	for i := 0; i < 10000; i++ {
		line, err := lr.ReadLine()
		switch {
		case err == io.EOF:
			return out
		case err == ErrTooLarge:
			out = append(out, "<too-large>")
		case err != nil:
			t.Fatalf("ReadLine: %v", err)
		default:
			out = append(out, string(line))
		}
	}
	t.Fatal("no EOF after 10000 lines")
	return nil
}

func TestLineReader(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     []string
	}{
		{"lines", "a\nbb\n", 8, []string{"a", "bb"}},
		{"crlf", "a\r\nbb\r\n", 8, []string{"a", "bb"}},
		{"blank lines skipped", "\n\n  \r\na\n\t\n", 8, []string{"a"}},
		{"unterminated last line", "a\nbb", 8, []string{"a", "bb"}},
		{"exactly max", "12345678\n", 8, []string{"12345678"}},
		{"exactly max with crlf", "12345678\r\n", 8, []string{"12345678"}},
		{"one over max", "123456789\nok\n", 8, []string{"<too-large>", "ok"}},
		{"far over max", strings.Repeat("x", 100) + "\nok\n" + strings.Repeat("y", 50), 8, []string{"<too-large>", "ok", "<too-large>"}},
		{"empty", "", 8, nil},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tt.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got := readAll(t, NewLineReader(r, tt.max))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s (one byte %v): got %q, want %q", tt.name, oneByte, got, tt.want)
			}
		}
	}
}

func TestLineReaderBigLines(t *testing.T) {
	// Lines longer than the bufio buffer, on both sides of the cap.
	max := 200 << 10
	ok := strings.Repeat("a", max)
	big := strings.Repeat("b", max+1)
	in := ok + "\n" + big + "\n" + ok + "\r\n"
	got := readAll(t, NewLineReader(strings.NewReader(in), max))
	if len(got) != 3 || got[0] != ok || got[1] != "<too-large>" || got[2] != ok {
		t.Fatalf("got %d lines: %.20q...", len(got), got)
	}
}

func TestLineReaderError(t *testing.T) {
	boom := errors.New("boom")
	lr := NewLineReader(io.MultiReader(strings.NewReader("a\npartial"), iotest.ErrReader(boom)), 64)
	if line, err := lr.ReadLine(); err != nil || string(line) != "a" {
		t.Fatalf("first line: %q, %v", line, err)
	}
	if _, err := lr.ReadLine(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the reader's error", err)
	}
}

// refLines is the reference for FuzzLineReader: the lines of in, as
// ReadLine documents them.
func refLines(in []byte, max int) []string {
	var out []string
	segs := bytes.Split(in, []byte("\n"))
	for i, seg := range segs {
		last := i == len(segs)-1
		if !last {
			seg = bytes.TrimSuffix(seg, []byte("\r"))
		}
		switch {
		case len(seg) > max:
			out = append(out, "<too-large>")
		case len(bytes.TrimSpace(seg)) == 0:
		default:
			out = append(out, string(seg))
		}
	}
	return out
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\r\n\n  \nccc"), uint8(2), false)
	f.Add([]byte(`{"op":"hello"}`+"\n"), uint8(20), true)
	f.Fuzz(func(t *testing.T, in []byte, max uint8, oneByte bool) {
		m := int(max%64) + 1
		var r io.Reader = bytes.NewReader(in)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		got := readAll(t, NewLineReader(r, m))
		want := refLines(in, m)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("max %d: got %q, want %q", m, got, want)
		}
		for _, l := range got {
			if l != "<too-large>" && (len(l) > m || strings.Contains(l, "\n")) {
				t.Fatalf("line %q breaks the cap %d or holds a newline", l, m)
			}
		}
	})
}

// FuzzDecodeFrame checks that DecodeFrame never panics, and that whatever
// it accepts encodes to one line that decodes to a frame encoding the same
// way (encoding is a fixed point after one round).
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"op":"hello","token":"abc","protocol":1}`,
		`{"op":"send","id":1,"to":"n2","data":{"text":"hi <b>"}}`,
		`{"op":"broadcast","data":[1,"\u2028",null]}`,
		`{"op":"menu","items":[{"id":"a","label":"A","enabled":true}]}`,
		`{"op":"welcome","protocol":1,"node":{"id":"n","name":"x"},"peers":[{"id":"p","name":"q"}]}`,
		`{"op":"error","id":3,"code":"no-peer","message":"m","to":"t"}`,
		`{"op":"x","data":"\xff"}`,
		`{"op":"open","id":9,"to":"h3","plugin":"rev","version":"1.0.0"}`,
		`{"op":"session","id":9,"session":"s","event":"opened","node":{"id":"h","name":"h3"}}`,
		`{"op":"session-data","session":"s","data":"line\n"}`,
		`{"op":"session-data","session":"s","data":{"not":"a string"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := DecodeFrame(line)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		b1, err := EncodeFrame(fr)
		if err != nil {
			t.Fatalf("cannot encode a decoded frame %+v: %v", fr, err)
		}
		if bytes.IndexByte(b1[:len(b1)-1], '\n') >= 0 || b1[len(b1)-1] != '\n' {
			t.Fatalf("encoding is not one line: %q", b1)
		}
		fr2, err := DecodeFrame(b1)
		if err != nil {
			t.Fatalf("own encoding %q does not decode: %v", b1, err)
		}
		b2, err := EncodeFrame(fr2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("not a fixed point:\n%q\n%q (%v)", b1, b2, err)
		}
	})
}

// FuzzEncodeFrameFast checks that the hand-written encoding of the hot ops
// is byte for byte what encoding/json writes.
func FuzzEncodeFrameFast(f *testing.F) {
	f.Add(uint8(0), uint64(7), "8b41e07c2d95f3a6b0c7d1e4f92a5c60", "bravo", true, []byte(`{"text": "hi <b>&"}`))
	f.Add(uint8(1), uint64(0), "\x00\b\f\n\r\t\"\\\x7f", "\u2028\u2029\xff\xfe", false, []byte(` [1, "\u2028", null] `))
	f.Add(uint8(2), uint64(1<<63), "é漢字🎉", "", true, []byte(``))
	f.Fuzz(func(t *testing.T, op uint8, id uint64, s1, s2 string, b bool, data []byte) {
		fr := &Frame{Op: []string{OpSend, OpBroadcast, OpMessage}[op%3], ID: id, To: s1, From: s1, FromName: s2, Broadcast: b, Data: data}
		switch fr.Op {
		case OpBroadcast:
			fr.To, fr.From, fr.FromName, fr.Broadcast = "", "", "", false
		case OpSend:
			fr.From, fr.FromName, fr.Broadcast = "", "", false
		case OpMessage:
			fr.ID, fr.To = 0, ""
		}
		fast, err1 := EncodeFrame(fr)
		slow, err2 := encodeGeneric(fr)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("fast error %v, encoding/json error %v", err1, err2)
		}
		if err1 == nil && !bytes.Equal(fast, slow) {
			t.Fatalf("fast %q\njson %q", fast, slow)
		}
	})
}

// readBinStream reads frames and their bin blocks as a node or the SDK
// does (a block over the cap is discarded), and returns one string per
// frame: its op and, for a bin frame, its messages; "<too-large>" and
// "<bad>" for lines that are not frames, "<bad-block>" for a block that
// CheckBin refuses, "<skipped N>" for a discarded block.
func readBinStream(t *testing.T, lr *LineReader, max int) []string {
	var out []string
	for range 10000 {
		line, err := lr.ReadLine()
		if err == ErrTooLarge {
			out = append(out, "<too-large>")
			continue
		}
		if err != nil {
			return out
		}
		f, err := DecodeFrame(line)
		if err != nil {
			out = append(out, "<bad>")
			continue
		}
		switch {
		case f.Bin > max:
			if lr.DiscardBlock(int64(f.Bin)) != nil {
				return out
			}
			out = append(out, fmt.Sprintf("<skipped %d>", f.Bin))
		case f.Bin > 0:
			block, err := lr.ReadBlock(f.Bin)
			if err != nil {
				return out
			}
			if len(block) != f.Bin {
				t.Fatalf("ReadBlock(%d) returned %d bytes", f.Bin, len(block))
			}
			if _, err := CheckBin(block); err != nil {
				out = append(out, "<bad-block>")
				continue
			}
			s := f.Op
			for m := range BinItems(block) {
				s += fmt.Sprintf(" %q", m)
			}
			out = append(out, s)
		default:
			out = append(out, f.Op)
		}
	}
	t.Fatal("the stream did not end")
	return nil
}

// FuzzBinStream: a stream of bin frames (messages cut from data), JSON
// frames between them, read back through a LineReader (one byte at a time
// or not, with a cap that some blocks exceed) gives exactly the frames and
// messages written, the too-large blocks skipped without losing step. And
// data itself, read as a stream, never breaks the reader.
func FuzzBinStream(f *testing.F) {
	f.Add([]byte("hello\x00\nworld"), uint8(3), false)
	f.Add([]byte(`{"op":"send","bin":5}`+"\nabcde"), uint8(1), true)
	f.Add([]byte(`{"op":"message","from":"a","bin":9}`+"\n\x00\x00\x00\x09short"), uint8(7), false)
	f.Fuzz(func(t *testing.T, data []byte, cut uint8, oneByte bool) {
		const max = 64
		var stream []byte
		var want []string
		n := int(cut%16) + 1
		for i := 0; i < len(data); i += 3 * n {
			var block []byte
			s := OpSend
			for j := i; j < min(i+3*n, len(data)); j += n {
				msg := data[j:min(j+n, len(data), i+3*n)]
				block = AppendBin(block, msg)
				s += fmt.Sprintf(" %q", msg)
			}
			stream = AppendBinHead(stream, OpSend, uint64(i+1), "n2", "", "", false, len(block))
			stream = append(stream, block...)
			if len(block) > max {
				s = fmt.Sprintf("<skipped %d>", len(block))
			}
			want = append(want, s)
			stream = append(stream, `{"op":"broadcast","data":1}`+"\n"...)
			want = append(want, OpBroadcast)
		}
		for k, in := range [][]byte{stream, data} {
			var r io.Reader = bytes.NewReader(in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got := readBinStream(t, NewLineReader(r, max), max)
			if k == 0 && !reflect.DeepEqual(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	})
}
