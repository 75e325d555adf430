package distrib

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/nearbymesh/nearby/internal/fsutil"
)

// packEpoch is the modification time of every entry Pack writes, so that
// the same tree always gives the same bytes.
var packEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type packItem struct {
	rel  string // '/'-separated
	abs  string
	mode fs.FileMode
	size int64
	link string
}

// Pack makes NAME-VERSION.tar.gz in outDir from the plugin directory dir,
// whose nearby.json names the plugin, and returns its path. The archive is
// deterministic: entries sorted by name, mtimes fixed, owners cleared,
// modes reduced to 0644/0755, so the same tree always gives the same bytes
// (and the same SHA-256). Symlinks are kept if they stay inside the tree
// and refused otherwise; other special files are refused. With a signer,
// Pack writes the signature beside the archive (first, so a watcher never
// sees the new archive with an old signature); without one it removes a
// stale signature. Both files are written atomically (temp + rename). Pack
// refuses trees that DefaultLimits would reject on install.
func Pack(dir, outDir string, signer ed25519.PrivateKey) (archivePath string, err error) {
	mb, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return "", wrap(fmt.Errorf("%w: %v (every plugin directory needs one; see docs/ARCHIVES.md)", ErrBadManifest, err), "pack %s", dir)
	}
	m, err := ParseManifest(mb)
	if err != nil {
		return "", wrap(err, "pack %s", dir)
	}
	v, _ := ParseVersion(m.Version)
	file := FileName(m.Name, v)
	out := filepath.Join(outDir, file)
	items, err := packList(dir, out)
	if err != nil {
		return "", wrap(err, "pack %s", dir)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", wrap(err, "pack")
	}
	var fillErr error // already carries its context
	err = fsutil.WriteAtomic(out, 0o644, func(w io.Writer) error {
		h := sha256.New()
		if err := writeTarGz(io.MultiWriter(w, h), items); err != nil {
			fillErr = wrap(err, "pack %s", dir)
			return fillErr
		}
		// The signature goes first: a reader never sees the new archive
		// beside a stale signature.
		if signer != nil {
			if err := fsutil.WriteFileAtomic(out+SigExt, Sign(signer, h.Sum(nil)), 0o644); err != nil {
				fillErr = wrap(err, "pack: write signature")
			}
		} else if err := os.Remove(out + SigExt); err != nil && !errors.Is(err, os.ErrNotExist) {
			fillErr = wrap(err, "pack: remove stale signature")
		}
		return fillErr
	})
	switch {
	case fillErr != nil:
		return "", fillErr
	case err != nil:
		return "", wrap(err, "pack")
	}
	return out, nil
}

// packList walks dir in lexical order and returns what to archive,
// skipping the output archive and its signature should they be inside dir.
func packList(dir, out string) ([]packItem, error) {
	lim := DefaultLimits()
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	absOut, _ := filepath.Abs(out)
	var items []packItem
	var total int64
	err = filepath.WalkDir(absDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == absDir {
			return nil
		}
		if p == absOut || p == absOut+SigExt || strings.HasPrefix(filepath.Base(p), "."+filepath.Base(absOut)+".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(absDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if _, err := cleanEntryName(rel); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		it := packItem{rel: rel, abs: p, mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			it.size = fi.Size()
			total += it.size
			if it.size > lim.MaxFileBytes || total > lim.MaxTotalBytes {
				return fmt.Errorf("%w: %s: the tree is larger than nodes accept (%d bytes per file, %d in all)", ErrTooLarge, rel, lim.MaxFileBytes, lim.MaxTotalBytes)
			}
		case fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			t = filepath.ToSlash(t)
			if err := checkSymlinkTarget(rel, t); err != nil {
				return fmt.Errorf("%w (symlinks must stay inside the plugin directory)", err)
			}
			it.link = t
		default:
			return fmt.Errorf("%w: %s is a %v, not a file, directory or symlink", ErrUnsafePath, rel, fi.Mode().Type())
		}
		items = append(items, it)
		if len(items) > lim.MaxFiles {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, lim.MaxFiles)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := chainsInside(absDir, items); err != nil {
		return nil, err
	}
	return items, nil
}

// chainsInside checks that each symlink resolves inside dir on disk, as
// Extract will check after unpacking.
func chainsInside(dir string, items []packItem) error {
	for _, it := range items {
		if it.link == "" {
			continue
		}
		if err := resolvesInside(dir, it.rel); err != nil {
			return fmt.Errorf("symlink %s -> %s: %w (symlinks must stay inside the plugin directory)", it.rel, it.link, err)
		}
	}
	return nil
}

func writeTarGz(w io.Writer, items []packItem) error {
	gz, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, it := range items {
		hdr := &tar.Header{Name: it.rel, ModTime: packEpoch}
		switch {
		case it.mode.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, it.rel+"/", 0o755
		case it.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, it.link, 0o777
		default:
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, it.size, 0o644
			if it.mode&0o111 != 0 {
				hdr.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := copyFileInto(tw, it.abs, it.size); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func copyFileInto(w io.Writer, p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s changed size while packing", p)
	}
	return nil
}

// Publish checks the archive at archivePath with Inspect (name, manifest,
// limits, signature) and copies it, with its signature if any, into
// distDir, each through a temporary file and a rename. The signature goes
// first and a stale one is removed, so a watcher never pairs the new
// archive with an old signature. It returns the archive's new path.
func Publish(archivePath, distDir string) (dest string, err error) {
	info, err := Inspect(archivePath, DefaultLimits())
	if err != nil {
		return "", wrap(err, "publish")
	}
	if err := os.MkdirAll(distDir, 0o755); err != nil {
		return "", wrap(err, "publish")
	}
	dest = filepath.Join(distDir, info.File)
	if same, _ := sameFile(archivePath, dest); same {
		return dest, nil
	}
	if info.sig != nil {
		if err := fsutil.WriteFileAtomic(dest+SigExt, info.sig, 0o644); err != nil {
			return "", wrap(err, "publish")
		}
	} else if err := os.Remove(dest + SigExt); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", wrap(err, "publish: remove stale signature")
	}
	if err := fsutil.CopyFileAtomic(archivePath, dest, 0o644); err != nil {
		return "", wrap(err, "publish")
	}
	return dest, nil
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}
