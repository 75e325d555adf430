package distrib

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// OriginLocal is InstallOptions.Origin for archives from this node's own
// dist folder or disk.
const OriginLocal = "local"

const (
	// memInstallMax is the largest archive Install reads into memory.
	memInstallMax = 64 << 20

	stateFile     = "state.json"
	recordExt     = ".json"
	stagingPrefix = ".staging-"
	trashPrefix   = ".trash-"
)

// Store holds installed plugins under one directory:
//
//	DIR/NAME/VERSION/        the unpacked archive (never modified)
//	DIR/NAME/VERSION.json    install record: sha256, signer, origin, time
//	DIR/NAME/state.json      {"current": VERSION, "previous": VERSION}
//	DIR/.staging-*/          installs in progress (removed by OpenStore)
//
// A version directory appears only by renaming a complete, verified tree
// into place, and state.json is replaced atomically, so a crash at any
// point leaves either the old or the new version current (docs/SECURITY.md
// says what is and is not fsynced). Methods are safe
// for concurrent use; one process should own the directory.
type Store struct {
	dir       string
	installMu sync.Mutex // serialises changes (Install, Remove, SetCurrent)

	mu      sync.RWMutex
	plugins map[string]*plugin

	memMax int64 // memInstallMax; tests lower it to cover the streaming path
}

type plugin struct {
	current, previous string
	versions          map[string]*Installed
}

type pluginState struct {
	Current  string `json:"current"`
	Previous string `json:"previous,omitempty"`
}

type installRecord struct {
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	SHA256      string    `json:"sha256"`
	Signer      string    `json:"signer,omitempty"`
	Origin      string    `json:"origin"`
	InstalledAt time.Time `json:"installed_at"`
}

// Installed describes one installed version.
type Installed struct {
	Name, Version string
	// Dir is the absolute path of the unpacked archive; run the plugin
	// from here (see Manifest.ResolveArgv).
	Dir string
	// SHA256 is the hex SHA-256 of the archive it came from.
	SHA256 string
	// Signer is the SignerID that signed it, "" if unsigned.
	Signer   string
	Manifest *Manifest
	// InstalledAt is when it was installed.
	InstalledAt time.Time
	// Origin is InstallOptions.Origin: OriginLocal or a node id.
	Origin string
	// Current reports whether this is the version that runs.
	Current bool
	// NewPin is set on the result of the Install that pinned Signer for
	// Name (the first signed install of that name).
	NewPin bool
}

// InstallOptions tunes Store.Install.
type InstallOptions struct {
	// AllowDowngrade installs a version lower than the current one, and
	// replaces an installed version that has different content.
	AllowDowngrade bool
	// AllowUnsigned installs an unsigned archive from a peer. Unsigned
	// archives from OriginLocal are always allowed.
	AllowUnsigned bool
	// Trust holds the publisher pins. Required for signed archives from
	// peers; a signed archive from OriginLocal without a Trust is not
	// pinned.
	Trust *TrustStore
	// Limits bound the archive (DefaultLimits when zero).
	Limits Limits
	// Origin is OriginLocal for an archive from this node, or the id of the
	// node it was fetched from. Anything but OriginLocal, including "",
	// counts as a peer.
	Origin string
	// SHA256, if set, is the hex SHA-256 the caller has just verified for
	// the archive (Fetch's want.SHA256). Install then checks the signature
	// against it without first hashing the file, hashes the bytes while it
	// extracts them into its private staging directory, and fails with
	// ErrHashMismatch, having installed nothing, if they do not hash to it.
	// A wrong value costs a failed install, never an unverified one.
	SHA256 string
}

// OpenStore opens (creating if needed) the store in dir, loads what is
// installed, and removes leftovers of interrupted installs.
func OpenStore(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, wrap(err, "open store")
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, wrap(err, "open store")
	}
	s := &Store{dir: abs, plugins: map[string]*plugin{}, memMax: memInstallMax}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return nil, wrap(err, "open store")
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, stagingPrefix) || strings.HasPrefix(n, trashPrefix) {
			os.RemoveAll(filepath.Join(abs, n))
			continue
		}
		if !e.IsDir() || ValidName(n) != nil {
			continue
		}
		if p := s.load(n); p != nil {
			s.plugins[n] = p
		}
	}
	return s, nil
}

