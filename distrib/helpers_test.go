package distrib

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// ent is one entry of a test archive.
type ent struct {
	name string
	typ  byte // tar.TypeReg when 0
	body string
	link string
	mode int64
}

func manifestJSON(name, version string) string {
	return fmt.Sprintf(`{"name":%q,"version":%q,"description":"test plugin","command":["./run.sh"],"mode":"local","protocol":1}`, name, version)
}

// goodEnts returns the entries of a small valid plugin.
func goodEnts(name, version string) []ent {
	return []ent{
		{name: "nearby.json", body: manifestJSON(name, version)},
		{name: "run.sh", body: "#!/bin/sh\necho hello\n", mode: 0o755},
		{name: "lib/", typ: tar.TypeDir},
		{name: "lib/data.txt", body: "data " + version},
	}
}

func tarBytes(t testing.TB, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarGz(t testing.TB, ents []ent) []byte { return gz(t, tarBytes(t, ents)) }

// writeArchive writes data as dir/file and returns the path.
func writeArchive(t testing.TB, dir, file string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// goodArchive writes a valid NAME-VERSION.tar.gz into dir, signed by priv
// if not nil.
func goodArchive(t testing.TB, dir, name, version string, priv ed25519.PrivateKey) string {
	t.Helper()
	p := writeArchive(t, dir, name+"-"+version+ArchiveExt, tarGz(t, goodEnts(name, version)))
	if priv != nil {
		signFile(t, priv, p)
	}
	return p
}

func fileSHA(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return s[:]
}

func signFile(t testing.TB, priv ed25519.PrivateKey, p string) {
	t.Helper()
	if err := os.WriteFile(p+SigExt, Sign(priv, fileSHA(t, p)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func signerOf(priv ed25519.PrivateKey) string { return SignerID(priv.Public().(ed25519.PublicKey)) }

// treeHash summarises everything under dir (names, types, modes, contents,
// link targets), to show that a failed operation changed nothing.
func treeHash(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := rel + " " + fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			line += " " + hex.EncodeToString(s[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l+"\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

// rawBlock returns a ustar header block, for archives archive/tar's writer
// refuses to produce.
func rawBlock(name string, typ byte, size int64, link string) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[157:257], link)
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// gnuBlock turns a rawBlock into a GNU-format header block.
func gnuBlock(b []byte) []byte {
	copy(b[257:265], "ustar  \x00")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	n += len(strconv.Itoa(n))
	r := fmt.Sprintf("%d %s=%s\n", n, k, v)
	if len(r) != n {
		r = fmt.Sprintf("%d %s=%s\n", len(r), k, v)
	}
	return r
}

// sparseBomb is a tar stream whose entry stores 1 KiB of data but whose
// PAX header claims a logical size of realSize (GNU sparse 0.1).
func sparseBomb(realSize int64) []byte {
	recs := paxRecord("GNU.sparse.size", strconv.FormatInt(realSize, 10)) +
		paxRecord("GNU.sparse.numblocks", "1") +
		paxRecord("GNU.sparse.map", "0,1024") +
		paxRecord("GNU.sparse.name", "big")
	var out []byte
	out = append(out, rawBlock("PaxHeaders/big", 'x', int64(len(recs)), "")...)
	out = append(out, pad512([]byte(recs))...)
	out = append(out, rawBlock("big", '0', 1024, "")...)
	out = append(out, make([]byte, 1024)...)
	out = append(out, make([]byte, 1024)...) // end of archive
	return out
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
