package subservice

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// refBatch is what encoding/json makes of a batch: its values, compacted,
// and whether it is a batch at all (a JSON array of at least one value).
func refBatch(batch []byte) (items []string, ok bool) {
	var raw []json.RawMessage
	if json.Unmarshal(batch, &raw) != nil || len(raw) == 0 {
		return nil, false
	}
	for _, r := range raw {
		var b bytes.Buffer
		if err := json.Compact(&b, r); err != nil {
			panic(err) // Unmarshal checked it
		}
		items = append(items, b.String())
	}
	return items, true
}

// compactOf is json.Compact of b, or "" when b is not one JSON value.
func compactOf(b []byte) string {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return ""
	}
	return out.String()
}

// itemsOf collects BatchItems, each compacted.
func itemsOf(batch []byte) []string {
	var out []string
	for d := range BatchItems(batch) {
		out = append(out, compactOf(d))
	}
	return out
}

// checkBatch fails t unless AppendBatch, BatchItems and the Decoder's
// BatchLen agree with encoding/json on batch.
func checkBatch(t *testing.T, batch []byte) {
	t.Helper()
	want, ok := refBatch(batch)

	got, n, err := AppendBatch([]byte("prefix"), batch)
	switch {
	case ok && err != nil:
		t.Fatalf("%q: AppendBatch failed (%v) on a batch encoding/json accepts", batch, err)
	case !ok && err == nil:
		t.Fatalf("%q: AppendBatch accepted (n=%d) what encoding/json does not take as a batch", batch, n)
	case !ok && (!errors.Is(err, ErrBadFrame) || string(got) != "prefix"):
		t.Fatalf("%q: AppendBatch = %q, %v: want dst unchanged and an error wrapping ErrBadFrame", batch, got, err)
	case ok && (n != len(want) || string(got) != "prefix"+compactOf(batch)):
		t.Fatalf("%q: AppendBatch = %q, %d; want prefix%s, %d", batch, got, n, compactOf(batch), len(want))
	}

	if items := itemsOf(batch); !reflect.DeepEqual(items, want) {
		t.Fatalf("%q: BatchItems %q, encoding/json %q", batch, items, want)
	}

	// In a frame, through a Decoder: BatchLen, when it counted, agrees.
	line := append(append([]byte(`{"op":"send","id":1,"to":"n","batch":`), batch...), '}')
	var d Decoder
	f, err := d.Decode(line)
	k, compact := d.BatchLen()
	if err != nil {
		if k != 0 {
			t.Fatalf("%q: a frame that does not decode has BatchLen %d", line, k)
		}
		return
	}
	if k > 0 {
		if !ok || k != len(want) {
			t.Fatalf("%q: BatchLen %d, encoding/json %d values (batch %v)", line, k, len(want), ok)
		}
		if compact != (compactOf(f.Batch) == string(f.Batch)) {
			t.Fatalf("%q: BatchLen says compact=%v", line, compact)
		}
	}
	if ok && k == 0 && strings.TrimSpace(string(batch)) == compactOf(batch) &&
		bytes.Count(batch, []byte("["))+bytes.Count(batch, []byte("{")) < maxFastDepth {
		// A compact, shallow batch in a frame EncodeFrame would write is
		// always counted while decoding.
		t.Fatalf("%q: BatchLen did not count a compact batch", line)
	}
}

func TestBatchCodec(t *testing.T) {
	for _, s := range []string{
		`[1]`, `[1,2,3]`, `[{"text":"hi"},"x",null,true,false,-0.5e3,[],{}]`,
		` [ 1 , [2, 3] , {"a" : [ ]} ] `, `[ ]`, `[]`, `null`, `1`, `"[1]"`, `{"0":1}`,
		`[1,]`, `[,1]`, `[1 2]`, `[1`, `[`, `]`, ``, `[1]]`, `[1] x`, `["\x01"]`,
		`[` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `]`,
		`["\u2028","é漢",` + "\"\xff\"" + `]`,
	} {
		checkBatch(t, []byte(s))
	}
}

// TestBatchErrors: the errors a plugin sees for a bad batch say what is
// wrong.
func TestBatchErrors(t *testing.T) {
	for in, want := range map[string]string{
		`[]`:    "empty batch",
		` [ ] `: "empty batch",
		`null`:  "empty batch",
		`{}`:    "not a JSON array",
		`[1,]`:  "not a JSON array",
		`7`:     "not a JSON array",
	} {
		_, _, err := AppendBatch(nil, []byte(in))
		if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), want) {
			t.Errorf("AppendBatch(%q): %v, want %q", in, err, want)
		}
	}
	if _, _, err := AppendBatchFrame(nil, &Frame{Op: OpMenu, Batch: json.RawMessage(`[1]`)}); !errors.Is(err, ErrBadFrame) {
		t.Errorf("AppendBatchFrame of a menu frame: %v", err)
	}
}

