package distrib

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExtract(t *testing.T) {
	data := tarGz(t, []ent{
		{name: "./nearby.json", body: manifestJSON("x", "1.0.0")},
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/tool", typ: tar.TypeSymlink, link: "../lib/tool.sh"},
		{name: "lib/tool.sh", body: "#!/bin/sh\n", mode: 0o4777}, // setuid and world-write dropped
		{name: "lib/same.sh", typ: tar.TypeLink, link: "lib/tool.sh"},
		{name: "lib/self", typ: tar.TypeSymlink, link: "."},
		{name: "readme", body: "hi", mode: 0o600},
		{name: "deep/er/file", body: "implicit parents"},
	})
	dst := filepath.Join(t.TempDir(), "out")
	if err := Extract(bytes.NewReader(data), dst, Limits{}); err != nil {
		t.Fatal(err)
	}
	check := func(rel string, mode os.FileMode, body string) {
		t.Helper()
		p := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
		}
		if body != "" {
			if b, _ := os.ReadFile(p); string(b) != body {
				t.Errorf("%s: %q, want %q", rel, b, body)
			}
		}
	}
	check("nearby.json", 0o644, manifestJSON("x", "1.0.0"))
	check("lib/tool.sh", 0o755, "#!/bin/sh\n")
	check("readme", 0o644, "hi")
	check("deep/er/file", 0o644, "implicit parents")
	if l, _ := os.Readlink(filepath.Join(dst, "bin/tool")); l != "../lib/tool.sh" {
		t.Errorf("symlink target %q", l)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "bin/tool")); err != nil || string(b) != "#!/bin/sh\n" {
		t.Errorf("through symlink: %q %v", b, err)
	}
	a, _ := os.Stat(filepath.Join(dst, "lib/tool.sh"))
	b, _ := os.Stat(filepath.Join(dst, "lib/same.sh"))
	if !os.SameFile(a, b) {
		t.Error("hard link is not the same file")
	}
}

