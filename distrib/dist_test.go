package distrib

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// waitLimit bounds every wait for an event in these tests; nothing here
// asserts how fast anything is.
const waitLimit = 20 * time.Second

type distFix struct {
	t     *testing.T
	dir   string
	d     *Dist
	syncs chan string
	n     int
}

// startDist opens a dist folder and runs its watcher until the test ends.
// If w is nil Run makes its own watcher; otherwise the loop uses w as is.
func startDist(t *testing.T, cfg DistConfig, w *fsnotify.Watcher) *distFix {
	t.Helper()
	f := &distFix{t: t, dir: t.TempDir(), syncs: make(chan string, 1)}
	d, err := OpenDist(f.dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.d = d
	ready := make(chan struct{})
	d.onSync = func(name string) { f.syncs <- name }
	d.onReady = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		if w != nil {
			done <- d.loop(ctx, w)
		} else {
			done <- d.Run(ctx)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("watcher did not start")
	}
	return f
}

// sync returns once the watcher has seen every event caused so far and
// has checked every file they concern.
func (f *distFix) sync() {
	f.t.Helper()
	f.n++
	name := fmt.Sprintf("%s%d", syncPrefix, f.n)
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		f.t.Fatal(err)
	}
	defer os.Remove(p)
	for {
		select {
		case got := <-f.syncs:
			if got == name {
				return
			}
		case <-time.After(waitLimit):
			f.t.Fatal("watcher did not see the sync marker")
		}
	}
}

// changed reports whether Changes was signalled, and clears it.
func (f *distFix) changed() bool {
	select {
	case <-f.d.Changes():
		return true
	default:
		return false
	}
}

func (f *distFix) gen() uint64 {
	f.d.mu.RLock()
	defer f.d.mu.RUnlock()
	return f.d.gen
}

func find(ix Index, file string) (*IndexEntry, *Invalid) {
	for i := range ix.Entries {
		if ix.Entries[i].File == file {
			return &ix.Entries[i], nil
		}
	}
	for i := range ix.Invalid {
		if ix.Invalid[i].File == file {
			return nil, &ix.Invalid[i]
		}
	}
	return nil, nil
}

// putAtomic writes data to a temporary name in dir and renames it to file.
func putAtomic(t *testing.T, dir, file string, data []byte) {
	t.Helper()
	tmp := filepath.Join(dir, "tmp-upload")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, file)); err != nil {
		t.Fatal(err)
	}
}

