package distrib

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

const maxLinkHops = 40

// Extract unpacks the gzip-compressed tar stream r into dst, which must not
// exist or be an empty directory. It is safe against hostile archives (see
// docs/SECURITY.md): absolute paths, "..", duplicate entries, device files,
// fifos and other special entries are refused; symlinks and hard links must
// stay inside dst, checked both lexically and, once every entry exists, by
// resolving each symlink on disk; nothing is ever written through a
// symlink; the bytes actually written are capped per file and in total, and
// entries are counted, whatever the headers claim. File modes are reduced to
// 0644 or 0755. On error dst is left empty (or removed, if Extract created
// it).
func Extract(r io.Reader, dst string, lim Limits) (err error) {
	created, err := prepareDir(dst)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			cleanDir(dst, created)
		}
	}()
	var links []archiveEntry
	buf := make([]byte, 256<<10)
	err = walkArchive(r, lim, func(e *archiveEntry) error {
		p := filepath.Join(dst, filepath.FromSlash(e.Name))
		switch e.Kind {
		case kindDir:
			return os.MkdirAll(p, 0o755)
		case kindFile:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			perm := os.FileMode(0o644)
			if e.Exec {
				perm = 0o755
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
			if err != nil {
				return err
			}
			// A plain io.Writer keeps io.CopyBuffer on our buffer.
			_, err = io.CopyBuffer(struct{ io.Writer }{f}, e.R, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		case kindHardlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			return os.Link(filepath.Join(dst, filepath.FromSlash(e.Link)), p)
		case kindSymlink:
			// Symlinks are made last, so nothing above is ever written
			// through one.
			links = append(links, *e)
		}
		return nil
	})
	if err != nil {
		return wrap(err, "extract")
	}
	for _, e := range links {
		if err := makeParents(dst, e.Name); err != nil {
			return wrap(err, "extract")
		}
		if err := os.Symlink(e.Link, filepath.Join(dst, filepath.FromSlash(e.Name))); err != nil {
			return wrap(err, "extract")
		}
	}
	for _, e := range links {
		if err := resolvesInside(dst, e.Name); err != nil {
			return wrap(err, "extract: symlink %q -> %q", e.Name, e.Link)
		}
	}
	return nil
}

// prepareDir makes dst if missing and checks that it is an empty
// directory. It reports whether it created dst.
func prepareDir(dst string) (created bool, err error) {
	fi, err := os.Lstat(dst)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return false, wrap(err, "extract")
		}
		return true, nil
	}
	if err != nil {
		return false, wrap(err, "extract")
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("distrib: extract: %s is not a directory", dst)
	}
	d, err := os.Open(dst)
	if err != nil {
		return false, wrap(err, "extract")
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return false, fmt.Errorf("distrib: extract: %s is not empty", dst)
	}
	return false, nil
}

func cleanDir(dst string, created bool) {
	if created {
		os.RemoveAll(dst)
		return
	}
	ents, _ := os.ReadDir(dst)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dst, e.Name()))
	}
}

// makeParents creates the directories above rel inside root, refusing to
// pass through anything that is not a real directory (a symlink made
// earlier in this phase).
func makeParents(root, rel string) error {
	parts := strings.Split(rel, "/")
	p := root
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%w: entry %q is inside %q, which is not a directory", ErrUnsafePath, rel, part)
		}
	}
	return nil
}

// resolvesInside follows the path rel (and every symlink on it) under root
// as the kernel would, and fails if that leaves root at any step. Missing
// components are taken lexically.
func resolvesInside(root, rel string) error {
	pending := strings.Split(rel, "/")
	var cur []string
	for hops := 0; len(pending) > 0; {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return fmt.Errorf("%w: resolves outside the archive", ErrUnsafePath)
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := filepath.Join(root, filepath.Join(cur...), c)
		fi, err := os.Lstat(p)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			cur = append(cur, c)
			continue
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = append(cur, c)
			continue
		}
		if hops++; hops > maxLinkHops {
			return fmt.Errorf("%w: too many levels of symlinks", ErrUnsafePath)
		}
		t, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(t, "/") || filepath.IsAbs(t) {
			return fmt.Errorf("%w: resolves to an absolute path", ErrUnsafePath)
		}
		pending = append(strings.Split(filepath.ToSlash(t), "/"), pending...)
	}
	return nil
}
