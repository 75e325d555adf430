package distrib

import (
	"fmt"
	"testing"
)

func entries(pairs ...string) []IndexEntry {
	var out []IndexEntry
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, IndexEntry{Name: pairs[i], Version: pairs[i+1], File: pairs[i] + "-" + pairs[i+1] + ArchiveExt})
	}
	return out
}

func TestNewest(t *testing.T) {
	es := entries("chat", "1.2.0", "chat", "1.10.0", "chat", "2.0.0-rc.1", "chat", "1.9.9", "other", "9.0.0", "chat", "bogus", "chat", "0.1.0")
	tests := []struct {
		constraint string
		pre        bool
		want       string // "" for none
	}{
		{"", false, "1.10.0"},
		{"", true, "2.0.0-rc.1"},
		{"1.2.0", false, "1.2.0"},
		{"2.0.0-rc.1", false, "2.0.0-rc.1"}, // an exact prerelease is always allowed
		{"^1.2", false, "1.10.0"},
		{"~1.9", false, "1.9.9"},
		{"<1.0.0", false, "0.1.0"},
		{">=2.0.0-0", false, "2.0.0-rc.1"}, // the constraint names a prerelease
		{">=2.0.0", true, ""},
		{"3.0.0", false, ""},
		{"not a constraint!", false, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/pre=%v", tt.constraint, tt.pre), func(t *testing.T) {
			e, ok := Newest(es, "chat", tt.constraint, tt.pre)
			if tt.want == "" {
				if ok {
					t.Fatalf("got %s, want none", e.Version)
				}
				return
			}
			if !ok || e.Version != tt.want {
				t.Fatalf("got %q (%v), want %q", e.Version, ok, tt.want)
			}
		})
	}
	if _, ok := Newest(es, "missing", "", true); ok {
		t.Error("found an entry for a missing name")
	}
}

func TestNewestTieBreakIsOrderIndependent(t *testing.T) {
	a := IndexEntry{Name: "chat", Version: "1.0.0", File: "chat-1.0.0.tar.gz", SHA256: "bb"}
	b := IndexEntry{Name: "chat", Version: "1.0.0", File: "chat-1.0.0.tar.gz", SHA256: "aa"}
	c := IndexEntry{Name: "chat", Version: "1.0.0", File: "chat-1.0.0.tar.gz", SHA256: "cc", Signer: "ed25519:x"}
	for _, order := range [][]IndexEntry{{a, b, c}, {c, b, a}, {b, c, a}} {
		if e, _ := Newest(order, "chat", "", false); e.SHA256 != "cc" {
			t.Errorf("order %v: got %s, want the signed entry", order, e.SHA256)
		}
	}
	if e, _ := Newest([]IndexEntry{a, b}, "chat", "", false); e.SHA256 != "aa" {
		t.Errorf("got %s, want the lowest sha256", e.SHA256)
	}
}

func TestCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.0.0", "1.0.1", -1},
		{"1.10.0", "1.9.0", 1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.0.0-rc.2", "1.0.0-rc.10", -1},
		{"1.0.0+a", "1.0.0+b", 0},
		{"bogus", "0.0.1", -1},
		{"0.0.1", "bogus", 1},
		{"a", "b", -1},
	}
	for _, tt := range tests {
		if got := Compare(tt.a, tt.b); got != tt.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