func TestDistInitialScan(t *testing.T) {
	dir := t.TempDir()
	priv := newKey(t)
	goodArchive(t, dir, "chat", "1.0.0", priv)
	goodArchive(t, dir, "chat", "1.10.0", nil)
	writeArchive(t, dir, "draw-1.0.0.tar.gz", tarGz(t, goodEnts("draw", "2.0.0")))
	writeArchive(t, dir, "Bad-1.0.0.tar.gz", tarGz(t, goodEnts("bad", "1.0.0")))
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, ".chat-2.0.0.tar.gz.tmp-1"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	d, err := OpenDist(dir, DistConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ix := d.Index()
	if len(ix.Entries) != 2 || ix.Entries[0].Version != "1.10.0" || ix.Entries[1].Version != "1.0.0" {
		t.Fatalf("entries %+v", ix.Entries)
	}
	if e := ix.Entries[1]; e.Signer != signerOf(priv) || e.Mode != ModeLocal || e.Description != "test plugin" || e.Size == 0 || len(e.SHA256) != 64 {
		t.Fatalf("entry %+v", e)
	}
	if len(ix.Invalid) != 2 || ix.Invalid[0].File != "Bad-1.0.0.tar.gz" || !strings.Contains(ix.Invalid[1].Error, "nearby.json says draw 2.0.0") {
		t.Fatalf("invalid %+v", ix.Invalid)
	}
}

func TestDistWatch(t *testing.T) {
	// A long debounce: only sync processes events, so what the test sees
	// does not depend on how fast the machine is.
	f := startDist(t, DistConfig{Debounce: time.Hour}, nil)
	priv := newKey(t)
	data := tarGz(t, goodEnts("chat", "1.0.0"))

	// Rename into place.
	putAtomic(t, f.dir, "chat-1.0.0.tar.gz", data)
	f.sync()
	e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz")
	if e == nil || e.SHA256 != hexSHA(data) || e.Signer != "" {
		t.Fatalf("after rename into place: %+v", e)
	}
	if !f.changed() {
		t.Fatal("Changes not signalled")
	}

	// Editor and download temporaries are ignored.
	g := f.gen()
	for _, name := range []string{".chat-1.0.0.tar.gz.swp", "chat-1.0.0.tar.gz~", "4913", "chat-1.1.0.tar.gz.part", "chat-1.1.0.tar.gz.crdownload"} {
		os.WriteFile(filepath.Join(f.dir, name), []byte("junk"), 0o644)
	}
	f.sync()
	if ix := f.d.Index(); len(ix.Entries) != 1 || len(ix.Invalid) != 0 || f.gen() != g || f.changed() {
		t.Fatalf("temporary files changed the index: %+v", ix)
	}

	// Duplicate events (touch, chmod, rewriting the same bytes) change nothing.
	p := filepath.Join(f.dir, "chat-1.0.0.tar.gz")
	for i := 0; i < 5; i++ {
		now := time.Now().Add(time.Duration(i) * time.Second)
		os.Chtimes(p, now, now)
		os.Chmod(p, 0o600+os.FileMode(i%2)*0o44)
		os.WriteFile(p, data, 0o644)
	}
	f.sync()
	if e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz"); e == nil || e.SHA256 != hexSHA(data) || f.gen() != g || f.changed() {
		t.Fatalf("duplicate events changed the index: %+v", e)
	}

	// A signature arriving later; then a replacement archive.
	signFile(t, priv, p)
	f.sync()
	if e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz"); e == nil || e.Signer != signerOf(priv) {
		t.Fatalf("after .sig: %+v", e)
	}
	data2 := tarGz(t, append(goodEnts("chat", "1.0.0"), ent{name: "new", body: "x"}))
	os.Remove(p + SigExt)
	putAtomic(t, f.dir, "chat-1.0.0.tar.gz", data2)
	f.sync()
	if e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz"); e == nil || e.SHA256 != hexSHA(data2) || e.Signer != "" {
		t.Fatalf("after replace: %+v", e)
	}

	// A bad signature makes the archive invalid, with the reason.
	os.WriteFile(p+SigExt, Sign(priv, make([]byte, 32)), 0o644)
	f.sync()
	if e, iv := find(f.d.Index(), "chat-1.0.0.tar.gz"); e != nil || iv == nil || !strings.Contains(iv.Error, "bad signature") {
		t.Fatalf("bad signature: %+v %+v", e, iv)
	}
	os.Remove(p + SigExt)

	// An invalid archive is listed with its reason.
	writeArchive(t, f.dir, "draw-1.0.0.tar.gz", tarGz(t, []ent{{name: "x", body: "no manifest"}}))
	f.sync()
	if e, iv := find(f.d.Index(), "draw-1.0.0.tar.gz"); e != nil || iv == nil || !strings.Contains(iv.Error, "no nearby.json") {
		t.Fatalf("invalid archive: %+v %+v", e, iv)
	}

	// Remove.
	f.changed()
	os.Remove(p)
	os.Remove(filepath.Join(f.dir, "draw-1.0.0.tar.gz"))
	f.sync()
	if ix := f.d.Index(); len(ix.Entries) != 0 || len(ix.Invalid) != 0 {
		t.Fatalf("after remove: %+v", ix)
	}
	if !f.changed() {
		t.Fatal("Changes not signalled on remove")
	}
}

// TestDistDebounce lets the debounce timer, not a sync, pick a file up.
func TestDistDebounce(t *testing.T) {
	f := startDist(t, DistConfig{Debounce: 10 * time.Millisecond}, nil)
	putAtomic(t, f.dir, "chat-1.0.0.tar.gz", tarGz(t, goodEnts("chat", "1.0.0")))
	select {
	case <-f.d.Changes():
	case <-time.After(waitLimit):
		t.Fatal("archive not picked up")
	}
	if e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz"); e == nil {
		t.Fatal("not indexed")
	}
}

// TestDistSlowWrite writes an archive in pieces; until it is complete it
// is neither served nor reported invalid.
func TestDistSlowWrite(t *testing.T) {
	f := startDist(t, DistConfig{Settle: time.Hour}, nil)
	ents := goodEnts("big", "1.0.0")
	ents = append(ents, ent{name: "blob", body: strings.Repeat("nearby ", 40000)})
	data := tarGz(t, ents)
	p := filepath.Join(f.dir, "big-1.0.0.tar.gz")
	w, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	step := len(data)/5 + 1
	for off := 0; off < len(data); off += step {
		if _, err := w.Write(data[off:min(off+step, len(data))]); err != nil {
			t.Fatal(err)
		}
		f.sync()
		e, iv := find(f.d.Index(), "big-1.0.0.tar.gz")
		if off+step < len(data) && (e != nil || iv != nil) {
			t.Fatalf("after %d of %d bytes: entry %+v, invalid %+v", off+step, len(data), e, iv)
		}
	}
	if e, iv := find(f.d.Index(), "big-1.0.0.tar.gz"); e == nil || e.SHA256 != hexSHA(data) {
		t.Fatalf("complete archive: %+v %+v", e, iv)
	}
}