// load reads one plugin's records and state.
func (s *Store) load(name string) *plugin {
	nd := filepath.Join(s.dir, name)
	p := &plugin{versions: map[string]*Installed{}}
	ents, err := os.ReadDir(nd)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		ver, ok := strings.CutSuffix(e.Name(), recordExt)
		if !ok || e.IsDir() {
			continue
		}
		if _, err := ParseVersion(ver); err != nil {
			continue
		}
		if in, err := s.readInstalled(name, ver); err == nil {
			p.versions[ver] = in
		}
	}
	for _, e := range ents {
		// A version directory without a record is an install interrupted
		// after its rename: remove it. One whose record exists but did not
		// load (say, a manifest for a newer protocol) is left alone.
		if _, err := ParseVersion(e.Name()); err == nil && e.IsDir() {
			if _, err := os.Lstat(filepath.Join(nd, e.Name()+recordExt)); errors.Is(err, os.ErrNotExist) {
				os.RemoveAll(filepath.Join(nd, e.Name()))
			}
		}
	}
	var st pluginState
	if b, err := os.ReadFile(filepath.Join(nd, stateFile)); err == nil && json.Unmarshal(b, &st) == nil {
		if p.versions[st.Current] != nil {
			p.current = st.Current
		}
		if p.versions[st.Previous] != nil {
			p.previous = st.Previous
		}
	}
	if len(p.versions) == 0 {
		return nil
	}
	if p.current == "" { // state lost: run the highest version
		p.current = highest(p.versions)
	}
	return p
}

func (s *Store) readInstalled(name, ver string) (*Installed, error) {
	nd := filepath.Join(s.dir, name)
	b, err := os.ReadFile(filepath.Join(nd, ver+recordExt))
	if err != nil {
		return nil, err
	}
	var r installRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if r.Name != name || r.Version != ver {
		return nil, fmt.Errorf("record %s/%s%s names %s %s", name, ver, recordExt, r.Name, r.Version)
	}
	dir := filepath.Join(nd, ver)
	mb, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(mb)
	if err != nil {
		return nil, err
	}
	return &Installed{Name: name, Version: ver, Dir: dir, SHA256: r.SHA256, Signer: r.Signer,
		Manifest: m, InstalledAt: r.InstalledAt, Origin: r.Origin}, nil
}

