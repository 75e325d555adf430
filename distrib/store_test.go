package distrib

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// storeFix is a store with chat 1.0.0 installed from a peer, signed by key
// and pinned.
type storeFix struct {
	t     *testing.T
	dir   string
	src   string
	s     *Store
	trust *TrustStore
	key   ed25519.PrivateKey
}

func newStoreFix(t *testing.T) *storeFix {
	t.Helper()
	root := t.TempDir()
	f := &storeFix{t: t, dir: filepath.Join(root, "plugins"), src: filepath.Join(root, "src"), key: newKey(t)}
	os.Mkdir(f.src, 0o755)
	var err error
	if f.s, err = OpenStore(f.dir); err != nil {
		t.Fatal(err)
	}
	if f.trust, err = OpenTrust(filepath.Join(root, "trust.json")); err != nil {
		t.Fatal(err)
	}
	in, err := f.s.Install(f.archive("chat", "1.0.0", goodEnts("chat", "1.0.0"), f.key), f.opts("node-a"))
	if err != nil {
		t.Fatal(err)
	}
	if !in.NewPin || in.Signer != signerOf(f.key) || !in.Current {
		t.Fatalf("first install: %+v", in)
	}
	return f
}

// archive writes a test archive into a fresh directory under src.
func (f *storeFix) archive(name, version string, ents []ent, key ed25519.PrivateKey) string {
	f.t.Helper()
	d, err := os.MkdirTemp(f.src, "a")
	if err != nil {
		f.t.Fatal(err)
	}
	p := writeArchive(f.t, d, name+"-"+version+ArchiveExt, tarGz(f.t, ents))
	if key != nil {
		signFile(f.t, key, p)
	}
	return p
}

func (f *storeFix) opts(origin string) InstallOptions {
	return InstallOptions{Trust: f.trust, Origin: origin}
}

// snapshot captures everything Install may change.
func (f *storeFix) snapshot() string {
	f.t.Helper()
	cur, _ := f.s.Current("chat")
	pins, _ := os.ReadFile(filepath.Join(filepath.Dir(f.dir), "trust.json"))
	v := ""
	if cur != nil {
		v = cur.Version + " " + cur.SHA256
	}
	return treeHash(f.t, f.dir) + "|" + string(pins) + "|" + v
}