// TestBatchItemsStops: a consumer that stops early is not called again.
func TestBatchItemsStops(t *testing.T) {
	for _, batch := range []string{`[1,2,3]`, `[` + strings.Repeat("[", 80) + strings.Repeat("]", 80) + `,2,3]`} {
		var got int
		for range BatchItems([]byte(batch)) {
			got++
			if got == 2 {
				break
			}
		}
		if got != 2 {
			t.Errorf("%.20s: %d values before the break", batch, got)
		}
	}
}

// TestEncodeBatchFrames: the batch form of send, broadcast and message,
// as EncodeFrame and AppendBatchFrame write it, and back.
func TestEncodeBatchFrames(t *testing.T) {
	for _, tt := range []struct {
		f    Frame
		want string
		n    int
	}{
		{Frame{Op: OpSend, ID: 7, To: "n2", Batch: json.RawMessage(`[{"a": 1}, 2]`)}, `{"op":"send","id":7,"to":"n2","batch":[{"a":1},2]}`, 2},
		{Frame{Op: OpBroadcast, ID: 1, Batch: json.RawMessage(`["x"]`)}, `{"op":"broadcast","id":1,"batch":["x"]}`, 1},
		{Frame{Op: OpMessage, From: "n2", FromName: "two", Broadcast: true, Batch: json.RawMessage(`[1,2,3]`)},
			`{"op":"message","from":"n2","from_name":"two","broadcast":true,"batch":[1,2,3]}`, 3},
		// Batch wins over Data.
		{Frame{Op: OpSend, To: "n2", Data: json.RawMessage(`0`), Batch: json.RawMessage(`[1,2]`)}, `{"op":"send","to":"n2","batch":[1,2]}`, 2},
	} {
		b, err := EncodeFrame(&tt.f)
		if err != nil || string(b) != tt.want+"\n" {
			t.Errorf("EncodeFrame = %q, %v; want %s", b, err, tt.want)
		}
		slow, err := encodeGeneric(&tt.f)
		if err != nil || string(slow) != tt.want+"\n" {
			t.Errorf("encoding/json = %q, %v; want %s", slow, err, tt.want)
		}
		b, n, err := AppendBatchFrame([]byte("x"), &tt.f)
		if err != nil || string(b) != "x"+tt.want+"\n" || n != tt.n {
			t.Errorf("AppendBatchFrame = %q, %d, %v; want %s, %d", b, n, err, tt.want, tt.n)
		}
		var d Decoder
		f, err := d.Decode([]byte(tt.want))
		if k, compact := d.BatchLen(); err != nil || k != tt.n || !compact || f.Data != nil {
			t.Errorf("%s: decoded %+v, %v; BatchLen %d %v", tt.want, f, err, k, compact)
		}
	}
	// A welcome with the feature, and a hello asking for it.
	w := Frame{Op: OpWelcome, Protocol: 1, Node: &Peer{ID: "n1", Name: "one"}, Subservice: "chat", Version: "1.0.0", MaxLine: 1024,
		Features: []string{FeatureBatch}, MaxBatch: 64}
	b, _ := EncodeFrame(&w)
	if want := `{"op":"welcome","protocol":1,"node":{"id":"n1","name":"one"},"subservice":"chat","version":"1.0.0","peers":[],"max_line":1024,"features":["batch"],"max_batch":64}` + "\n"; string(b) != want {
		t.Errorf("welcome %s, want %s", b, want)
	}
	h := Frame{Op: OpHello, Token: "t", Protocol: 1, Features: []string{FeatureBatch}}
	b, _ = EncodeFrame(&h)
	if want := `{"op":"hello","token":"t","protocol":1,"features":["batch"]}` + "\n"; string(b) != want {
		t.Errorf("hello %s, want %s", b, want)
	}
	e := Frame{Op: OpError, ID: 5, Count: 3, Code: CodeNoSubservice, Message: "m", To: "n2"}
	b, _ = EncodeFrame(&e)
	if want := `{"op":"error","id":5,"count":3,"code":"no-subservice","message":"m","to":"n2"}` + "\n"; string(b) != want {
		t.Errorf("error %s, want %s", b, want)
	}
}

// TestReadLoopBatchSpans: the fast decoder's spans for a batch are its
// values, in the batch's own memory, even when the frame is reused.
func TestReadLoopBatchSpans(t *testing.T) {
	bi := batchInfo{spans: make([]int, 0, 4)}
	for _, tt := range []struct {
		line string
		want []string
	}{
		{`{"op":"message","from":"a","from_name":"A","broadcast":false,"batch":[1,{"b":[2]},"c"]}`, []string{`1`, `{"b":[2]}`, `"c"`}},
		{`{"op":"message","from":"a","from_name":"A","broadcast":true,"batch":[ 4 , 5 ]}`, []string{`4`, `5`}},
		{`{"op":"message","from":"a","from_name":"A","broadcast":true,"batch":[6]}`, []string{`6`}},
	} {
		var f Frame
		bi.n, bi.compact = 0, false
		if !decodeFastInto([]byte(tt.line), &f, nil, false, &bi) {
			t.Fatalf("%s: not decoded", tt.line)
		}
		var got []string
		for k := 0; k+1 < len(bi.spans) && bi.n > 0; k += 2 {
			got = append(got, string(f.Batch[bi.spans[k]:bi.spans[k+1]]))
		}
		if !reflect.DeepEqual(got, tt.want) || bi.n != len(tt.want) {
			t.Errorf("%s: values %q (n %d), want %q", tt.line, got, bi.n, tt.want)
		}
	}
}

