package distrib

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Benchmarks with their baselines in the same run: each iteration runs the
// subject and its baselines once, in rotating order, and the benchmark
// reports median MB/s of each and the subject's speed as a fraction of each
// baseline's ("x-of-base": 1 means as fast). Removing the files a run made
// is included in every timing alike. Reproduce with
//
//	scripts/isolated.sh go test -run '^$' -bench 'Fetch100MB|Install' -benchtime 15x ./distrib/

// BenchmarkFetch100MB fetches and verifies a 100 MB archive (incompressible
// content, gzip stored blocks) through Fetch from a Dist handler on a
// loopback httptest server; the baseline is a plain GET of the same URL
// hashed with SHA-256 (nothing written to disk).
func BenchmarkFetch100MB(b *testing.B) {
	dir := b.TempDir()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	man := manifestJSON("big", "1.0.0")
	tw.WriteHeader(&tar.Header{Name: ManifestFile, Mode: 0o644, Size: int64(len(man))})
	tw.Write([]byte(man))
	blob := pseudoRandom(100 << 20)
	tw.WriteHeader(&tar.Header{Name: "blob", Mode: 0o644, Size: int64(len(blob))})
	tw.Write(blob)
	tw.Close()
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.NoCompression)
	zw.Write(tb.Bytes())
	zw.Close()
	writeArchive(b, dir, "big-1.0.0.tar.gz", zb.Bytes())
	d, err := OpenDist(dir, DistConfig{})
	if err != nil {
		b.Fatal(err)
	}
	entry := d.Index().Entries[0]
	srv := serve(b, d.Handler())
	src := Source{Node: "bench", BaseURL: srv.URL, Client: srv.Client()}
	tmp := b.TempDir()

	buf := make([]byte, copyBufSize)
	get := func(toFile bool) {
		resp, err := src.Client.Get(srv.URL + "/files/" + entry.File)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		var w io.Writer = h
		if toFile {
			f, err := os.Create(filepath.Join(tmp, "plain"))
			if err != nil {
				b.Fatal(err)
			}
			defer os.Remove(f.Name())
			defer f.Close()
			w = io.MultiWriter(f, h)
		}
		io.CopyBuffer(w, resp.Body, buf)
		if hex.EncodeToString(h.Sum(nil)) != entry.SHA256 {
			b.Fatal("hash mismatch")
		}
	}
	runs := map[string]func(){
		"fetch": func() {
			p, err := Fetch(context.Background(), entry, []Source{src}, FetchOptions{TempDir: tmp})
			if err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(filepath.Dir(p))
		},
		"base":      func() { get(false) },
		"base-file": func() { get(true) },
	}
	med := interleave(b, runs)
	report(b, entry.Size, med, "fetch", "base", "base-file")
}

// interleave runs every function once per benchmark iteration, in a
// rotating order, and returns each one's median duration. Interleaving
// keeps a ratio meaningful on a machine whose load changes during the run.
func interleave(b *testing.B, runs map[string]func()) map[string]time.Duration {
	names := slices.Sorted(maps.Keys(runs))
	times := map[string][]time.Duration{}
	i := 0
	for b.Loop() {
		for k := range names {
			name := names[(i+k)%len(names)]
			start := time.Now()
			runs[name]()
			times[name] = append(times[name], time.Since(start))
		}
		i++
	}
	med := map[string]time.Duration{}
	for name, ts := range times {
		slices.Sort(ts)
		med[name] = ts[len(ts)/2]
	}
	return med
}

// report prints MB/s of the subject (first name) and each baseline, and
// the subject's speed as a fraction of each baseline's.
func report(b *testing.B, size int64, med map[string]time.Duration, subject string, baselines ...string) {
	mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(med[subject]), subject+"-MB/s")
	for _, base := range baselines {
		b.ReportMetric(mbps(med[base]), base+"-MB/s")
		b.ReportMetric(med[base].Seconds()/med[subject].Seconds(), "x-of-"+base)
	}
	b.ReportMetric(0, "ns/op")
}

