package distrib

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// IndexEntry describes one valid archive in a dist folder: what the index
// (GET /index.json) lists and peers fetch.
type IndexEntry struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	File        string `json:"file"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	Signer      string `json:"signer,omitempty"` // SignerID; "" unsigned
	Mode        string `json:"mode"`             // ModeLocal or ModeHosted
	Description string `json:"description,omitempty"`
	Label       string `json:"label,omitempty"`
}

// Invalid names an archive that was not indexed, and why.
type Invalid struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// Index is a snapshot of a dist folder: the valid archives sorted by name
// then version (highest first), and the files that look like archives but
// failed a check, sorted by file name.
type Index struct {
	Entries []IndexEntry `json:"entries"`
	Invalid []Invalid    `json:"invalid,omitempty"`
}

// Digest returns a short hex digest of the valid entries (file names and
// hashes), equal for equal indexes; suitable for a DNS-SD TXT record.
func (ix Index) Digest() string {
	keys := make([]string, 0, len(ix.Entries))
	for _, e := range ix.Entries {
		keys = append(keys, e.File+" "+e.SHA256+" "+e.Signer+"\n")
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func sortIndex(ix *Index) {
	slices.SortFunc(ix.Entries, func(a, b IndexEntry) int {
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := Compare(b.Version, a.Version); c != 0 {
			return c
		}
		return cmp.Compare(a.File, b.File)
	})
	slices.SortFunc(ix.Invalid, func(a, b Invalid) int { return cmp.Compare(a.File, b.File) })
}

// DistConfig configures a Dist. Zero values mean the defaults.
type DistConfig struct {
	// Limits bound each archive (DefaultLimits when zero).
	Limits Limits
	// Logger receives Debug logs (slog.Default() when nil).
	Logger *slog.Logger
	// Debounce is how long a file must be quiet after its last event before
	// it is checked (default 200ms).
	Debounce time.Duration
	// Settle is how long after its last modification a truncated archive
	// is taken to be still in the writing, rather than reported invalid
	// (default 2s).
	Settle time.Duration
	// Rescan is the interval of a full rescan that catches events the
	// watcher missed (default 1m; negative disables it). Unchanged files
	// (same inode, size and mtime) are not read again.
	Rescan time.Duration
}

// DefaultDistConfig returns the default configuration.
func DefaultDistConfig() DistConfig {
	return DistConfig{Limits: DefaultLimits(), Logger: slog.Default(), Debounce: 200 * time.Millisecond, Settle: 2 * time.Second, Rescan: time.Minute}
}

// Dist is a watched dist folder: it keeps an index of the valid archives in
// one directory (not its subdirectories) and serves them. Methods are safe
// for concurrent use; Run must be called at most once.
type Dist struct {
	dir     string
	cfg     DistConfig
	log     *slog.Logger
	changes chan struct{}
	kick    chan string
	running atomic.Bool

	mu    sync.RWMutex
	files map[string]*distFile // valid archives by file name
	bad   map[string]*distFile // invalid archives by file name
	gen   uint64               // incremented when the index changes

	onSync  func(name string) // test hook: see syncPrefix
	onReady func()            // test hook: called once the loop runs
}

type distFile struct {
	entry IndexEntry
	err   string
	sig   []byte      // verified signature bytes served as FILE.sig
	stat  os.FileInfo // of the archive when it was read
	sigSt os.FileInfo // of the .sig when it was read; nil if none
}

// syncPrefix names marker files that tests create: events are delivered in
// order, so when the loop sees a marker every earlier event has been seen;
// it then checks all pending files at once and calls onSync.
const syncPrefix = ".nearby-sync-"

// OpenDist opens the dist folder dir, creating it if needed, and indexes
// what is there now. Call Run to follow changes.
func OpenDist(dir string, cfg DistConfig) (*Dist, error) {
	def := DefaultDistConfig()
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = def.Debounce
	}
	if cfg.Settle <= 0 {
		cfg.Settle = def.Settle
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = def.Rescan
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, wrap(err, "open dist")
	}
	d := &Dist{
		dir: dir, cfg: cfg, log: cfg.Logger,
		changes: make(chan struct{}, 1),
		kick:    make(chan string, 16),
		files:   map[string]*distFile{},
		bad:     map[string]*distFile{},
	}
	d.scan(nil)
	return d, nil
}

// Dir returns the folder's path.
func (d *Dist) Dir() string { return d.dir }

// Path returns the path of file in the folder (no check that it exists).
func (d *Dist) Path(file string) string { return filepath.Join(d.dir, filepath.Base(file)) }

// Changes returns a channel that receives a value after the index changes.
// Signals are coalesced (capacity one): after a receive, read Index for the
// current state. Meant for one consumer.
func (d *Dist) Changes() <-chan struct{} { return d.changes }

// Index returns a snapshot of the index.
func (d *Dist) Index() Index {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ix := Index{Entries: make([]IndexEntry, 0, len(d.files))}
	for _, f := range d.files {
		ix.Entries = append(ix.Entries, f.entry)
	}
	for _, f := range d.bad {
		ix.Invalid = append(ix.Invalid, Invalid{File: f.entry.File, Error: f.err})
	}
	sortIndex(&ix)
	return ix
}

// Open opens an indexed archive for reading and returns its entry. It
// fails with ErrNotFound if file is not a valid indexed archive, and with
// ErrChanged if the file on disk is no longer the one indexed (it is then
// checked again shortly). The caller closes the file.
func (d *Dist) Open(file string) (*os.File, *IndexEntry, error) {
	d.mu.RLock()
	df := d.files[file]
	d.mu.RUnlock()
	if df == nil {
		return nil, nil, fmt.Errorf("%w: %s is not in the dist index", ErrNotFound, file)
	}
	f, err := os.Open(filepath.Join(d.dir, file))
	if err != nil {
		d.recheck(file)
		return nil, nil, wrap(err, "open %s", file)
	}
	fi, err := f.Stat()
	if err != nil || !sameStat(fi, df.stat) {
		f.Close()
		d.recheck(file)
		return nil, nil, fmt.Errorf("%w: %s", ErrChanged, file)
	}
	e := df.entry
	return f, &e, nil
}

// signature returns the verified signature bytes of an indexed archive.
func (d *Dist) signature(file string) ([]byte, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	df := d.files[file]
	if df == nil || df.sig == nil {
		return nil, false
	}
	return df.sig, true
}

func (d *Dist) recheck(file string) {
	select {
	case d.kick <- file:
	default: // the periodic rescan catches it
	}
}

func sameStat(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// archiveFor maps a directory entry name to the archive it concerns:
// "x.tar.gz" and "x.tar.gz.sig" both concern "x.tar.gz". Hidden files
// (temporary files of Publish, Pack and editors) and everything else are
// ignored.
func archiveFor(name string) (string, bool) {
	if strings.HasPrefix(name, ".") {
		return "", false
	}
	name = strings.TrimSuffix(name, SigExt)
	return name, strings.HasSuffix(name, ArchiveExt)
}

// scan looks at every archive in the folder. Files in force are read again
// even if they look unchanged; the others only if their stat changed.
// Indexed files that are gone are dropped. It returns files to look at
// again later (still being written) with when.
func (d *Dist) scan(force map[string]bool) map[string]time.Time {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		d.log.Debug("dist: scan failed", "dir", d.dir, "err", err)
		return nil
	}
	present := map[string]bool{}
	later := map[string]time.Time{}
	for _, e := range ents {
		if file, ok := archiveFor(e.Name()); ok && !present[file] {
			present[file] = true
			if at, wait := d.check(file, force[file]); wait {
				later[file] = at
			}
		}
	}
	d.mu.Lock()
	changed := false
	for file := range d.files {
		if !present[file] {
			delete(d.files, file)
			changed = true
		}
	}
	for file := range d.bad {
		if !present[file] {
			delete(d.bad, file)
			changed = true
		}
	}
	d.mu.Unlock()
	if changed {
		d.changed()
	}
	return later
}

// check (re)indexes one archive. It reports wait=true, with a time to look
// again, for an archive that is truncated and was modified within Settle:
// it is probably still being written.
func (d *Dist) check(file string, force bool) (at time.Time, wait bool) {
	p := filepath.Join(d.dir, file)
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		d.set(file, nil)
		return time.Time{}, false
	}
	if err != nil {
		d.set(file, &distFile{entry: IndexEntry{File: file}, err: err.Error()})
		return time.Time{}, false
	}
	sigSt, _ := os.Stat(p + SigExt)
	d.mu.RLock()
	old := d.files[file]
	if old == nil {
		old = d.bad[file]
	}
	d.mu.RUnlock()
	if !force && old != nil && sameStat(fi, old.stat) && sameStat(sigSt, old.sigSt) {
		return time.Time{}, false
	}
	info, ierr := Inspect(p, d.cfg.Limits)
	if ierr != nil {
		now := time.Now()
		if mt := fi.ModTime(); errors.Is(ierr, ErrCorrupt) && mt.Before(now.Add(time.Second)) {
			if due := mt.Add(d.cfg.Settle); now.Before(due) {
				d.log.Debug("dist: archive incomplete, waiting", "file", file, "err", ierr)
				d.set(file, nil) // never serve the old entry for new bytes
				return due, true
			}
		}
		d.log.Debug("dist: invalid archive", "file", file, "err", ierr)
		d.set(file, &distFile{entry: IndexEntry{File: file}, err: ierr.Error(), stat: fi, sigSt: sigSt})
		return time.Time{}, false
	}
	d.log.Debug("dist: indexed", "file", file, "sha256", info.SHA256, "signer", info.Signer)
	d.set(file, &distFile{
		entry: IndexEntry{
			Name: info.Name, Version: info.Version, File: file, Size: info.Size, SHA256: info.SHA256,
			Signer: info.Signer, Mode: info.Manifest.Mode, Description: info.Manifest.Description, Label: info.Manifest.Label,
		},
		sig: info.sig, stat: info.stat, sigSt: sigSt,
	})
	return time.Time{}, false
}

// set records the state of file (nil: absent) and signals a change if the
// index differs.
func (d *Dist) set(file string, df *distFile) {
	d.mu.Lock()
	oldGood, oldBad := d.files[file], d.bad[file]
	delete(d.files, file)
	delete(d.bad, file)
	switch {
	case df == nil:
	case df.err != "":
		d.bad[file] = df
	default:
		d.files[file] = df
	}
	changed := !sameEntry(oldGood, d.files[file]) || !sameEntry(oldBad, d.bad[file])
	if changed {
		d.gen++
	}
	d.mu.Unlock()
	if changed {
		d.changed()
	}
}

func sameEntry(a, b *distFile) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.entry == b.entry && a.err == b.err
}

func (d *Dist) changed() {
	select {
	case d.changes <- struct{}{}:
	default:
	}
}

// Run watches the folder until ctx is done, keeping the index current:
// events are debounced per archive (Debounce), an archive is read only once
// it is complete, a watcher overflow triggers a rescan, and a periodic
// rescan catches anything missed. It returns ctx.Err() when ctx is done, or
// an error if the folder cannot be watched.
func (d *Dist) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return fmt.Errorf("distrib: Dist.Run called twice for %s", d.dir)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return wrap(err, "watch %s", d.dir)
	}
	defer w.Close()
	if err := w.Add(d.dir); err != nil {
		return wrap(err, "watch %s", d.dir)
	}
	return d.loop(ctx, w)
}

func (d *Dist) loop(ctx context.Context, w *fsnotify.Watcher) error {
	pending := d.scan(nil) // catch what changed before the watch was added
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var rescan <-chan time.Time
	if d.cfg.Rescan > 0 {
		t := time.NewTicker(d.cfg.Rescan)
		defer t.Stop()
		rescan = t.C
	}
	arm := func() {
		var first time.Time
		for _, at := range pending {
			if first.IsZero() || at.Before(first) {
				first = at
			}
		}
		if first.IsZero() {
			timer.Stop()
			return
		}
		timer.Reset(max(time.Until(first), 0))
	}
	// process checks the pending files that are due (all of them if all).
	process := func(all bool) {
		now := time.Now()
		for file, at := range pending {
			if !all && at.After(now) {
				continue
			}
			delete(pending, file)
			if at, wait := d.check(file, true); wait {
				pending[file] = at
			}
		}
	}
	arm()
	if d.onReady != nil {
		d.onReady()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("distrib: watch %s: watcher closed", d.dir)
			}
			name := filepath.Base(ev.Name)
			if d.onSync != nil && strings.HasPrefix(name, syncPrefix) && ev.Has(fsnotify.Create) {
				process(true)
				d.onSync(name)
			} else if file, ok := archiveFor(name); ok {
				pending[file] = time.Now().Add(d.cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("distrib: watch %s: watcher closed", d.dir)
			}
			d.log.Debug("dist: watcher error, rescanning", "dir", d.dir, "err", err)
			for file, at := range d.scan(nil) {
				pending[file] = at
			}
		case file := <-d.kick:
			pending[file] = time.Now()
		case <-timer.C:
			process(false)
		case <-rescan:
			for file, at := range d.scan(nil) {
				pending[file] = at
			}
		}
		arm()
	}
}
