package session

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	msgs := []struct {
		typ byte
		v   any
	}{
		{frameOpen, &Request{V: 1, Plugin: "rev", Version: "1.0.0"}},
		{frameOpened, &Opened{Session: newID(), Plugin: "rev", Version: "1.0.0", Host: hostPeer, Window: 4096, Started: time.Unix(1700000000, 5).UTC()}},
		{frameRefused, &Refusal{Code: RefuseLimit, Error: "full", Hint: "wait"}},
		{frameEnd, &End{Code: CodeCrashed, Reason: "the program ended", Exit: "signal: killed"}},
		{frameCtl, &CtlRequest{V: 1, Op: CtlWrite, Session: newID(), Data: []byte{0, 1, 2, 255}}},
		{frameCtlAnswer, &CtlAnswer{Refusal: &Refusal{Code: RefuseNotPresenter, Error: "no"}}},
		{frameCtlAnswer, &CtlAnswer{OK: true}},
	}
	var stream []byte
	for _, m := range msgs {
		stream = append(stream, encodeJSON(m.typ, m.v)...)
	}
	stream = appendFrame(stream, frameData, []byte("raw \x00 bytes"))
	stream = append(stream, windowFrame(12345)...)
	stream = appendFrame(stream, frameEOF, nil)

	fr := newFrameReader(bytes.NewReader(stream))
	for _, m := range msgs {
		typ, body, err := fr.next()
		if err != nil || typ != m.typ {
			t.Fatalf("frame %T: type 0x%02x, %v", m.v, typ, err)
		}
		got, err := decodeBody(typ, body)
		if err != nil {
			t.Fatalf("decode %T: %v", m.v, err)
		}
		if !reflect.DeepEqual(got, m.v) {
			t.Fatalf("round trip: got %+v, want %+v", got, m.v)
		}
	}
	if typ, body, _ := fr.next(); typ != frameData || string(body) != "raw \x00 bytes" {
		t.Fatalf("data frame: 0x%02x %q", typ, body)
	}
	if typ, body, _ := fr.next(); typ != frameWindow {
		t.Fatalf("window frame: 0x%02x", typ)
	} else if n, err := decodeWindow(body); n != 12345 || err != nil {
		t.Fatalf("window %d %v", n, err)
	}
	if typ, body, _ := fr.next(); typ != frameEOF || len(body) != 0 {
		t.Fatalf("eof frame: 0x%02x", typ)
	}
	if _, _, err := fr.next(); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
}

// decodeBody decodes a frame body by type (nil for types without JSON).
func decodeBody(typ byte, body []byte) (any, error) {
	switch typ {
	case frameOpen:
		return decodeJSON[Request](body)
	case frameOpened:
		return decodeJSON[Opened](body)
	case frameRefused:
		return decodeJSON[Refusal](body)
	case frameEnd:
		return decodeJSON[End](body)
	case frameCtl:
		return decodeJSON[CtlRequest](body)
	case frameCtlAnswer:
		return decodeJSON[CtlAnswer](body)
	case frameWindow:
		return decodeWindow(body)
	}
	return nil, nil
}

func TestFrameErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"unknown type":  {[]byte{0x7f, 0, 0, 0, 0}, ErrProtocol},
		"oversized":     {[]byte{frameData, 0, 1, 0, 1}, ErrProtocol},
		"short header":  {[]byte{frameData, 0}, io.ErrUnexpectedEOF},
		"short body":    {[]byte{frameData, 0, 0, 0, 4, 'a'}, io.ErrUnexpectedEOF},
		"empty":         {nil, io.EOF},
		"bad window":    {windowFrame(0), ErrProtocol},
		"window length": {appendFrame(nil, frameWindow, []byte{1}), ErrProtocol},
	} {
		t.Run(name, func(t *testing.T) {
			fr := newFrameReader(bytes.NewReader(tc.in))
			typ, body, err := fr.next()
			if err == nil {
				_, err = decodeBody(typ, body)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	for name, body := range map[string]string{
		"opened bad id":     `{"session":"xyz","plugin":"rev","window":1}`,
		"opened no window":  `{"session":"` + strings.Repeat("a", 32) + `","plugin":"rev"}`,
		"end without code":  `{"reason":"x"}`,
		"answer both":       `{"ok":true,"refusal":{"code":"x","error":"y"}}`,
		"answer neither":    `{"ok":false}`,
		"request bad name":  `{"v":1,"plugin":"../etc"}`,
		"request not json":  `nope`,
		"ctl close w/ data": `{"v":1,"op":"close","session":"` + strings.Repeat("a", 32) + `","data":"AA=="}`,
	} {
		var typ byte
		switch {
		case strings.HasPrefix(name, "opened"):
			typ = frameOpened
		case strings.HasPrefix(name, "end"):
			typ = frameEnd
		case strings.HasPrefix(name, "answer"):
			typ = frameCtlAnswer
		case strings.HasPrefix(name, "request"):
			typ = frameOpen
		default:
			typ = frameCtl
		}
		if _, err := decodeBody(typ, []byte(body)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
}

// FuzzFrames: any byte stream is read as frames without panicking, every
// body that decodes re-encodes to something that decodes to the same
// value, and every frame re-encodes to its own bytes.
func FuzzFrames(f *testing.F) {
	f.Add(encodeJSON(frameOpen, Request{V: 1, Plugin: "rev"}))
	f.Add(append(encodeJSON(frameOpened, Opened{Session: strings.Repeat("0", 32), Plugin: "a", Window: 10}), windowFrame(7)...))
	f.Add(append(appendFrame(nil, frameData, []byte("x")), encodeJSON(frameEnd, End{Code: "exited", Reason: "r"})...))
	f.Add(encodeJSON(frameCtl, CtlRequest{V: 1, Op: "write", Session: strings.Repeat("f", 32), Data: []byte("hi")}))
	f.Add([]byte{0x14, 0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := newFrameReader(bytes.NewReader(in))
		for range 64 {
			typ, body, err := fr.next()
			if err != nil {
				return
			}
			if !bytes.Equal(appendFrame(nil, typ, body), in[:headerLen+len(body)]) {
				t.Fatalf("frame 0x%02x does not re-encode to its bytes", typ)
			}
			in = in[headerLen+len(body):]
			v, err := decodeBody(typ, body)
			if err != nil || v == nil {
				continue
			}
			if n, ok := v.(int); ok {
				if m, err := decodeWindow(windowFrame(n)[headerLen:]); err != nil || m != n {
					t.Fatalf("window %d -> %d %v", n, m, err)
				}
				continue
			}
			again, err := decodeBody(typ, encodeJSON(typ, v)[headerLen:])
			if err != nil {
				t.Fatalf("re-encoded %T does not decode: %v", v, err)
			}
			if !reflect.DeepEqual(normalize(again), normalize(v)) {
				t.Fatalf("round trip %+v -> %+v", v, again)
			}
		}
	})
}

// normalize makes values that JSON cannot tell apart equal (nil and empty
// byte slices, time zones).
func normalize(v any) any {
	switch x := v.(type) {
	case *CtlRequest:
		c := *x
		if len(c.Data) == 0 {
			c.Data = nil
		}
		return c
	case *Opened:
		o := *x
		o.Started = o.Started.UTC()
		return o
	}
	return v
}