func TestInstallRefusesBadInput(t *testing.T) {
	small := Limits{MaxFiles: 20, MaxFileBytes: 1 << 20, MaxTotalBytes: 4 << 20}
	with := func(extra ...ent) []ent { return append(goodEnts("chat", "1.1.0"), extra...) }
	tests := []struct {
		name    string
		file    string // archive file name; default chat-1.1.0.tar.gz
		ents    []ent
		raw     []byte // gzip bytes instead of ents
		signer  string // "key" (default), "other", "none", "garbage", "wrong-bytes"
		opts    func(*InstallOptions)
		want    error
		mention string
	}{
		{name: "dotdot", ents: with(ent{name: "../../evil", body: "x"}), want: ErrUnsafePath},
		{name: "absolute", ents: with(ent{name: "/tmp/evil", body: "x"}), want: ErrUnsafePath},
		{name: "symlink out", ents: with(ent{name: "lib/l", typ: tar.TypeSymlink, link: "../../../etc"}), want: ErrUnsafePath},
		{name: "symlink chain out", ents: with(ent{name: "t", typ: tar.TypeSymlink, link: "."}, ent{name: "u", typ: tar.TypeSymlink, link: "t/.."}), want: ErrUnsafePath},
		{name: "hardlink out", ents: with(ent{name: "h", typ: tar.TypeLink, link: "../chat/1.0.0/nearby.json"}), want: ErrUnsafePath},
		{name: "device", ents: with(ent{name: "dev", typ: tar.TypeChar}), want: ErrUnsafePath},
		{name: "fifo", ents: with(ent{name: "fifo", typ: tar.TypeFifo}), want: ErrUnsafePath},
		{name: "lying sparse header", raw: gz(t, append(tarBytes(t, goodEnts("chat", "1.1.0"))[:0:0], sparseBomb(1<<30)...)), opts: func(o *InstallOptions) { o.Limits = small }, want: ErrTooLarge},
		{name: "bomb", ents: with(ent{name: "zeros", body: string(make([]byte, 8<<20))}), opts: func(o *InstallOptions) { o.Limits = small }, want: ErrTooLarge},
		{name: "too many files", ents: with(func() []ent {
			var es []ent
			for i := 0; i < 30; i++ {
				es = append(es, ent{name: "f/" + string(rune('a'+i)), body: "x"})
			}
			return es
		}()...), opts: func(o *InstallOptions) { o.Limits = small }, want: ErrTooLarge},
		{name: "archive too large", ents: goodEnts("chat", "1.1.0"), opts: func(o *InstallOptions) { o.Limits = Limits{MaxArchiveBytes: 64} }, want: ErrTooLarge},
		{name: "truncated gzip", raw: func() []byte { b := tarGz(t, goodEnts("chat", "1.1.0")); return b[:len(b)-10] }(), want: ErrCorrupt},
		{name: "version mismatch", ents: goodEnts("chat", "1.1.1"), want: ErrBadManifest, mention: "file name says chat 1.1.0"},
		{name: "name mismatch", ents: goodEnts("talk", "1.1.0"), want: ErrBadManifest},
		{name: "invalid semver", file: "chat-1.1.tar.gz", ents: goodEnts("chat", "1.1.0"), want: ErrBadVersion},
		{name: "invalid name", file: "Chat-1.1.0.tar.gz", ents: goodEnts("chat", "1.1.0"), want: ErrBadName},
		{name: "missing manifest", ents: []ent{{name: "run.sh", body: "x"}}, want: ErrBadManifest, mention: "no nearby.json"},
		{name: "garbage signature", ents: goodEnts("chat", "1.1.0"), signer: "garbage", want: ErrBadSignature},
		{name: "signature of other bytes", ents: goodEnts("chat", "1.1.0"), signer: "wrong-bytes", want: ErrBadSignature},
		{name: "other signer", ents: goodEnts("chat", "1.1.0"), signer: "other", want: ErrUntrustedSigner, mention: "nearby trust unpin chat"},
		{name: "unsigned from peer", ents: goodEnts("chat", "1.1.0"), signer: "none", want: ErrUnsigned, mention: "nearby pack --sign"},
		{name: "unsigned, no origin", ents: goodEnts("chat", "1.1.0"), signer: "none", opts: func(o *InstallOptions) { o.Origin = "" }, want: ErrUnsigned},
		{name: "no trust store", ents: goodEnts("chat", "1.1.0"), opts: func(o *InstallOptions) { o.Trust = nil }, want: ErrUntrustedSigner},
		{name: "lower version", file: "chat-0.9.0.tar.gz", ents: goodEnts("chat", "0.9.0"), want: ErrDowngrade, mention: "--downgrade"},
		{name: "same version other bytes", file: "chat-1.0.0.tar.gz", ents: append(goodEnts("chat", "1.0.0"), ent{name: "new", body: "x"}), want: ErrVersionConflict},
	}
	for _, tt := range tests {
		for _, mode := range []string{"", "/streamed", "/claimed", "/streamed/claimed"} {
			t.Run(tt.name+mode, func(t *testing.T) {
				f := newStoreFix(t)
				if strings.Contains(mode, "streamed") {
					f.s.memMax = -1 // extract from the file, not from memory
				}
				before := f.snapshot()
				file := tt.file
				if file == "" {
					file = "chat-1.1.0.tar.gz"
				}
				data := tt.raw
				if data == nil {
					data = tarGz(t, tt.ents)
				}
				p := writeArchive(t, f.src, file, data)
				switch tt.signer {
				case "", "key":
					signFile(t, f.key, p)
				case "other":
					signFile(t, newKey(t), p)
				case "garbage":
					os.WriteFile(p+SigExt, []byte("nearby-sig-v1 nonsense"), 0o644)
				case "wrong-bytes":
					os.WriteFile(p+SigExt, Sign(f.key, make([]byte, 32)), 0o644)
				}
				opts := f.opts("node-b")
				if strings.Contains(mode, "claimed") { // as after Fetch: the true hash
					opts.SHA256 = hexSHA(data)
				}
				if tt.opts != nil {
					tt.opts(&opts)
				}
				in, err := f.s.Install(p, opts)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Install = %+v, %v; want %v", in, err, tt.want)
				}
				if !strings.Contains(err.Error(), tt.mention) {
					t.Errorf("error %q does not mention %q", err, tt.mention)
				}
				if after := f.snapshot(); after != before {
					t.Error("a failed install changed what was installed")
				}
				if cur, ok := f.s.Current("chat"); !ok || cur.Version != "1.0.0" {
					t.Errorf("current is %+v", cur)
				}
				if ents, _ := os.ReadDir(f.dir); len(ents) != 1 {
					t.Errorf("store dir holds %v, want only chat/", ents)
				}
				// The same store then installs a good archive.
				if _, err := f.s.Install(f.archive("chat", "1.3.0", goodEnts("chat", "1.3.0"), f.key), f.opts("node-b")); err != nil {
					t.Fatalf("good install after a failed one: %v", err)
				}
			})
		}
	}
}

