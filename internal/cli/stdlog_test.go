package cli

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"testing"
)

// TestStdLogRouted: lines a library writes with the standard log package
// come out as structured records (one JSON object per line with
// --log-json), not as free text in the middle of them.
func TestStdLogRouted(t *testing.T) {
	var buf bytes.Buffer
	defer log.SetOutput(log.Writer())
	defer log.SetFlags(log.Flags())
	routeStdLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	log.Println("[ERR] zeroconf: failed to send probe: write udp4: no route")
	log.Printf("[zeroconf] no suitable IPv6 interface: %s", "none")
	log.Print("something else")

	var got []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		got = append(got, m)
	}
	want := []struct{ msg, component string }{
		{"failed to send probe: write udp4: no route", "zeroconf"},
		{"no suitable IPv6 interface: none", "zeroconf"},
		{"something else", "library"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if got[i]["msg"] != w.msg || got[i]["component"] != w.component || got[i]["level"] != "WARN" {
			t.Errorf("record %d: %v, want msg %q component %q level WARN", i, got[i], w.msg, w.component)
		}
	}
}
