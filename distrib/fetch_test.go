package distrib

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fetchFix is a dist folder with one archive, served by a real Handler.
type fetchFix struct {
	t     *testing.T
	data  []byte
	entry IndexEntry
	good  Source
	log   *rangeLog
}

// rangeLog records the Range header of each request to a handler.
type rangeLog struct {
	mu     sync.Mutex
	ranges []string
}

func (l *rangeLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ArchiveExt) {
			l.mu.Lock()
			l.ranges = append(l.ranges, r.Header.Get("Range"))
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (l *rangeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ranges...)
}

func newFetchFix(t *testing.T, priv ed25519.PrivateKey, size int) *fetchFix {
	t.Helper()
	dir := t.TempDir()
	ents := append(goodEnts("chat", "1.0.0"), ent{name: "blob", body: string(pseudoRandom(size))})
	p := writeArchive(t, dir, "chat-1.0.0.tar.gz", tarGz(t, ents))
	if priv != nil {
		signFile(t, priv, p)
	}
	d, err := OpenDist(dir, DistConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ix := d.Index()
	if len(ix.Entries) != 1 {
		t.Fatalf("fixture index %+v", ix)
	}
	f := &fetchFix{t: t, entry: ix.Entries[0], log: &rangeLog{}}
	f.data, _ = os.ReadFile(p)
	f.good = Source{Node: "good", BaseURL: serve(t, f.log.wrap(d.Handler())).URL}
	return f
}

// pseudoRandom returns n incompressible, deterministic bytes.
func pseudoRandom(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// faulty serves the archive's first n bytes (as a whole-file response)
// and then misbehaves: "stall" blocks until the client gives up, "drop"
// aborts the connection.
func (f *fetchFix) faulty(kind string, n int) Source {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ArchiveExt) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", itoa(len(f.data)))
		w.WriteHeader(200)
		w.Write(f.data[:n])
		w.(http.Flusher).Flush()
		switch kind {
		case "stall":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "drop":
			panic(http.ErrAbortHandler)
		}
	})
	srv := serve(f.t, h)
	f.t.Cleanup(func() { close(release) }) // runs before srv.Close
	return Source{Node: kind, BaseURL: srv.URL}
}

// liar serves other bytes of the right size under the right ETag.
func (f *fetchFix) liar() Source {
	other := bytes.Clone(f.data)
	other[len(other)/2] ^= 0xff
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+f.entry.SHA256+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(other))
	})
	return Source{Node: "liar", BaseURL: serve(f.t, h).URL}
}

// noRange serves the archive but ignores Range.
func (f *fetchFix) noRange() (Source, *rangeLog) {
	l := &rangeLog{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ArchiveExt) {
			http.NotFound(w, r)
			return
		}
		w.Write(f.data)
	})
	return Source{Node: "norange", BaseURL: serve(f.t, l.wrap(h)).URL}, l
}