func TestInstallUpgradeKeepsPrevious(t *testing.T) {
	f := newStoreFix(t)
	for _, v := range []string{"1.1.0", "1.2.0"} {
		in, err := f.s.Install(f.archive("chat", v, goodEnts("chat", v), f.key), f.opts("node-b"))
		if err != nil {
			t.Fatal(err)
		}
		if in.NewPin || !in.Current || in.Version != v || in.Origin != "node-b" {
			t.Fatalf("install %s: %+v", v, in)
		}
		if b, err := os.ReadFile(filepath.Join(in.Dir, "lib", "data.txt")); err != nil || string(b) != "data "+v {
			t.Fatalf("installed files: %q %v", b, err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		l := s.List()
		if len(l) != 2 || l[0].Version != "1.2.0" || !l[0].Current || l[1].Version != "1.1.0" || l[1].Current {
			t.Fatalf("List = %+v", l)
		}
		if _, err := os.Stat(filepath.Join(f.dir, "chat", "1.0.0")); !os.IsNotExist(err) {
			t.Fatal("1.0.0 was not pruned")
		}
		if cur, _ := s.Current("chat"); cur.Manifest.Name != "chat" || cur.Signer != signerOf(f.key) || cur.InstalledAt.IsZero() {
			t.Fatalf("current %+v", cur)
		}
	}
	check(f.s)
	s2, err := OpenStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	check(s2)

	// Roll back to the previous version, then forward again.
	if err := f.s.SetCurrent("chat", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if cur, _ := f.s.Current("chat"); cur.Version != "1.1.0" {
		t.Fatalf("after rollback current %s", cur.Version)
	}
	if err := f.s.SetCurrent("chat", "1.2.0"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.SetCurrent("chat", "9.9.9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetCurrent missing: %v", err)
	}
}

func TestInstallDowngradeAndReinstall(t *testing.T) {
	f := newStoreFix(t)
	p11 := f.archive("chat", "1.1.0", goodEnts("chat", "1.1.0"), f.key)
	if _, err := f.s.Install(p11, f.opts("node-b")); err != nil {
		t.Fatal(err)
	}
	// Reinstalling the current version with the same bytes is a no-op.
	before := treeHash(t, f.dir)
	in, err := f.s.Install(p11, f.opts("node-c"))
	if err != nil || in.Version != "1.1.0" || !in.Current || in.Origin != "node-b" {
		t.Fatalf("reinstall: %+v %v", in, err)
	}
	if treeHash(t, f.dir) != before {
		t.Fatal("reinstall changed the store")
	}
	// With the pin gone, the reinstall pins again.
	f.trust.Unpin("chat")
	if in, err := f.s.Install(p11, f.opts("node-c")); err != nil || !in.NewPin {
		t.Fatalf("reinstall after unpin: %+v %v", in, err)
	}
	if pin, _ := f.trust.Get("chat"); pin != signerOf(f.key) {
		t.Fatal("not pinned again")
	}
	// Asked for, a downgrade to the kept previous version just switches.
	p10 := f.archive("chat", "1.0.0", goodEnts("chat", "1.0.0"), f.key)
	opts := f.opts("node-b")
	opts.AllowDowngrade = true
	in, err = f.s.Install(p10, opts)
	if err != nil || in.Version != "1.0.0" || !in.Current {
		t.Fatalf("downgrade: %+v %v", in, err)
	}
	if l := f.s.List(); len(l) != 2 {
		t.Fatalf("after downgrade: %+v", l)
	}
	// AllowDowngrade also replaces a version with different content.
	p10b := f.archive("chat", "1.0.0", append(goodEnts("chat", "1.0.0"), ent{name: "extra", body: "x"}), f.key)
	in, err = f.s.Install(p10b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(in.Dir, "extra")); err != nil {
		t.Fatal("replacement not installed")
	}
}

func TestInstallUnsignedPolicy(t *testing.T) {
	f := newStoreFix(t)
	// Unsigned from this node's own dist folder: allowed, pin untouched.
	in, err := f.s.Install(f.archive("chat", "1.1.0", goodEnts("chat", "1.1.0"), nil), f.opts(OriginLocal))
	if err != nil || in.Signer != "" {
		t.Fatalf("local unsigned: %+v %v", in, err)
	}
	if pin, _ := f.trust.Get("chat"); pin != signerOf(f.key) {
		t.Fatal("pin changed")
	}
	// Unsigned from a peer with the explicit opt-out.
	opts := f.opts("node-b")
	opts.AllowUnsigned = true
	if _, err := f.s.Install(f.archive("draw", "1.0.0", goodEnts("draw", "1.0.0"), nil), opts); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.trust.Get("draw"); ok {
		t.Fatal("an unsigned install pinned something")
	}
	// A local archive signed by another key is still checked against the pin.
	if _, err := f.s.Install(f.archive("chat", "1.2.0", goodEnts("chat", "1.2.0"), newKey(t)), f.opts(OriginLocal)); !errors.Is(err, ErrUntrustedSigner) {
		t.Fatalf("local, other signer: %v", err)
	}
	// After unpinning, the new publisher is pinned.
	other := newKey(t)
	f.trust.Unpin("chat")
	in, err = f.s.Install(f.archive("chat", "1.2.0", goodEnts("chat", "1.2.0"), other), f.opts("node-b"))
	if err != nil || !in.NewPin {
		t.Fatalf("after unpin: %+v %v", in, err)
	}
	if pin, _ := f.trust.Get("chat"); pin != signerOf(other) {
		t.Fatal("not re-pinned")
	}
}

// TestInstallRollsBackOnCommitFailure makes the final state write fail
// and checks that the new version, its record and its pin are undone.
func TestInstallRollsBackOnCommitFailure(t *testing.T) {
	f := newStoreFix(t)
	before := f.snapshot()
	if err := os.MkdirAll(filepath.Join(f.dir, "draw", stateFile, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := f.s.Install(f.archive("draw", "1.0.0", goodEnts("draw", "1.0.0"), newKey(t)), f.opts("node-b"))
	if err == nil {
		t.Fatal("install succeeded with an unwritable state file")
	}
	if _, ok := f.trust.Get("draw"); ok {
		t.Fatal("pin not rolled back")
	}
	if _, ok := f.s.Current("draw"); ok {
		t.Fatal("draw is current")
	}
	os.RemoveAll(filepath.Join(f.dir, "draw"))
	if f.snapshot() != before {
		t.Fatal("store changed")
	}
}

func TestStoreRemove(t *testing.T) {
	f := newStoreFix(t)
	for _, v := range []string{"1.1.0", "1.2.0"} {
		if _, err := f.s.Install(f.archive("chat", v, goodEnts("chat", v), f.key), f.opts("node-b")); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.Remove("chat", "1.2.0"); err != nil {
		t.Fatal(err)
	}
	if cur, _ := f.s.Current("chat"); cur.Version != "1.1.0" {
		t.Fatalf("after removing current: %+v", cur)
	}
	if err := f.s.Remove("chat", "1.2.0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if err := f.s.Remove("chat", ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.s.Current("chat"); ok {
		t.Fatal("still installed")
	}
	if ents, _ := os.ReadDir(f.dir); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}
	s2, _ := OpenStore(f.dir)
	if len(s2.List()) != 0 {
		t.Fatal("reopened store lists removed plugins")
	}
}

func TestOpenStoreCleansLeftovers(t *testing.T) {
	f := newStoreFix(t)
	os.MkdirAll(filepath.Join(f.dir, stagingPrefix+"123", "tree"), 0o755)
	os.MkdirAll(filepath.Join(f.dir, "chat", "2.0.0"), 0o755) // renamed, never recorded
	// Recorded, but its manifest does not load (a newer protocol): kept.
	newer := filepath.Join(f.dir, "chat", "3.0.0")
	os.MkdirAll(newer, 0o755)
	os.WriteFile(filepath.Join(newer, ManifestFile), []byte(`{"name":"chat","version":"3.0.0","command":["x"],"protocol":9}`), 0o644)
	os.WriteFile(newer+recordExt, []byte(`{"name":"chat","version":"3.0.0","sha256":"00","origin":"local"}`), 0o644)
	s, err := OpenStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustReadDir(t, f.dir); len(got) != 1 || got[0] != "chat" {
		t.Fatalf("store dir %v", got)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "chat", "2.0.0")); !os.IsNotExist(err) {
		t.Fatal("orphan version kept")
	}
	if _, err := os.Stat(newer); err != nil {
		t.Fatal("a recorded version that did not load was deleted")
	}
	if l := s.List(); len(l) != 1 {
		t.Fatalf("List = %+v", l)
	}
	if cur, ok := s.Current("chat"); !ok || cur.Version != "1.0.0" {
		t.Fatalf("current %+v", cur)
	}
	// A lost state file falls back to the highest installed version.
	os.Remove(filepath.Join(f.dir, "chat", stateFile))
	s, _ = OpenStore(f.dir)
	if cur, ok := s.Current("chat"); !ok || cur.Version != "1.0.0" {
		t.Fatalf("without state: %+v", cur)
	}
}

// TestInstallClaimedHash covers InstallOptions.SHA256 (the hash Fetch has
// just verified): the signature is checked against it, the bytes extracted
// must hash to it, and a mismatch, found only after extraction, installs
// nothing and leaves no staging behind, from memory and streamed.
func TestInstallClaimedHash(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := "memory"
		if stream {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) {
			f := newStoreFix(t)
			if stream {
				f.s.memMax = -1
			}
			fail := func(p string, opts InstallOptions, want error, mention string) {
				t.Helper()
				before := f.snapshot()
				in, err := f.s.Install(p, opts)
				if !errors.Is(err, want) || !strings.Contains(err.Error(), mention) {
					t.Fatalf("Install = %+v, %v; want %v mentioning %q", in, err, want, mention)
				}
				if f.snapshot() != before {
					t.Fatal("a failed install changed what was installed")
				}
				if ents, _ := os.ReadDir(f.dir); len(ents) != 1 {
					t.Fatalf("store dir holds %v, want only chat/ (staging left behind?)", ents)
				}
			}

			// A good archive whose bytes are then swapped for others that
			// extract cleanly, with the signature still matching the claim:
			// only the hash of what was extracted can catch it.
			good := tarGz(t, goodEnts("chat", "1.1.0"))
			other := tarGz(t, append(goodEnts("chat", "1.1.0"), ent{name: "evil", body: "x"}))
			p := writeArchive(t, t.TempDir(), "chat-1.1.0.tar.gz", other)
			sum := sha256.Sum256(good)
			os.WriteFile(p+SigExt, Sign(f.key, sum[:]), 0o644)
			opts := f.opts("node-b")
			opts.SHA256 = hexSHA(good)
			fail(p, opts, ErrHashMismatch, "it was verified as")

			// The same with bytes that do not even extract: the hash
			// mismatch is reported, not the extraction error.
			os.WriteFile(p, []byte("not a gzip stream at all"), 0o644)
			fail(p, opts, ErrHashMismatch, "it was verified as")

			// A claim that is right, with a signature of other bytes.
			os.WriteFile(p, good, 0o644)
			os.WriteFile(p+SigExt, Sign(f.key, make([]byte, 32)), 0o644)
			fail(p, opts, ErrBadSignature, "")

			// Malformed claims.
			for _, c := range []string{"abc", strings.ToUpper(hexSHA(good)), hexSHA(good)[:62] + "zz"} {
				o := opts
				o.SHA256 = c
				fail(p, o, ErrHashMismatch, "64 lowercase hex digits")
			}

			// Right claim and signature: installed, recorded with that hash.
			signFile(t, f.key, p)
			in, err := f.s.Install(p, opts)
			if err != nil || in.SHA256 != hexSHA(good) || !in.Current {
				t.Fatalf("install with a right claim: %+v %v", in, err)
			}
			if _, err := os.Stat(filepath.Join(in.Dir, "lib", "data.txt")); err != nil {
				t.Fatal(err)
			}

			// Reinstalling an installed version with the same claim but
			// other bytes: nothing is extracted on that path, so the file
			// is hashed there. 1.0.0 is the previous version.
			p10 := f.archive("chat", "1.0.0", goodEnts("chat", "1.0.0"), f.key)
			cur10, _ := f.s.Version("chat", "1.0.0")
			os.WriteFile(p10, other, 0o644)
			o := opts
			o.SHA256, o.AllowDowngrade = cur10.SHA256, true
			fail(p10, o, ErrHashMismatch, "it was verified as")
		})
	}
}

// errAfter returns its data, then err.
type errAfter struct {
	data []byte
	err  error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestReadAhead(t *testing.T) {
	for _, size := range []int{0, 1, 256 << 10, 256<<10 + 1, 5<<20 + 3} {
		data := pseudoRandom(size)
		for _, readFirst := range []int{-1, 0, 1000} { // -1: all
			ra := newReadAhead(bytes.NewReader(data))
			var got []byte
			var err error
			if readFirst < 0 {
				got, err = io.ReadAll(iotest.OneByteReader(io.LimitReader(ra, 4096)))
				if err == nil {
					var rest []byte
					rest, err = io.ReadAll(ra)
					got = append(got, rest...)
				}
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("size %d: read %d bytes, %v", size, len(got), err)
				}
			} else {
				got = make([]byte, min(readFirst, size))
				if _, err := io.ReadFull(ra, got); err != nil || !bytes.Equal(got, data[:len(got)]) {
					t.Fatalf("size %d: first %d bytes: %v", size, readFirst, err)
				}
			}
			// finish hashes the whole input, whatever was read.
			if sum, err := ra.finish(); err != nil || sum != hexSHA(data) {
				t.Fatalf("size %d, read %d first: finish = %s, %v", size, readFirst, sum, err)
			}
		}
	}
	boom := errors.New("disk on fire")
	ra := newReadAhead(&errAfter{data: pseudoRandom(300 << 10), err: boom})
	if _, err := io.ReadAll(ra); !errors.Is(err, boom) {
		t.Fatalf("Read error = %v, want %v", err, boom)
	}
	if _, err := ra.finish(); !errors.Is(err, boom) {
		t.Fatalf("finish error = %v", err)
	}
	ra = newReadAhead(&errAfter{data: pseudoRandom(300 << 10), err: boom})
	if _, err := ra.finish(); !errors.Is(err, boom) { // nothing read first
		t.Fatalf("finish error = %v", err)
	}
}

// FuzzParseClaim: InstallOptions.SHA256 is accepted exactly when it is the
// lowercase hex of 32 bytes, and then decodes to them.
func FuzzParseClaim(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseClaim(s)
		if s == "" {
			if b != nil || err != nil {
				t.Fatalf("empty claim: %x %v", b, err)
			}
			return
		}
		raw, herr := hex.DecodeString(s)
		valid := herr == nil && len(raw) == 32 && hex.EncodeToString(raw) == s
		if valid != (err == nil) {
			t.Fatalf("parseClaim(%q) = %v, valid %v", s, err, valid)
		}
		if err == nil && hex.EncodeToString(b) != s {
			t.Fatalf("parseClaim(%q) = %x", s, b)
		}
		if err != nil && !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("error %v is not ErrHashMismatch", err)
		}
	})
}