// FuzzBatch: AppendBatch and BatchItems make of a batch exactly what
// encoding/json does (the same values, compacted; the same verdict), and
// a Decoder's BatchLen, whenever it counts, agrees with them.
func FuzzBatch(f *testing.F) {
	for _, s := range []string{
		`[1]`, `[{"text":"hi"},"x",null,true,false,-0.5e3,[],{}]`, ` [ 1 , [2, 3] , {"a" : [ ]} ] `,
		`[]`, `null`, `[1,]`, `[1 2]`, `["\u2028","é",` + "\"\xff\"" + `]`, `[` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, batch []byte) {
		checkBatch(t, batch)
	})
}

// FuzzBatchFrame: a batch frame that AppendBatchFrame writes is what
// EncodeFrame writes for it, one line, and decodes (by DecodeFrame and by
// a Decoder, which counts it) to the same frame with the batch compacted;
// one it refuses leaves dst alone with an error wrapping ErrBadFrame.
func FuzzBatchFrame(f *testing.F) {
	f.Add(uint8(0), uint64(7), "8b41e07c2d95f3a6b0c7d1e4f92a5c60", "bravo", true, []byte(`[{"text": "hi <b>&"}, 2]`))
	f.Add(uint8(1), uint64(0), "\x00\"\\\u2028", "\xff", false, []byte(` [1, "\u2028", null] `))
	f.Add(uint8(2), uint64(1<<63), "é漢字", "", true, []byte(`[]`))
	f.Add(uint8(2), uint64(1), "n", "x", false, []byte(`{"a":1}`))
	f.Fuzz(func(t *testing.T, op uint8, id uint64, s1, s2 string, b bool, batch []byte) {
		fr := &Frame{Op: []string{OpSend, OpBroadcast, OpMessage}[op%3], ID: id, To: s1, From: s1, FromName: s2, Broadcast: b, Batch: batch}
		switch fr.Op {
		case OpBroadcast:
			fr.To, fr.From, fr.FromName, fr.Broadcast = "", "", "", false
		case OpSend:
			fr.From, fr.FromName, fr.Broadcast = "", "", false
		case OpMessage:
			fr.ID, fr.To = 0, ""
		}
		want, ok := refBatch(batch)
		line, n, err := AppendBatchFrame([]byte("prefix"), fr)
		if !ok {
			if err == nil || !errors.Is(err, ErrBadFrame) || string(line) != "prefix" {
				t.Fatalf("%q: AppendBatchFrame = %q, %v; want dst unchanged and ErrBadFrame", batch, line, err)
			}
			return
		}
		if err != nil || n != len(want) {
			t.Fatalf("%q: AppendBatchFrame n=%d, %v; want %d values", batch, n, err, len(want))
		}
		line = line[len("prefix"):]
		if enc, err := EncodeFrame(fr); err != nil || !bytes.Equal(enc, line) {
			t.Fatalf("AppendBatchFrame %q\nEncodeFrame     %q (%v)", line, enc, err)
		}
		if bytes.IndexByte(line[:len(line)-1], '\n') >= 0 || line[len(line)-1] != '\n' {
			t.Fatalf("not one line: %q", line)
		}
		back, err := DecodeFrame(line[:len(line)-1])
		if err != nil {
			t.Fatalf("%q does not decode: %v", line, err)
		}
		wantFrame := *fr
		wantFrame.Batch = json.RawMessage(compactOf(batch))
		// Strings come back as encoding/json reads what it wrote.
		ref, _ := decodeFrameJSON(line[:len(line)-1])
		wantFrame.To, wantFrame.From, wantFrame.FromName = ref.To, ref.From, ref.FromName
		if !reflect.DeepEqual(*back, wantFrame) {
			t.Fatalf("round trip:\ngot  %+v\nwant %+v", *back, wantFrame)
		}
		var d Decoder
		if _, err := d.Decode(line[:len(line)-1]); err != nil {
			t.Fatal(err)
		}
		if k, compact := d.BatchLen(); k != 0 && (k != n || !compact) {
			t.Fatalf("%q: BatchLen %d %v, want %d true", line, k, compact, n)
		}
		if got := itemsOf(back.Batch); !reflect.DeepEqual(got, want) {
			t.Fatalf("values %q, want %q", got, want)
		}
	})
}