func TestExtractHostile(t *testing.T) {
	zeros := func(n int) string { return string(make([]byte, n)) }
	many := func(n int, size int) []ent {
		var es []ent
		for i := 0; i < n; i++ {
			es = append(es, ent{name: "f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)), body: zeros(size)})
		}
		return es
	}
	good := tarGz(t, goodEnts("x", "1.0.0"))
	truncatedTar := append(rawBlock("big", '0', 4096, ""), make([]byte, 100)...)
	dirWithData := append(append(rawBlock("d/", '5', 512, ""), make([]byte, 512)...), make([]byte, 1024)...)
	small := Limits{MaxFiles: 20, MaxFileBytes: 1 << 20, MaxTotalBytes: 4 << 20}
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"dotdot", tarGz(t, []ent{{name: "../evil", body: "x"}}), Limits{}, ErrUnsafePath},
		{"nested dotdot", tarGz(t, []ent{{name: "a/../../evil", body: "x"}}), Limits{}, ErrUnsafePath},
		{"dotdot dir", tarGz(t, []ent{{name: "../d/", typ: tar.TypeDir}}), Limits{}, ErrUnsafePath},
		{"absolute", tarGz(t, []ent{{name: "/tmp/evil", body: "x"}}), Limits{}, ErrUnsafePath},
		{"drive letter", tarGz(t, []ent{{name: "C:/evil", body: "x"}}), Limits{}, ErrUnsafePath},
		{"backslash", tarGz(t, []ent{{name: `..\evil`, body: "x"}}), Limits{}, ErrUnsafePath},
		{"long pax name with dotdot", tarGz(t, []ent{{name: strings.Repeat("a/", 80) + strings.Repeat("../", 82) + "evil", body: "x"}}), Limits{}, ErrUnsafePath},
		{"root as file", gz(t, append(append(rawBlock("./", '0', 1, ""), pad512([]byte("x"))...), make([]byte, 1024)...)), Limits{}, ErrUnsafePath},
		{"symlink absolute", tarGz(t, []ent{{name: "l", typ: tar.TypeSymlink, link: "/etc"}}), Limits{}, ErrUnsafePath},
		{"symlink dotdot", tarGz(t, []ent{{name: "a/l", typ: tar.TypeSymlink, link: "../../etc"}}), Limits{}, ErrUnsafePath},
		{"symlink chain", tarGz(t, []ent{ // each lexically inside, together outside
			{name: "t", typ: tar.TypeSymlink, link: "."},
			{name: "u", typ: tar.TypeSymlink, link: "t/.."},
		}), Limits{}, ErrUnsafePath},
		{"symlink chain deeper", tarGz(t, []ent{
			{name: "d/", typ: tar.TypeDir},
			{name: "d/t", typ: tar.TypeSymlink, link: ".."},
			{name: "d/u", typ: tar.TypeSymlink, link: "t/d/t/.."},
		}), Limits{}, ErrUnsafePath},
		{"file through symlink", tarGz(t, []ent{
			{name: "l", typ: tar.TypeSymlink, link: "sub"},
			{name: "l/f", body: "x"},
		}), Limits{}, ErrUnsafePath},
		{"hardlink outside", tarGz(t, []ent{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}), Limits{}, ErrUnsafePath},
		{"hardlink absolute", tarGz(t, []ent{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}), Limits{}, ErrUnsafePath},
		{"hardlink to symlink", tarGz(t, []ent{
			{name: "l", typ: tar.TypeSymlink, link: "x"},
			{name: "h", typ: tar.TypeLink, link: "l"},
		}), Limits{}, ErrUnsafePath},
		{"hardlink forward", tarGz(t, []ent{{name: "h", typ: tar.TypeLink, link: "f"}, {name: "f", body: "x"}}), Limits{}, ErrUnsafePath},
		{"char device", tarGz(t, []ent{{name: "dev", typ: tar.TypeChar}}), Limits{}, ErrUnsafePath},
		{"block device", tarGz(t, []ent{{name: "dev", typ: tar.TypeBlock}}), Limits{}, ErrUnsafePath},
		{"fifo", tarGz(t, []ent{{name: "fifo", typ: tar.TypeFifo}}), Limits{}, ErrUnsafePath},
		{"old gnu sparse", gz(t, append(gnuBlock(rawBlock("s", 'S', 0, "")), make([]byte, 1024)...)), Limits{}, ErrUnsafePath},
		{"duplicate file", tarGz(t, []ent{{name: "f", body: "a"}, {name: "f", body: "b"}}), Limits{}, ErrUnsafePath},
		{"duplicate via dot", tarGz(t, []ent{{name: "f", body: "a"}, {name: "./f", body: "b"}}), Limits{}, ErrUnsafePath},
		{"file then dir", tarGz(t, []ent{{name: "f", body: "a"}, {name: "f/", typ: tar.TypeDir}}), Limits{}, ErrUnsafePath},
		{"dir with data", gz(t, dirWithData), Limits{}, ErrCorrupt},
		{"header claims more than present", gz(t, truncatedTar), Limits{}, ErrCorrupt},
		{"sparse header lies about size", gz(t, sparseBomb(1<<30)), small, ErrTooLarge},
		{"bomb one file", tarGz(t, []ent{{name: "zeros", body: zeros(8 << 20)}}), small, ErrTooLarge},
		{"bomb total", tarGz(t, many(8, 700<<10)), small, ErrTooLarge},
		{"too many files", tarGz(t, many(50, 0)), small, ErrTooLarge},
		{"compressed too large", good, Limits{MaxArchiveBytes: 100}, ErrTooLarge},
		{"truncated gzip", good[:len(good)/2], Limits{}, ErrCorrupt},
		{"gzip trailer cut", good[:len(good)-4], Limits{}, ErrCorrupt},
		{"gzip checksum wrong", func() []byte { b := bytes.Clone(good); b[len(b)-8] ^= 1; return b }(), Limits{}, ErrCorrupt},
		{"trailing garbage", append(bytes.Clone(good), "garbage"...), Limits{}, ErrCorrupt},
		{"not gzip", []byte("PK\x03\x04 this is a zip"), Limits{}, ErrCorrupt},
		{"empty", nil, Limits{}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			os.WriteFile(filepath.Join(parent, "canary"), []byte("keep"), 0o644)
			before := treeHash(t, parent)
			dst := filepath.Join(parent, "out")
			err := Extract(bytes.NewReader(tt.data), dst, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if _, err := os.Lstat(dst); !os.IsNotExist(err) {
				t.Errorf("dst left behind after failure: %v", err)
			}
			if after := treeHash(t, parent); after != before {
				t.Error("the tree around dst changed")
			}
			// Extracting into an existing empty directory leaves it empty.
			os.Mkdir(dst, 0o755)
			if err := Extract(bytes.NewReader(tt.data), dst, tt.lim); !errors.Is(err, tt.want) {
				t.Fatalf("into existing dir: err = %v, want %v", err, tt.want)
			}
			if ents, _ := os.ReadDir(dst); len(ents) != 0 {
				t.Errorf("existing dst not emptied: %v", ents)
			}
		})
	}
}

