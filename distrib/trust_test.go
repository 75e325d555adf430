package distrib

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestTrustStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trust.json")
	ts, err := OpenTrust(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ts.Get("chat"); ok {
		t.Fatal("empty store has a pin")
	}
	a, b := signerOf(newKey(t)), signerOf(newKey(t))
	if err := ts.Pin("chat", a); err != nil {
		t.Fatal(err)
	}
	if err := ts.Pin("draw", b); err != nil {
		t.Fatal(err)
	}
	if err := ts.Pin("chat", b); err != nil { // an explicit pin replaces
		t.Fatal(err)
	}
	if err := ts.Pin("Bad", a); err == nil {
		t.Error("pinned an invalid name")
	}
	if err := ts.Pin("chat", "ed25519:nope"); err == nil {
		t.Error("pinned an invalid signer")
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("trust file: %v %v", fi, err)
	}
	ts2, err := OpenTrust(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ts2.List(), map[string]string{"chat": b, "draw": b}; !reflect.DeepEqual(got, want) {
		t.Fatalf("reloaded pins %v, want %v", got, want)
	}
	if err := ts2.Unpin("chat"); err != nil {
		t.Fatal(err)
	}
	if err := ts2.Unpin("never"); err != nil {
		t.Fatal(err)
	}
	ts3, _ := OpenTrust(p)
	if _, ok := ts3.Get("chat"); ok {
		t.Fatal("unpin did not persist")
	}
	l := ts3.List()
	l["x"] = a
	if _, ok := ts3.Get("x"); ok {
		t.Fatal("List returned the internal map")
	}
}

func TestOpenTrustErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":    "not json",
		"unknown":    `{"pins":{},"extra":1}`,
		"bad name":   `{"pins":{"Chat":"` + signerOf(newKey(t)) + `"}}`,
		"bad signer": `{"pins":{"chat":"ed25519:xyz"}}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := OpenTrust(p); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}
