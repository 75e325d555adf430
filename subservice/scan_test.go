package subservice

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// decodeFrameJSON is DecodeFrame as it was before the fast path: the
// reference the fast path must agree with.
func decodeFrameJSON(line []byte) (*Frame, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadFrame)
	}
	var f Frame
	if err := json.Unmarshal(line, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if f.Op == "" {
		return nil, fmt.Errorf("%w: missing op", ErrBadFrame)
	}
	return &f, nil
}

// sameDecode fails t unless DecodeFrame and encoding/json agree on line:
// the same frame, or the same error.
func sameDecode(t *testing.T, line []byte) {
	t.Helper()
	got, err1 := DecodeFrame(line)
	want, err2 := decodeFrameJSON(line)
	if fmt.Sprint(err1) != fmt.Sprint(err2) {
		t.Fatalf("%q: error %v, encoding/json %v", line, err1, err2)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nfast %+v\njson %+v", line, got, want)
	}
}

// TestDecodeFastTakesTheHotFrames: what EncodeFrame writes for send,
// broadcast and message is decoded without encoding/json, and equally.
func TestDecodeFastTakesTheHotFrames(t *testing.T) {
	frames := []Frame{
		{Op: OpSend, ID: 12345, To: "8b41e07c2d95f3a6b0c7d1e4f92a5c60", Data: benchData},
		{Op: OpSend, To: "n", Data: json.RawMessage(`"\u2028 \\ \" é"`)},
		{Op: OpSend, ID: 1<<64 - 1, To: "n"},
		{Op: OpBroadcast, ID: 1, Data: json.RawMessage(`[1,-2.5e+3,true,false,null,{"a":{}},[]]`)},
		{Op: OpMessage, From: "8b41", FromName: "café 漢字", Broadcast: true, Data: json.RawMessage(`{"x":"<&>"}`)},
		{Op: OpMessage, From: "8b41", Data: json.RawMessage(`0`)},
	}
	for _, f := range frames {
		line, err := EncodeFrame(&f)
		if err != nil {
			t.Fatal(err)
		}
		line = line[:len(line)-1]
		if _, ok := decodeFast(line); !ok {
			t.Errorf("%s: not taken by the fast path", line)
		}
		sameDecode(t, line)
	}
}

