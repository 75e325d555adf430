package fsutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "f")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "two" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("got %q %v", b, fi.Mode())
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	q := filepath.Join(filepath.Dir(p), "g")
	if err := CopyFileAtomic(p, q, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(q); string(b) != "two" {
		t.Fatalf("copy: %q", b)
	}
	if err := CopyFileAtomic(filepath.Join(t.TempDir(), "missing"), q, 0o644); err == nil {
		t.Fatal("copy of a missing file succeeded")
	}
}

func TestLogRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	l := &Log{Path: p, Max: 100}
	for range 30 {
		l.WriteString("0123456789\n")
	}
	l.Close()
	cur, _ := os.ReadFile(p)
	old, _ := os.ReadFile(p + ".1")
	// 30 lines of 11 bytes: rotated after every 9 lines; one old file kept.
	if len(cur) != 3*11 || len(old) != 9*11 || !strings.HasPrefix(string(cur), "0123") {
		t.Fatalf("current %d bytes, old %d bytes", len(cur), len(old))
	}
	// A log in a directory that cannot be written never fails the writer.
	bad := &Log{Path: filepath.Join(p, "nope", "x.log"), Max: 10}
	if n, err := bad.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
}
