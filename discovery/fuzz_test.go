package discovery

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeRecord feeds DecodeRecord arbitrary TXT strings (one per line
// of the input) and checks that it never panics, that its errors wrap the
// package's sentinels, and that whatever it accepts encodes within the
// limits and decodes back to the same record (minus the subservices that
// did not fit, which are counted in More).
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []Record{testRecord(1), {Proto: 1, NodeID: testID(9), Name: "é", MeshID: testMesh, More: 3}} {
		txt, err := r.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.Join(txt, "\n"))
	}
	f.Fuzz(func(t *testing.T, in string) {
		txt := strings.Split(in, "\n")
		r, err := DecodeRecord(txt)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) && !errors.Is(err, ErrProtoVersion) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			return
		}
		out, err := r.Encode()
		if err != nil {
			t.Fatalf("decoded record %+v does not encode: %v", r, err)
		}
		if n := txtSize(out); n > MaxTXTBytes {
			t.Fatalf("encoded TXT is %d bytes", n)
		}
		for _, s := range out {
			if len(s) > MaxTXTString {
				t.Fatalf("encoded string of %d bytes", len(s))
			}
		}
		back, err := DecodeRecord(out)
		if err != nil {
			t.Fatalf("re-decode %q: %v", out, err)
		}
		k := len(back.Subservices)
		if k > len(r.Subservices) || !slices.Equal(back.Subservices, r.Subservices[:k]) {
			t.Fatalf("subservices %v are not a prefix of %v", back.Subservices, r.Subservices)
		}
		if back.More != r.More+len(r.Subservices)-k {
			t.Fatalf("more=%d, want %d", back.More, r.More+len(r.Subservices)-k)
		}
		back.Subservices, back.More = r.Subservices, r.More
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip: %+v, want %+v", back, r)
		}
	})
}