// TestDecodeFastLeavesTheUnusual: lines the fast path must hand to
// encoding/json, which decides (a frame or an error).
func TestDecodeFastLeavesTheUnusual(t *testing.T) {
	for _, line := range []string{
		`{"op":"send","OP":"hello","to":"n"}`,                // case-insensitive key match
		`{"op":"send","ſo":"x"}`,                             // a key that folds to an ASCII one
		`{"op":"send","id":1,"id":2,"to":"n"}`,               // repeated key: the last wins
		`{"op":"send","to":"a\u0062"}`,                       // an escape in a field
		`{"op":"send","to":"\xff"}`,                          // invalid UTF-8: replaced
		`{"op":"send","id":1.0}`,                             // not an unsigned integer
		`{"op":"send","id":-1}`,                              // nor this
		`{"op":"send","id":18446744073709551616}`,            // nor this (overflow)
		`{"op":"send","id":01}`,                              // not JSON
		`{"op":"send","id":null,"to":null,"broadcast":null}`, // null leaves fields alone
		`{"op":"send","data":[1,]}`,                          // not JSON
		`{"op":"send","data":"\x01"}`,                        // a control character
		`{"op":"send","data":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, // deep
		`{"op":"send","token":"t"}`, // a key of another op
		`{"op":"send"}x`,            // trailing bytes
		`{"op":""}`,                 // empty op
		`{"to":"n"}`,                // no op
		`{}`,
		`{"op":"send",}`,
	} {
		if _, ok := decodeFast([]byte(line)); ok {
			t.Errorf("%s: taken by the fast path", line)
		}
		sameDecode(t, []byte(line))
	}
}

// FuzzDecodeFrameFast: DecodeFrame, fast path or not, returns exactly what
// encoding/json does: the same frame or the same error.
func FuzzDecodeFrameFast(f *testing.F) {
	for _, s := range []string{
		`{"op":"send","id":12345,"to":"8b41e07c2d95f3a6b0c7d1e4f92a5c60","data":{"text":"hi"}}`,
		`{"op":"broadcast","id":1,"data":[1,"\u2028",null,-0.5e-3,true,false,{}]}`,
		`{"op":"message","from":"n2","from_name":"two","broadcast":true,"data":"x"}`,
		` { "op" : "send" , "to" : "n" , "data" : [ 1 , 2 ] } `,
		`{"op":"send","Op":"x","id":1,"id":2}`,
		`{"op":"send","to":"a\u00e9","data":"\ud800"}`,
		`{"op":"message","from":"é漢","broadcast":false,"data":null}`,
		`{"op":"send","id":18446744073709551615,"to":"n"}`,
		`{"op":"send","id":0,"data":1e400}`,
		`{"op":"send","id":1,"to":"n","bin":12        }`,
		`{"op":"message","from":"a","from_name":"b","broadcast":true,"bin":4096}`,
		`{"op":"send","bin":-1}`,
		`{"op":"send","bin":1e3}`,
		`{"op":"send","bin":99999999999,"bin":2}`,
	} {
		f.Add([]byte(s))
	}
	var d Decoder
	f.Fuzz(func(t *testing.T, line []byte) {
		sameDecode(t, line)
		// A Decoder too, twice (the second time its strings are cached).
		want, err2 := decodeFrameJSON(line)
		for range 2 {
			got, err1 := d.Decode(line)
			if fmt.Sprint(err1) != fmt.Sprint(err2) {
				t.Fatalf("%q: Decoder error %v, encoding/json %v", line, err1, err2)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%q:\nDecoder %+v\njson    %+v", line, got, want)
			}
		}
	})
}

// FuzzScanValue: appendCompactJSON writes what json.Compact writes (or
// fails as it does), and scanValue accepts exactly the valid values it can
// (all those short enough not to nest past maxFastDepth).
func FuzzScanValue(f *testing.F) {
	for _, s := range []string{
		`{"text":"hi"}`, ` [1, 2] `, `"\u2028\ud800"`, `-0.5e+10`, `01`, `[1,]`, `{"a":1,}`,
		`"\x01"`, `tru`, `nullx`, `{"a" : [ true , false , null ] }`, "\"\xff\xfe\"", `1.`, `-`, `2e`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err1 := appendCompactJSON([]byte("prefix"), data)
		var want bytes.Buffer
		want.WriteString("prefix")
		err2 := json.Compact(&want, data)
		if fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("%q: error %v, json.Compact %v", data, err1, err2)
		}
		if err1 == nil && !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("%q: got %q, json.Compact %q", data, got, want.Bytes())
		}

		end, compact, ok := scanValue(data, 0)
		valid := json.Valid(data)
		trimmed := bytes.TrimRight(data, " \t\r\n")
		switch {
		case ok && end == len(trimmed) && !valid:
			t.Fatalf("%q: scanValue accepts what encoding/json refuses", data)
		case ok && end == len(trimmed) && compact != bytes.Equal(want.Bytes()[len("prefix"):], data[:end]):
			t.Fatalf("%q: compact = %v", data, compact)
		case valid && len(data) <= maxFastDepth && len(data) > 0 && !isSpace(data[0]) && (!ok || end != len(trimmed)):
			t.Fatalf("%q: valid, but scanValue says ok=%v end=%d", data, ok, end)
		}
	})
}

func TestScanValueErrorsAreJSONs(t *testing.T) {
	for _, s := range []string{``, ` `, `[`, `{"a"}`, `"unterminated`, `[1 2]`, `1 2`} {
		_, err := appendCompactJSON(nil, []byte(s))
		if err == nil {
			t.Errorf("%q: no error", s)
		}
		var want bytes.Buffer
		if err2 := json.Compact(&want, []byte(s)); fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Errorf("%q: error %v, json.Compact %v", s, err, err2)
		}
	}
}