// TestDistTruncatedSettles reports a truncated archive as invalid once it
// has not changed for Settle.
func TestDistTruncatedSettles(t *testing.T) {
	f := startDist(t, DistConfig{Settle: time.Hour}, nil)
	data := tarGz(t, goodEnts("cut", "1.0.0"))
	p := writeArchive(t, t.TempDir(), "cut-1.0.0.tar.gz", data[:len(data)/2])
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(p, old, old)
	os.Rename(p, filepath.Join(f.dir, "cut-1.0.0.tar.gz"))
	f.sync()
	if _, iv := find(f.d.Index(), "cut-1.0.0.tar.gz"); iv == nil || !strings.Contains(iv.Error, "truncated") {
		t.Fatalf("old truncated archive: %+v", iv)
	}
}

// TestDistOverflowRescan runs the loop on a watcher that sees nothing, so
// only the overflow rescan can find a new archive.
func TestDistOverflowRescan(t *testing.T) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() }) // after the loop stops (cleanups run last-in first-out)
	f := startDist(t, DistConfig{Rescan: -1}, w)
	goodArchive(t, f.dir, "chat", "1.0.0", nil)
	select {
	case w.Errors <- fsnotify.ErrEventOverflow:
	case <-time.After(waitLimit):
		t.Fatal("loop not reading errors")
	}
	select {
	case <-f.d.Changes():
	case <-time.After(waitLimit):
		t.Fatal("no rescan after overflow")
	}
	if e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz"); e == nil {
		t.Fatal("rescan did not index the archive")
	}
}

func TestDistPeriodicRescan(t *testing.T) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() }) // after the loop stops (cleanups run last-in first-out)
	f := startDist(t, DistConfig{Rescan: 20 * time.Millisecond}, w)
	goodArchive(t, f.dir, "chat", "1.0.0", nil)
	select {
	case <-f.d.Changes():
	case <-time.After(waitLimit):
		t.Fatal("no periodic rescan")
	}
	if e, _ := find(f.d.Index(), "chat-1.0.0.tar.gz"); e == nil {
		t.Fatal("rescan did not index the archive")
	}
}

func TestDistOpen(t *testing.T) {
	dir := t.TempDir()
	p := goodArchive(t, dir, "chat", "1.0.0", nil)
	d, err := OpenDist(dir, DistConfig{})
	if err != nil {
		t.Fatal(err)
	}
	fh, e, err := d.Open("chat-1.0.0.tar.gz")
	if err != nil || e.Name != "chat" {
		t.Fatalf("Open: %+v %v", e, err)
	}
	fh.Close()
	if _, _, err := d.Open("nope-1.0.0.tar.gz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown file: %v", err)
	}
	if _, _, err := d.Open("../chat-1.0.0.tar.gz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path: %v", err)
	}
	// Changed on disk since indexed (no watcher running): refused.
	os.WriteFile(p, tarGz(t, append(goodEnts("chat", "1.0.0"), ent{name: "x", body: "y"})), 0o644)
	if _, _, err := d.Open("chat-1.0.0.tar.gz"); !errors.Is(err, ErrChanged) {
		t.Fatalf("changed file: %v", err)
	}
}

func TestIndexDigest(t *testing.T) {
	a := Index{Entries: []IndexEntry{{File: "a-1.0.0.tar.gz", SHA256: "aa"}, {File: "b-1.0.0.tar.gz", SHA256: "bb"}}}
	b := Index{Entries: []IndexEntry{a.Entries[1], a.Entries[0]}}
	if a.Digest() != b.Digest() || len(a.Digest()) != 16 {
		t.Fatalf("digest depends on order: %s %s", a.Digest(), b.Digest())
	}
	b.Entries[0].SHA256 = "bc"
	if a.Digest() == b.Digest() {
		t.Fatal("digest ignores hashes")
	}
	if (Index{}).Digest() == a.Digest() {
		t.Fatal("empty digest equals non-empty")
	}
}