func highest(vs map[string]*Installed) string {
	best := ""
	for v := range vs {
		if best == "" || Compare(v, best) > 0 {
			best = v
		}
	}
	return best
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Install verifies and installs the archive at archivePath (its signature,
// if any, is archivePath+".sig"), makes it the current version of its
// plugin, keeps the version that was current before, and removes older
// ones. In order, it:
//
//   - parses the file name, hashes the archive (or, given opt.SHA256, takes
//     that hash for now), and verifies its signature against the hash;
//   - applies the trust policy: a signed archive must be by the signer
//     pinned for its name (with no pin yet, the signer is pinned, and
//     Installed.NewPin is set); an unsigned archive from a peer is refused
//     unless opt.AllowUnsigned;
//   - refuses a lower version than the current one unless
//     opt.AllowDowngrade; installing the installed version with the same
//     content just makes it current;
//   - extracts into a private staging directory (Extract's checks), from
//     the bytes hashed in memory or hashing what it reads, so that bytes
//     other than the verified ones are refused (ErrChanged, or
//     ErrHashMismatch against opt.SHA256) before anything is installed, and
//     validates the manifest against the file name;
//   - renames the tree into place, then switches "current" atomically.
//
// Any failure leaves what was installed untouched, and the error (wrapping
// one of this package's sentinels) says why and what to do.
func (s *Store) Install(archivePath string, opt InstallOptions) (*Installed, error) {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	file := filepath.Base(archivePath)
	in, err := s.install(archivePath, file, opt)
	if err != nil {
		return nil, wrap(err, "install %s", file)
	}
	return in, nil
}

func (s *Store) install(archivePath, file string, opt InstallOptions) (*Installed, error) {
	lim := opt.Limits.withDefaults()
	name, v, err := ParseFileName(file)
	if err != nil {
		return nil, err
	}
	version := v.String()
	remote := opt.Origin != OriginLocal
	from := "this node"
	if remote {
		from = "an unknown source"
		if opt.Origin != "" {
			from = fmt.Sprintf("node %q", opt.Origin)
		}
	}

	f, err := os.Open(archivePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > lim.MaxArchiveBytes {
		return nil, fmt.Errorf("%w: archive is %d bytes, more than %d", ErrTooLarge, fi.Size(), lim.MaxArchiveBytes)
	}
	// With a claimed hash (opt.SHA256, verified by Fetch), the file is not
	// hashed before extraction: the signature is checked against the claim
	// and the bytes extracted are hashed as they are read (see
	// extractRehash). Otherwise archives up to memInstallMax are read into
	// memory once: hashed, verified and extracted from the same bytes;
	// larger ones are read twice and hashed both times.
	claimed, err := parseClaim(opt.SHA256)
	if err != nil {
		return nil, err
	}
	var data []byte
	if fi.Size() <= s.memMax && claimed == nil {
		data = make([]byte, fi.Size())
		if _, err := io.ReadFull(f, data); err != nil {
			return nil, fmt.Errorf("%w: reading the archive: %v; try again", ErrChanged, err)
		}
	}
	sum := claimed
	if sum == nil {
		h := sha256.New()
		if data != nil {
			h.Write(data)
		} else if _, err := io.Copy(h, f); err != nil {
			return nil, err
		}
		sum = h.Sum(nil)
	}
	sumHex := hex.EncodeToString(sum)

	// Signature and trust.
	sig, _, err := readSig(archivePath + SigExt)
	if err != nil {
		return nil, fmt.Errorf("%w (get a good signature from the publisher)", err)
	}
	signer := ""
	if sig != nil {
		if err := sig.Verify(sum); err != nil {
			return nil, err
		}
		signer = SignerID(sig.Signer)
	}
	newPin := false
	switch {
	case signer != "" && opt.Trust != nil:
		pinned, ok := opt.Trust.Get(name)
		if ok && pinned != signer {
			return nil, fmt.Errorf("%w: %s is pinned to publisher %s, but this archive from %s is signed by %s; "+
				"if the publisher really changed keys, check with them, then run `nearby trust unpin %s` and try again",
				ErrUntrustedSigner, name, pinned, from, signer, name)
		}
		newPin = !ok
	case signer != "" && remote:
		return nil, fmt.Errorf("%w: no trust store to check the pin for %s (a wiring bug: InstallOptions.Trust is nil)", ErrUntrustedSigner, name)
	case signer == "" && remote && !opt.AllowUnsigned:
		return nil, fmt.Errorf("%w: %s from %s has no signature, and only signed plugins are installed from peers; "+
			"ask the publisher to sign it (`nearby pack --sign DIR`), or accept the risk with --allow-unsigned",
			ErrUnsigned, file, from)
	}

	// Version policy.
	s.mu.RLock()
	var cur, same *Installed
	if p := s.plugins[name]; p != nil {
		cur, same = p.versions[p.current], p.versions[version]
	}
	s.mu.RUnlock()
	if cur != nil && Compare(version, cur.Version) < 0 && !opt.AllowDowngrade {
		return nil, fmt.Errorf("%w: %s %s is older than the installed %s; ask for the downgrade explicitly (e.g. `nearby run %s@%s --downgrade`)",
			ErrDowngrade, name, version, cur.Version, name, version)
	}
	if same != nil {
		if same.SHA256 == sumHex && claimed != nil {
			// Nothing is extracted on this path to check the claim
			// against: hash the file after all.
			got, err := hashFile(f)
			if err != nil {
				return nil, err
			}
			if err := checkClaim(got, sumHex); err != nil {
				return nil, err
			}
		}
		if same.SHA256 == sumHex {
			if newPin {
				if err := opt.Trust.Pin(name, signer); err != nil {
					return nil, err
				}
			}
			if err := s.switchTo(name, version); err != nil {
				if newPin {
					opt.Trust.Unpin(name)
				}
				return nil, err
			}
			in, _ := s.get(name, version)
			in.NewPin = newPin
			return in, nil
		}
		if !opt.AllowDowngrade {
			return nil, fmt.Errorf("%w: %s %s is installed from an archive with sha256 %s, this one is %s; "+
				"versions are immutable: publish a new version, or remove %s %s first",
				ErrVersionConflict, name, version, same.SHA256[:12], sumHex[:12], name, version)
		}
	}

	// Extract into staging, re-hashing what is read.
	staging, err := os.MkdirTemp(s.dir, stagingPrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	tree := filepath.Join(staging, "tree")
	if data != nil {
		if err := Extract(bytes.NewReader(data), tree, lim); err != nil {
			return nil, err
		}
	} else {
		got, err := extractRehash(f, tree, lim)
		if got != "" && got != sumHex {
			// Checked first: an extraction error may be due to other bytes.
			if claimed == nil {
				return nil, fmt.Errorf("%w: the archive changed while it was being installed; try again", ErrChanged)
			}
			return nil, checkClaim(got, sumHex)
		}
		if err != nil {
			return nil, err
		}
	}
	mb, err := os.ReadFile(filepath.Join(tree, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		mb, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := manifestFor(file, name, version, mb, "")
	if err != nil {
		return nil, err
	}

	// Commit: pin, rename into place, record, switch.
	if newPin {
		if err := opt.Trust.Pin(name, signer); err != nil {
			return nil, err
		}
	}
	undo := []func(){}
	fail := func(err error) (*Installed, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, err
	}
	if newPin {
		undo = append(undo, func() { opt.Trust.Unpin(name) })
	}
	nd := filepath.Join(s.dir, name)
	if err := os.MkdirAll(nd, 0o755); err != nil {
		return fail(err)
	}
	vdir := filepath.Join(nd, version)
	if _, err := os.Lstat(vdir); err == nil { // replaced (AllowDowngrade) or orphaned
		trash := filepath.Join(staging, "old")
		if err := os.Rename(vdir, trash); err != nil {
			return fail(err)
		}
		undo = append(undo, func() { os.Rename(trash, vdir) })
	}
	if err := os.Rename(tree, vdir); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { os.RemoveAll(vdir) })
	rec := installRecord{Name: name, Version: version, SHA256: sumHex, Signer: signer, Origin: cmp.Or(opt.Origin, "unknown"), InstalledAt: time.Now().UTC().Truncate(time.Second)}
	recPath := filepath.Join(nd, version+recordExt)
	oldRec, recErr := os.ReadFile(recPath)
	if err := writeJSON(recPath, rec); err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		if recErr == nil {
			fsutil.WriteFileAtomic(recPath, oldRec, 0o644)
		} else {
			os.Remove(recPath)
		}
	})
	in := &Installed{Name: name, Version: version, Dir: vdir, SHA256: sumHex, Signer: signer, Manifest: m,
		InstalledAt: rec.InstalledAt, Origin: rec.Origin}
	s.mu.Lock()
	p := s.plugins[name]
	if p == nil {
		p = &plugin{versions: map[string]*Installed{}}
		s.plugins[name] = p
	}
	prevIn := p.versions[version]
	p.versions[version] = in
	s.mu.Unlock()
	if err := s.switchTo(name, version); err != nil {
		s.mu.Lock()
		if prevIn != nil {
			p.versions[version] = prevIn
		} else {
			delete(p.versions, version)
			if len(p.versions) == 0 {
				delete(s.plugins, name)
			}
		}
		s.mu.Unlock()
		return fail(err)
	}
	out, _ := s.get(name, version)
	out.NewPin = newPin
	return out, nil
}

// extractRehash extracts f from its start, hashing what it reads (and
// the rest of the file after an error, up to the archive size limit), and
// returns the hex SHA-256 of that; it is "" only if the file could not be
// read. Reading and hashing run on their own goroutine (readAhead).
func extractRehash(f *os.File, tree string, lim Limits) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	ra := newReadAhead(io.LimitReader(f, lim.MaxArchiveBytes+1))
	xerr := Extract(ra, tree, lim)
	sum, err := ra.finish()
	if err != nil {
		return "", err
	}
	return sum, xerr
}

// hashFile returns the hex SHA-256 of f from its start.
func hashFile(f *os.File) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parseClaim decodes InstallOptions.SHA256; nil if it is "".
func parseClaim(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size || strings.ToLower(s) != s {
		return nil, fmt.Errorf("%w: InstallOptions.SHA256 %q is not 64 lowercase hex digits", ErrHashMismatch, clip(s, 80))
	}
	return b, nil
}

// checkClaim fails unless the archive hashed to want.
func checkClaim(got, want string) error {
	if got != want {
		return fmt.Errorf("%w: the archive's sha256 is %s, not the %s it was verified as (it changed since); try again",
			ErrHashMismatch, got, want)
	}
	return nil
}

// switchTo makes version current (the old current becomes previous),
// writes state.json, and prunes versions other than those two.
func (s *Store) switchTo(name, version string) error {
	s.mu.RLock()
	p := s.plugins[name]
	st := pluginState{Current: version, Previous: p.previous}
	if p.current != version && p.current != "" {
		st.Previous = p.current
	}
	if st.Previous == version {
		st.Previous = ""
	}
	s.mu.RUnlock()
	if err := writeJSON(filepath.Join(s.dir, name, stateFile), st); err != nil {
		return err
	}
	s.mu.Lock()
	p.current, p.previous = st.Current, st.Previous
	var prune []string
	for v := range p.versions {
		if v != p.current && v != p.previous {
			prune = append(prune, v)
			delete(p.versions, v)
		}
	}
	s.mu.Unlock()
	for _, v := range prune {
		s.removeFiles(name, v)
	}
	return nil
}

// removeFiles deletes one version's record, then its tree (moved aside
// first so that a half-deleted tree is never under its version name).
func (s *Store) removeFiles(name, version string) error {
	nd := filepath.Join(s.dir, name)
	if err := os.Remove(filepath.Join(nd, version+recordExt)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	trash, err := os.MkdirTemp(s.dir, trashPrefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(trash)
	if err := os.Rename(filepath.Join(nd, version), filepath.Join(trash, "t")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, append(b, '\n'), 0o644)
}

func (s *Store) get(name, version string) (*Installed, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.plugins[name]
	if p == nil || p.versions[version] == nil {
		return nil, false
	}
	in := *p.versions[version]
	in.Current = version == p.current
	return &in, true
}

// Current returns the version of name that runs.
func (s *Store) Current(name string) (*Installed, bool) {
	s.mu.RLock()
	p := s.plugins[name]
	s.mu.RUnlock()
	if p == nil {
		return nil, false
	}
	s.mu.RLock()
	cur := p.current
	s.mu.RUnlock()
	return s.get(name, cur)
}

// Version returns one installed version of name.
func (s *Store) Version(name, version string) (*Installed, bool) {
	return s.get(name, version)
}

// List returns every installed version, sorted by name, then version from
// highest; Current marks the one that runs.
func (s *Store) List() []Installed {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Installed
	for _, p := range s.plugins {
		for v, in := range p.versions {
			c := *in
			c.Current = v == p.current
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Installed) int {
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return Compare(b.Version, a.Version)
	})
	return out
}

// SetCurrent makes an installed version the current one (e.g. to roll back
// to the previous version). The old current becomes the previous one and
// older versions are pruned.
func (s *Store) SetCurrent(name, version string) error {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	if _, ok := s.get(name, version); !ok {
		return wrap(fmt.Errorf("%w: %s %s is not installed", ErrNotFound, name, version), "set current")
	}
	if err := s.switchTo(name, version); err != nil {
		return wrap(err, "set current %s %s", name, version)
	}
	return nil
}

// Remove uninstalls one version of name, or all of them if version is "".
// Removing the current version makes the previous one current (or the
// highest left). Stop the plugin first.
func (s *Store) Remove(name, version string) error {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	s.mu.RLock()
	p := s.plugins[name]
	if p == nil || (version != "" && p.versions[version] == nil) {
		s.mu.RUnlock()
		return wrap(fmt.Errorf("%w: %s %s is not installed", ErrNotFound, name, version), "remove")
	}
	left := map[string]*Installed{}
	var gone []string
	for v, in := range p.versions {
		if version == "" || v == version {
			gone = append(gone, v)
		} else {
			left[v] = in
		}
	}
	st := pluginState{Current: p.current, Previous: p.previous}
	s.mu.RUnlock()
	if left[st.Previous] == nil {
		st.Previous = ""
	}
	if left[st.Current] == nil {
		st.Current, st.Previous = st.Previous, ""
		if st.Current == "" {
			st.Current = highest(left)
		}
	}
	nd := filepath.Join(s.dir, name)
	if len(left) == 0 {
		if err := os.Remove(filepath.Join(nd, stateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return wrap(err, "remove %s", name)
		}
	} else if err := writeJSON(filepath.Join(nd, stateFile), st); err != nil {
		return wrap(err, "remove %s", name)
	}
	s.mu.Lock()
	if len(left) == 0 {
		delete(s.plugins, name)
	} else {
		p.versions, p.current, p.previous = left, st.Current, st.Previous
	}
	s.mu.Unlock()
	var errs []error
	for _, v := range gone {
		if err := s.removeFiles(name, v); err != nil {
			errs = append(errs, err)
		}
	}
	if len(left) == 0 {
		os.Remove(nd)
	}
	if err := errors.Join(errs...); err != nil {
		return wrap(err, "remove %s", name)
	}
	return nil
}

// readAhead reads r on its own goroutine in large chunks, hashing each
// chunk there, so that reading and hashing overlap with what consumes the
// bytes (decompression). Its user calls finish exactly once.
type readAhead struct {
	full chan chunk
	free chan []byte
	stop chan struct{}
	done chan struct{}
	cur  chunk
	off  int
	sum  string // hex SHA-256 of everything read, once done is closed
}

type chunk struct {
	b   []byte
	err error
}

func newReadAhead(r io.Reader) *readAhead {
	const nbuf, size = 4, 256 << 10
	ra := &readAhead{full: make(chan chunk, nbuf), free: make(chan []byte, nbuf),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range nbuf {
		ra.free <- make([]byte, size)
	}
	go func() {
		defer close(ra.done)
		h := sha256.New()
		defer func() { ra.sum = hex.EncodeToString(h.Sum(nil)) }()
		for {
			var b []byte
			select {
			case b = <-ra.free:
			case <-ra.stop:
				return
			}
			n, err := io.ReadFull(r, b)
			h.Write(b[:n])
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case ra.full <- chunk{b[:n], err}:
			case <-ra.stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ra
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for ra.off == len(ra.cur.b) {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		if ra.cur.b != nil {
			ra.free <- ra.cur.b[:cap(ra.cur.b)]
		}
		ra.cur, ra.off = <-ra.full, 0
	}
	n := copy(p, ra.cur.b[ra.off:])
	ra.off += n
	return n, nil
}

// finish drains the rest of the file (hashing it) and returns the hex
// SHA-256 of all of it, or the read error.
func (ra *readAhead) finish() (string, error) {
	var buf [32 << 10]byte
	for {
		if _, err := ra.Read(buf[:]); err == io.EOF {
			break
		} else if err != nil {
			close(ra.stop)
			<-ra.done
			return "", err
		}
	}
	<-ra.done
	return ra.sum, nil
}
