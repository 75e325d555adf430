package distrib

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const helloDir = "testdata/plugins/hello"

func TestPackDeterministic(t *testing.T) {
	out1, out2 := t.TempDir(), t.TempDir()
	p1, err := Pack(helloDir, out1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p1) != "hello-1.0.0.tar.gz" {
		t.Fatalf("archive name %s", p1)
	}
	// Different mtimes in the source must not change the bytes.
	tmp := filepath.Join(t.TempDir(), "hello")
	if err := os.CopyFS(tmp, os.DirFS(helloDir)); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(tmp, "lib", "hello.py"), packEpoch.Add(time.Hour), packEpoch.Add(time.Hour))
	p2, err := Pack(tmp, out2, nil)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("packing the same tree twice gave different bytes")
	}
	info, err := Inspect(p1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b1)
	if info.Name != "hello" || info.Version != "1.0.0" || info.Signer != "" || info.SHA256 != hex.EncodeToString(sum[:]) || info.Size != int64(len(b1)) || info.Manifest.Label != "Hello" {
		t.Fatalf("Inspect = %+v", info)
	}
	if _, err := os.Stat(p1 + SigExt); !os.IsNotExist(err) {
		t.Fatal("unsigned pack wrote a signature")
	}
	// The archive unpacks to the same tree, modes normalised.
	dst := filepath.Join(t.TempDir(), "x")
	f, _ := os.Open(p1)
	defer f.Close()
	if err := Extract(f, dst, Limits{}); err != nil {
		t.Fatal(err)
	}
	if treeHash(t, dst) != treeHash(t, helloDir) {
		t.Fatal("extracted tree differs from the packed one")
	}
}

func TestPackSigned(t *testing.T) {
	priv := newKey(t)
	out := t.TempDir()
	// A stale signature from an earlier pack is replaced...
	os.WriteFile(filepath.Join(out, "hello-1.0.0.tar.gz.sig"), []byte("stale"), 0o644)
	p, err := Pack(helloDir, out, priv)
	if err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(p, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Signer != signerOf(priv) {
		t.Fatalf("signer %q, want %q", info.Signer, signerOf(priv))
	}
	// ...and removed by an unsigned pack.
	if _, err := Pack(helloDir, out, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + SigExt); !os.IsNotExist(err) {
		t.Fatal("unsigned pack left the old signature")
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestPackIntoItself(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte(manifestJSON("self", "1.0.0")), 0o644)
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte("x"), 0o755)
	p1, err := Pack(dir, dir, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	s1 := fileSHA(t, p1)
	p2, err := Pack(dir, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1, fileSHA(t, p2)) {
		t.Fatal("the archive from the first pack went into the second")
	}
}

func TestPackRefuses(t *testing.T) {
	mk := func(t *testing.T, setup func(dir string)) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ManifestFile), []byte(manifestJSON("x", "1.0.0")), 0o644)
		os.Mkdir(filepath.Join(dir, "sub"), 0o755)
		setup(dir)
		return dir
	}
	tests := []struct {
		name  string
		setup func(dir string)
		want  error
	}{
		{"no manifest", func(dir string) { os.Remove(filepath.Join(dir, ManifestFile)) }, ErrBadManifest},
		{"bad manifest", func(dir string) { os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"name":"x"}`), 0o644) }, ErrBadManifest},
		{"symlink up", func(dir string) { os.Symlink("../../etc", filepath.Join(dir, "sub", "l")) }, ErrUnsafePath},
		{"symlink absolute", func(dir string) { os.Symlink("/etc/passwd", filepath.Join(dir, "l")) }, ErrUnsafePath},
		{"symlink chain", func(dir string) {
			os.Symlink(".", filepath.Join(dir, "t"))
			os.Symlink("t/..", filepath.Join(dir, "u"))
		}, ErrUnsafePath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := mk(t, tt.setup)
			out := t.TempDir()
			_, err := Pack(dir, out, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Fatalf("left files in outDir: %v", ents)
			}
		})
	}
}

func TestPublish(t *testing.T) {
	priv := newKey(t)
	src := t.TempDir()
	p, err := Pack(helloDir, src, priv)
	if err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join(t.TempDir(), "dist")
	dest, err := Publish(p, dist)
	if err != nil {
		t.Fatal(err)
	}
	if dest != filepath.Join(dist, "hello-1.0.0.tar.gz") {
		t.Fatalf("dest %s", dest)
	}
	info, err := Inspect(dest, Limits{})
	if err != nil || info.Signer != signerOf(priv) {
		t.Fatalf("published archive: %+v, %v", info, err)
	}
	// Publishing an unsigned build of the same version removes the old
	// signature, which would no longer match.
	src2 := t.TempDir()
	p2, _ := Pack(helloDir, src2, nil)
	if _, err := Publish(p2, dist); err != nil {
		t.Fatal(err)
	}
	if info, err := Inspect(dest, Limits{}); err != nil || info.Signer != "" {
		t.Fatalf("after unsigned publish: %+v, %v", info, err)
	}
	// Publishing a file onto itself is a no-op.
	if _, err := Publish(dest, dist); err != nil {
		t.Fatal(err)
	}
	for _, e := range mustReadDir(t, dist) {
		if strings.HasPrefix(e, ".") {
			t.Fatalf("temporary file left: %s", e)
		}
	}
	// An invalid archive is not published.
	bad := writeArchive(t, t.TempDir(), "x-1.0.0.tar.gz", tarGz(t, goodEnts("x", "2.0.0")))
	if _, err := Publish(bad, dist); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("publish mismatched archive: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dist, "x-1.0.0.tar.gz")); !os.IsNotExist(err) {
		t.Fatal("invalid archive was published")
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
