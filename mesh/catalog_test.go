package mesh

import (
	"strings"
	"testing"
)

func TestCatalogDigest(t *testing.T) {
	a := CatalogEntry{Name: "chat", Version: "1.2.0", SHA256: "aa", Size: 100, Mode: "local"}
	b := CatalogEntry{Name: "draw", Version: "0.3.1", SHA256: "bb", Size: 200, Mode: "hosted", Label: "Draw"}
	if d := (Catalog{}).Digest(); d != "" {
		t.Errorf("empty catalog digest %q", d)
	}
	ab := Catalog{Entries: []CatalogEntry{a, b}}.Digest()
	ba := Catalog{Entries: []CatalogEntry{b, a}}.Digest()
	if ab != ba || len(ab) != 16 {
		t.Errorf("digests %q %q", ab, ba)
	}
	// Stable across runs and nodes: a fixed value.
	if want := "7eb472259677d24b"; ab != want {
		t.Errorf("digest is %s, was %s: the digest must never change", ab, want)
	}
	// Every field counts, and field boundaries are unambiguous.
	variants := []CatalogEntry{
		{Name: "chat", Version: "1.2.1", SHA256: "aa", Size: 100, Mode: "local"},
		{Name: "chat", Version: "1.2.0", SHA256: "ab", Size: 100, Mode: "local"},
		{Name: "chat", Version: "1.2.0", SHA256: "aa", Size: 101, Mode: "local"},
		{Name: "chat", Version: "1.2.0", SHA256: "aa", Size: 100, Mode: "hosted"},
		{Name: "chat", Version: "1.2.0", SHA256: "aa", Size: 100, Mode: "local", Signer: "s"},
		{Name: "chat", Version: "1.2.0", SHA256: "aa", Size: 100, Mode: "local", Description: "d"},
		{Name: "chat", Version: "1.2.0", SHA256: "aa", Size: 100, Mode: "local", Label: "l"},
		{Name: "chat1", Version: ".2.0", SHA256: "aa", Size: 100, Mode: "local"},
	}
	seen := map[string]bool{Catalog{Entries: []CatalogEntry{a}}.Digest(): true}
	for _, v := range variants {
		d := Catalog{Entries: []CatalogEntry{v}}.Digest()
		if seen[d] {
			t.Errorf("digest collision for %+v", v)
		}
		seen[d] = true
	}
}

func TestCatalogNormalize(t *testing.T) {
	long := strings.Repeat("x", 300)
	c := Catalog{Entries: []CatalogEntry{
		{Name: long, Version: "1.0.0"},
		{Name: "ok", Version: "1.0.0", Description: strings.Repeat("é", 40000)},
	}}
	n, dropped := c.Normalize()
	if dropped != 1 || len(n.Entries) != 1 || n.Entries[0].Name != "ok" {
		t.Fatalf("normalized to %d entries, dropped %d", len(n.Entries), dropped)
	}
	d := n.Entries[0].Description
	if len(d) > maxLongField || !strings.HasSuffix(d, "é") {
		t.Errorf("description cut to %d bytes, ends %q", len(d), d[len(d)-2:])
	}
	if n.Digest() != c.Digest() {
		t.Error("digest of a catalog and its normal form differ")
	}
	got, err := decodeCatalog(encodeCatalog(n))
	if err != nil || !got.Equal(n) {
		t.Fatalf("round trip: %v", err)
	}
}