func (f *fetchFix) fetch(sources []Source, opt FetchOptions) (string, []Progress, error) {
	f.t.Helper()
	var prog []Progress
	opt.Progress = func(p Progress) { prog = append(prog, p) }
	if opt.TempDir == "" {
		opt.TempDir = f.t.TempDir()
	}
	if opt.StallTimeout == 0 {
		opt.StallTimeout = 5 * time.Second // healthy sources never get near it
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	p, err := Fetch(ctx, f.entry, sources, opt)
	if err == nil {
		b, rerr := os.ReadFile(p)
		if rerr != nil || !bytes.Equal(b, f.data) {
			f.t.Fatalf("Fetch returned %s with wrong content (%v)", p, rerr)
		}
		if filepath.Base(p) != f.entry.File {
			f.t.Fatalf("Fetch path %s", p)
		}
	} else if ents, _ := os.ReadDir(opt.TempDir); len(ents) != 0 {
		f.t.Fatalf("failed Fetch left %v", ents)
	}
	return p, prog, err
}

func TestFetch(t *testing.T) {
	priv := newKey(t)
	f := newFetchFix(t, priv, 300<<10)
	p, prog, err := f.fetch([]Source{f.good}, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.ReadFile(p + SigExt)
	if err != nil {
		t.Fatal(err)
	}
	if sig, err := ParseSignature(sb); err != nil || SignerID(sig.Signer) != signerOf(priv) {
		t.Fatalf("signature: %v", err)
	}
	last := prog[len(prog)-1]
	if last.Done != last.Total || last.Total != f.entry.Size || last.Node != "good" || last.Name != "chat" || last.Version != "1.0.0" {
		t.Fatalf("last progress %+v", last)
	}
	if len(prog) > 120 {
		t.Fatalf("%d progress calls for one download", len(prog))
	}
	// The fetched archive installs.
	s, _ := OpenStore(t.TempDir())
	trust, _ := OpenTrust(filepath.Join(t.TempDir(), "trust.json"))
	if _, err := s.Install(p, InstallOptions{Trust: trust, Origin: "good"}); err != nil {
		t.Fatal(err)
	}
}

func TestFetchUnsigned(t *testing.T) {
	f := newFetchFix(t, nil, 1000)
	p, _, err := f.fetch([]Source{f.good}, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + SigExt); !os.IsNotExist(err) {
		t.Fatal("signature file for an unsigned archive")
	}
}

func TestFetchHashMismatchNextSource(t *testing.T) {
	f := newFetchFix(t, nil, 300<<10)
	_, prog, err := f.fetch([]Source{f.liar(), f.good}, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.log.get(); len(r) != 1 || r[0] != "" {
		t.Fatalf("good source saw ranges %q, want one whole-file request", r)
	}
	if last := prog[len(prog)-1]; last.Node != "good" || last.Done != last.Total {
		t.Fatalf("last progress %+v", last)
	}
}

func TestFetchStallResumes(t *testing.T) {
	f := newFetchFix(t, nil, 600<<10)
	half := len(f.data) / 2
	_, _, err := f.fetch([]Source{f.faulty("stall", half), f.good}, FetchOptions{StallTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Normally the resume is at exactly half; on a very loaded machine the
	// stall timer may fire before all of the first half was read.
	r := f.log.get()
	var off int
	if len(r) != 1 || !strings.HasPrefix(r[0], "bytes=") {
		t.Fatalf("good source saw ranges %q, want one resume", r)
	}
	fmt.Sscanf(r[0], "bytes=%d-", &off)
	if off <= 0 || off > half {
		t.Fatalf("resumed at %q, want a range starting in (0, %d]", r[0], half)
	}
}

func TestFetchDropResumes(t *testing.T) {
	f := newFetchFix(t, nil, 600<<10)
	_, _, err := f.fetch([]Source{f.faulty("drop", 200<<10), f.good}, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := f.log.get()
	if len(r) != 1 || !strings.HasPrefix(r[0], "bytes=") || r[0] == "bytes=0-" {
		t.Fatalf("good source saw ranges %q, want a resume", r)
	}
}

func TestFetchRestartsWithoutRange(t *testing.T) {
	f := newFetchFix(t, nil, 600<<10)
	nr, log := f.noRange()
	_, prog, err := f.fetch([]Source{f.faulty("drop", 200<<10), nr}, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := log.get(); len(r) != 1 || !strings.HasPrefix(r[0], "bytes=") {
		t.Fatalf("ranges %q", r)
	}
	sawReset := false
	for i := 1; i < len(prog); i++ {
		if prog[i].Done < prog[i-1].Done {
			sawReset = true
		}
	}
	if !sawReset {
		t.Fatalf("progress never went back to 0 for the restart: %+v", prog)
	}
}

func TestFetchAllSourcesFail(t *testing.T) {
	f := newFetchFix(t, nil, 10<<10)
	missing := Source{Node: "missing", BaseURL: serve(t, http.NotFoundHandler()).URL}
	_, _, err := f.fetch([]Source{f.liar(), missing, f.faulty("stall", 100)}, FetchOptions{StallTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrNoSource) || !errors.Is(err, ErrHashMismatch) || !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v", err)
	}
	for _, node := range []string{"liar", "missing", "stall"} {
		if !strings.Contains(err.Error(), "source "+node) {
			t.Errorf("error does not name source %s: %v", node, err)
		}
	}
}

func TestFetchCancel(t *testing.T) {
	f := newFetchFix(t, nil, 100<<10)
	ctx, cancel := context.WithCancel(context.Background())
	tmp := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, f.entry, []Source{f.faulty("stall", 1000)}, FetchOptions{TempDir: tmp, StallTimeout: time.Hour})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Fetch ignored cancellation")
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}
}

func TestFetchSignatureChecks(t *testing.T) {
	priv := newKey(t)
	f := newFetchFix(t, priv, 1000)
	// The index names another signer than the one the source serves.
	want := f.entry
	f.entry.Signer = signerOf(newKey(t))
	_, _, err := f.fetch([]Source{f.good}, FetchOptions{})
	if !errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrUntrustedSigner) {
		t.Fatalf("err = %v", err)
	}
	// The index says signed, the source serves none.
	f.entry = want
	nr, _ := f.noRange() // 404 for .sig
	_, _, err = f.fetch([]Source{nr}, FetchOptions{})
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("missing signature: %v", err)
	}
	// One source without the signature, another with it.
	if _, _, err := f.fetch([]Source{nr, f.good}, FetchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRefusesBadEntries(t *testing.T) {
	f := newFetchFix(t, nil, 1000)
	tests := map[string]func(e *IndexEntry){
		"too large":  func(e *IndexEntry) { e.Size = 1 << 40 },
		"bad sha":    func(e *IndexEntry) { e.SHA256 = "xyz" },
		"upper sha":  func(e *IndexEntry) { e.SHA256 = strings.ToUpper(e.SHA256) },
		"bad file":   func(e *IndexEntry) { e.File = "../x-1.0.0.tar.gz" },
		"bad name":   func(e *IndexEntry) { e.Name = "X" },
		"bad signer": func(e *IndexEntry) { e.Signer = "ed25519:x" },
	}
	for name, mod := range tests {
		e := f.entry
		mod(&e)
		if _, err := Fetch(context.Background(), e, []Source{f.good}, FetchOptions{TempDir: t.TempDir()}); err == nil {
			t.Errorf("%s: fetched", name)
		}
	}
	if r := f.log.get(); len(r) != 0 {
		t.Fatalf("requests were made: %q", r)
	}
	if _, err := Fetch(context.Background(), f.entry, nil, FetchOptions{}); !errors.Is(err, ErrNoSource) {
		t.Fatalf("no sources: %v", err)
	}
}

func TestFetchIndex(t *testing.T) {
	f := newFetchFix(t, newKey(t), 1000)
	ix, err := FetchIndex(context.Background(), f.good)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Entries) != 1 || ix.Entries[0] != f.entry {
		t.Fatalf("index %+v, want %+v", ix, f.entry)
	}
	bad := Source{Node: "bad", BaseURL: serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("not json"))
	})).URL}
	if _, err := FetchIndex(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "bad index") {
		t.Fatalf("bad index: %v", err)
	}
}