func TestExtractRefusesNonEmptyDst(t *testing.T) {
	dst := t.TempDir()
	os.WriteFile(filepath.Join(dst, "x"), nil, 0o644)
	if err := Extract(bytes.NewReader(tarGz(t, goodEnts("x", "1.0.0"))), dst, Limits{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "x")); err != nil {
		t.Fatal("existing content removed")
	}
}

// TestCapReader checks the cap on bytes actually read, which backs the
// per-file and total caps whatever a header claims.
func TestCapReader(t *testing.T) {
	for _, size := range []int{0, 99, 100, 101, 5000} {
		c := &capReader{r: bytes.NewReader(make([]byte, size)), n: 100, err: ErrTooLarge}
		n, err := io.CopyBuffer(io.Discard, c, make([]byte, 7))
		if n > 100 || c.read > 100 {
			t.Fatalf("size %d: passed %d bytes through a 100-byte cap", size, n)
		}
		if size > 100 && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("size %d: err = %v", size, err)
		}
		if size <= 100 && (err != nil || n != int64(size)) {
			t.Fatalf("size %d: n=%d err=%v", size, n, err)
		}
	}
}

// FuzzExtract feeds arbitrary bytes to Extract: it must not panic, and
// whatever it accepts stays inside the destination.
func FuzzExtract(f *testing.F) {
	f.Add(tarGz(f, goodEnts("x", "1.0.0")))
	f.Add(tarGz(f, []ent{{name: "l", typ: tar.TypeSymlink, link: "a/b"}, {name: "a/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "a"}}))
	f.Add(tarGz(f, []ent{{name: "t", typ: tar.TypeSymlink, link: "."}, {name: "u", typ: tar.TypeSymlink, link: "t/.."}}))
	f.Add(gz(f, sparseBomb(1<<20)))
	lim := Limits{MaxFiles: 64, MaxFileBytes: 1 << 20, MaxTotalBytes: 2 << 20, MaxArchiveBytes: 1 << 20}
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "out")
		if err := Extract(bytes.NewReader(b), dst, lim); err != nil {
			if _, serr := os.Lstat(dst); !os.IsNotExist(serr) {
				t.Fatalf("failed (%v) but left dst", err)
			}
			return
		}
		ents, _ := os.ReadDir(parent)
		if len(ents) != 1 {
			t.Fatalf("wrote beside dst: %v", ents)
		}
		var total int64
		filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				rel, _ := filepath.Rel(dst, p)
				if err := resolvesInside(dst, filepath.ToSlash(rel)); err != nil {
					t.Fatalf("accepted symlink %s that leaves dst: %v", rel, err)
				}
			}
			if fi.Mode().IsRegular() {
				total += fi.Size()
			}
			if fi.Mode()&^(os.ModeDir|os.ModeSymlink|0o777) != 0 {
				t.Fatalf("special file %s (%v)", p, fi.Mode())
			}
			return nil
		})
		if total > lim.MaxTotalBytes {
			t.Fatalf("wrote %d bytes, cap %d", total, lim.MaxTotalBytes)
		}
	})
}

// TestExtractWriteError checks that a failure on the writing side (here a
// name the file system refuses) stops the extraction and cleans up.
func TestExtractWriteError(t *testing.T) {
	ents := goodEnts("x", "1.0.0")
	for i := 0; i < 20; i++ { // enough to fill the writer's queue
		ents = append(ents, ent{name: "big" + string(rune('a'+i)), body: string(pseudoRandom(300 << 10))})
	}
	ents = append(ents, ent{name: strings.Repeat("n", 300), body: "x"})
	ents = append(ents, ent{name: "after", body: "never written"})
	parent := t.TempDir()
	dst := filepath.Join(parent, "out")
	err := Extract(bytes.NewReader(tarGz(t, ents)), dst, Limits{})
	if err == nil || !strings.Contains(err.Error(), "file name too long") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Fatal("dst left behind")
	}
}