// realisticPlugin writes a plugin tree shaped like a typical one: a 16 MiB
// executable that compresses about 2:1 (like a Go binary), and 40 small
// files (scripts, JSON, docs, icons) of 1-32 KiB.
func realisticPlugin(b *testing.B) (dir string, total int64) {
	dir = b.TempDir()
	man := manifestJSON("bench", "1.0.0")
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte(man), 0o644)
	total += int64(len(man))
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	rnd := pseudoRandom(8 << 20)
	text := bytes.Repeat([]byte("runtime.gopanic main.(*server).handle net/http.(*conn).serve 0x0000000000401000 "), (8<<20)/80+1)[:8<<20]
	var bin []byte
	for i := 0; i < 8<<20; i += 4096 {
		bin = append(bin, rnd[i:i+4096]...)
		bin = append(bin, text[i:i+4096]...)
	}
	os.WriteFile(filepath.Join(dir, "bin", "bench"), bin, 0o755)
	total += int64(len(bin))
	for i := 0; i < 40; i++ {
		sub := filepath.Join(dir, []string{"lib", "share", "docs", "icons"}[i%4])
		os.MkdirAll(sub, 0o755)
		n := 1024 << (i % 6)
		body := append(bytes.Repeat([]byte(fmt.Sprintf("file %d line\n", i)), n/14), pseudoRandom(n/4)...)
		os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%02d.dat", i)), body, 0o644)
		total += int64(len(body))
	}
	return dir, total
}

// BenchmarkInstall measures a full install of a realistic signed archive
// (download from a loopback Dist handler, hash, signature, extract with all
// checks, rename, state write) against the baseline of gunzip + untar of
// the same archive from memory into a fresh directory (no checks, no
// download). install-local is Store.Install of a file already on disk.
func BenchmarkInstall(b *testing.B) {
	plug, total := realisticPlugin(b)
	dist := b.TempDir()
	archive, err := Pack(plug, dist, newKey(b))
	if err != nil {
		b.Fatal(err)
	}
	data, _ := os.ReadFile(archive)
	b.Logf("archive: %d bytes compressed, %d bytes in 42 files", len(data), total)
	d, err := OpenDist(dist, DistConfig{})
	if err != nil {
		b.Fatal(err)
	}
	entry := d.Index().Entries[0]
	srv := serve(b, d.Handler())
	src := Source{Node: "bench", BaseURL: srv.URL, Client: srv.Client()}
	work := b.TempDir()
	n := 0
	fresh := func() string { n++; return filepath.Join(work, fmt.Sprint(n)) }

	buf := make([]byte, copyBufSize)
	runs := map[string]func(){
		"install": func() {
			root := fresh()
			p, err := Fetch(context.Background(), entry, []Source{src}, FetchOptions{TempDir: work})
			if err != nil {
				b.Fatal(err)
			}
			s, _ := OpenStore(filepath.Join(root, "plugins"))
			trust, _ := OpenTrust(filepath.Join(root, "trust.json"))
			if _, err := s.Install(p, InstallOptions{Trust: trust, Origin: "bench", SHA256: entry.SHA256}); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(filepath.Dir(p))
			os.RemoveAll(root)
		},
		"install-local": func() {
			root := fresh()
			s, _ := OpenStore(root)
			if _, err := s.Install(archive, InstallOptions{Origin: OriginLocal}); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(root)
		},
		"base-untar": func() {
			root := fresh()
			if err := untarPlain(bytes.NewReader(data), root, buf); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(root)
		},
	}
	med := interleave(b, runs)
	report(b, total, med, "install", "base-untar")
	mbps := float64(total) / med["install-local"].Seconds() / 1e6
	b.ReportMetric(mbps, "install-local-MB/s")
	b.ReportMetric(med["base-untar"].Seconds()/med["install-local"].Seconds(), "x-local-of-base-untar")
}

// untarPlain is the baseline: klauspost gunzip + archive/tar into dir,
// with no checks at all.
func untarPlain(r io.Reader, dir string, buf []byte) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(h.Mode)&0o755)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(struct{ io.Writer }{f}, tr, buf)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
}