// TestAppendFrame: AppendFrame appends EncodeFrame's bytes for every op,
// and leaves dst as it was on error.
func TestAppendFrame(t *testing.T) {
	for _, f := range []Frame{
		{Op: OpSend, ID: 7, To: "n2", Data: json.RawMessage(`{"a": 1}`)},
		{Op: OpBroadcast, Data: json.RawMessage(`[1]`)},
		{Op: OpMessage, From: "n2", FromName: "two", Data: json.RawMessage(`"x"`)},
		{Op: OpError, ID: 3, Code: CodeNoPeer, Message: "gone"},
		{Op: OpHello, Token: "t", Protocol: 1},
	} {
		want, err := EncodeFrame(&f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendFrame([]byte("prefix"), &f)
		if err != nil || string(got) != "prefix"+string(want) {
			t.Errorf("%s: AppendFrame = %q, %v; want prefix%q", f.Op, got, err, want)
		}
	}
	for _, f := range []Frame{
		{Op: OpSend, To: "n", Data: json.RawMessage(`{`)},
		{Op: OpSessionData, Session: "s", Data: json.RawMessage(`nope`)},
	} {
		dst := []byte("prefix")
		got, err := AppendFrame(dst, &f)
		if err == nil || string(got) != "prefix" {
			t.Errorf("%s with bad data: %q, %v", f.Op, got, err)
		}
	}
}

// TestDecoderAliases: a Decoder's frame shares the line's memory (valid
// until the next Decode); DecodeFrame's never does.
func TestDecoderAliases(t *testing.T) {
	line := []byte(`{"op":"send","id":1,"to":"n2","data":{"a":1}}`)
	f1, err := DecodeFrame(line)
	if err != nil {
		t.Fatal(err)
	}
	var d Decoder
	f2, err := d.Decode(line)
	if err != nil {
		t.Fatal(err)
	}
	copy(line[len(line)-8:], `{"b":2}`)
	if string(f1.Data) != `{"a":1}` || f1.To != "n2" {
		t.Errorf("DecodeFrame's frame changed with the line: %+v", f1)
	}
	if string(f2.Data) != `{"b":2}` || f2.To != "n2" {
		t.Errorf("Decoder's data %s, to %q: want the line's bytes, and a string of its own", f2.Data, f2.To)
	}
	f3, err := d.Decode([]byte(`{"op":"broadcast","data":2}`))
	if err != nil || f3.Op != OpBroadcast || f3.To != "" || f3.ID != 0 || string(f3.Data) != "2" {
		t.Errorf("second Decode: %+v, %v (nothing may be left of the first)", f3, err)
	}
}

func TestMarshalData(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want string
	}{
		{json.RawMessage(`{"a":1}`), `{"a":1}`},
		{json.RawMessage(` {"a": [1, 2]} `), `{"a":[1,2]}`},
		{json.RawMessage(nil), `null`},
		{"<é\n\u2028>", `"<é\n\u2028>"`},
		{map[string]int{"b": 2}, `{"b":2}`},
	} {
		got, err := marshalData(tt.in)
		if err != nil || string(got) != tt.want {
			t.Errorf("marshalData(%#v) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []json.RawMessage{{}, json.RawMessage(`{`), json.RawMessage(`1 2`)} {
		_, err1 := marshalData(bad)
		_, err2 := marshal(bad)
		if err1 == nil || fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Errorf("marshalData(%q): %v, marshal: %v", bad, err1, err2)
		}
	}
}

// FuzzMarshalData: marshalData writes what encoding/json writes (marshal),
// for raw JSON and for strings, and fails as it does.
func FuzzMarshalData(f *testing.F) {
	for _, s := range []string{`{"a":1}`, ` [1, 2] `, `"\u2028"`, "<&>\xff\n", ``, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{json.RawMessage(b), string(b)} {
			got, err1 := marshalData(v)
			want, err2 := marshal(v)
			if fmt.Sprint(err1) != fmt.Sprint(err2) || !bytes.Equal(got, want) {
				t.Fatalf("%T %q: marshalData %q, %v; marshal %q, %v", v, b, got, err1, want, err2)
			}
		}
	})
}

// FuzzBin: CheckBin accepts exactly the blocks that BinItems walks to the
// end and AppendBin writes back byte for byte; AppendBinAsBatch turns an
// accepted block into a JSON array of its messages when every one is JSON,
// and fails otherwise.
func FuzzBin(f *testing.F) {
	for _, msgs := range [][]string{{"a"}, {"", "\x00\n"}, {"1", `{"a":[1]}`, " 2 "}, {"x", "nope"}} {
		var b []byte
		for _, m := range msgs {
			b = AppendBin(b, []byte(m))
		}
		f.Add(b)
	}
	f.Add([]byte("\x00\x00\x00\x09short"))
	f.Add([]byte("\x00\x00\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, block []byte) {
		n, err := CheckBin(block)
		var items [][]byte
		for m := range BinItems(block) {
			items = append(items, m)
		}
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("CheckBin error %v does not wrap ErrBadFrame", err)
			}
			var re []byte
			for _, m := range items {
				re = AppendBin(re, m)
			}
			if len(block) > 0 && bytes.Equal(re, block) {
				t.Fatalf("CheckBin refused %q, which BinItems walks to its end", block)
			}
			return
		}
		if n != len(items) || n == 0 {
			t.Fatalf("CheckBin says %d messages, BinItems yields %d", n, len(items))
		}
		var re []byte
		allJSON := true
		for _, m := range items {
			re = AppendBin(re, m)
			allJSON = allJSON && json.Valid(m)
		}
		if !bytes.Equal(re, block) {
			t.Fatalf("the messages of %q write back as %q", block, re)
		}
		out, k, err := AppendBinAsBatch([]byte("pre"), block)
		if (err == nil) != allJSON {
			t.Fatalf("AppendBinAsBatch error %v, every message JSON: %v", err, allJSON)
		}
		if err != nil {
			if !errors.Is(err, ErrBadFrame) || string(out) != "pre" {
				t.Fatalf("AppendBinAsBatch failed with %v and %q", err, out)
			}
			return
		}
		var vals []json.RawMessage
		if k != n || json.Unmarshal(out[3:], &vals) != nil || len(vals) != n {
			t.Fatalf("AppendBinAsBatch wrote %q (%d messages) for %d", out, k, n)
		}
		for i, v := range vals {
			var c bytes.Buffer
			if json.Compact(&c, items[i]) != nil || !bytes.Equal(c.Bytes(), v) {
				t.Fatalf("message %d: %s in the batch, %q in the block", i, v, items[i])
			}
		}
	})
}