func TestDecodeIndex(t *testing.T) {
	good := IndexEntry{Name: "chat", Version: "1.0.0", File: "chat-1.0.0.tar.gz", Size: 10, SHA256: strings.Repeat("ab", 32), Mode: "local"}
	mod := func(f func(e *IndexEntry)) IndexEntry { e := good; f(&e); return e }
	in := Index{Entries: []IndexEntry{
		good,
		good, // duplicate
		mod(func(e *IndexEntry) { e.File = "other-1.0.0.tar.gz" }),
		mod(func(e *IndexEntry) { e.Version = "1.0" }),
		mod(func(e *IndexEntry) { e.Mode = "weird" }),
		mod(func(e *IndexEntry) { e.Size = -1 }),
		mod(func(e *IndexEntry) { e.Label = "\x1b[31m" }),
	}, Invalid: []Invalid{{File: "x", Error: strings.Repeat("e", 5000)}}}
	b, _ := json.Marshal(in)
	b = bytes.Replace(b, []byte(`"entries"`), []byte(`"future":1,"entries"`), 1) // unknown fields are fine
	ix, err := DecodeIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Entries) != 1 || ix.Entries[0] != good || len(ix.Invalid) != 7 {
		t.Fatalf("decoded %+v", ix)
	}
	for _, iv := range ix.Invalid {
		if len(iv.Error) > 1024 {
			t.Fatal("peer error text not clipped")
		}
	}
	if _, err := DecodeIndex(make([]byte, MaxIndexBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("huge index: %v", err)
	}
}

// FuzzDecodeIndex checks that DecodeIndex never panics and only passes
// entries that Fetch would accept.
func FuzzDecodeIndex(f *testing.F) {
	f.Add([]byte(`{"entries":[{"name":"chat","version":"1.0.0","file":"chat-1.0.0.tar.gz","size":10,"sha256":"` + strings.Repeat("ab", 32) + `","mode":"local"}]}`))
	f.Add([]byte(`{"entries":[],"invalid":[{"file":"x","error":"y"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := DecodeIndex(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, e := range ix.Entries {
			if err := checkEntry(e, DefaultLimits()); err != nil {
				t.Fatalf("passed a bad entry %+v: %v", e, err)
			}
			if seen[e.File] {
				t.Fatalf("duplicate %s", e.File)
			}
			seen[e.File] = true
		}
	})
}
