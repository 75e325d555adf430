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
	w := newDiskWriter()
	err = walkArchive(r, lim, func(e *archiveEntry) error {
		p := filepath.Join(dst, filepath.FromSlash(e.Name))
		switch e.Kind {
		case kindDir:
			return w.send(diskOp{kind: opMkdir, path: p})
		case kindFile:
			perm := os.FileMode(0o644)
			if e.Exec {
				perm = 0o755
			}
			if err := w.send(diskOp{kind: opCreate, path: p, perm: perm}); err != nil {
				return err
			}
			for {
				b, err := w.buf()
				if err != nil {
					return err
				}
				n, rerr := 0, error(nil)
				for n < len(b) && rerr == nil {
					var k int
					k, rerr = e.R.Read(b[n:])
					n += k
				}
				if err := w.send(diskOp{kind: opWrite, data: b[:n]}); err != nil {
					return err
				}
				if rerr == io.EOF {
					return w.send(diskOp{kind: opClose})
				}
				if rerr != nil {
					return rerr
				}
			}
		case kindHardlink:
			return w.send(diskOp{kind: opLink, path: p, link: filepath.Join(dst, filepath.FromSlash(e.Link))})
		case kindSymlink:
			// Symlinks are made last, so nothing above is ever written
			// through one.
			links = append(links, *e)
		}
		return nil
	})
	if werr := w.finish(); err == nil {
		err = werr
	}
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

const (
	opMkdir = iota + 1
	opCreate
	opWrite
	opClose
	opLink
)

// diskOp is one file system operation for a diskWriter.
type diskOp struct {
	kind       int
	path, link string
	perm       os.FileMode
	data       []byte
}

// diskWriter performs file system operations in order on its own
// goroutine, so that creating and writing files overlaps with
// decompressing the next ones. After the first error it only drains.
type diskWriter struct {
	ops    chan diskOp
	free   chan []byte
	failed chan struct{} // closed once err is set
	done   chan struct{}
	err    error
}

func newDiskWriter() *diskWriter {
	const nbuf = 8
	w := &diskWriter{
		ops:    make(chan diskOp, 2*nbuf),
		free:   make(chan []byte, nbuf),
		failed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	for range nbuf {
		w.free <- make([]byte, 256<<10)
	}
	go w.run()
	return w
}

func (w *diskWriter) run() {
	defer close(w.done)
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for op := range w.ops {
		if w.err != nil {
			w.recycle(op)
			continue
		}
		var err error
		switch op.kind {
		case opMkdir:
			err = os.MkdirAll(op.path, 0o755)
		case opCreate:
			if err = os.MkdirAll(filepath.Dir(op.path), 0o755); err == nil {
				f, err = os.OpenFile(op.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, op.perm)
			}
		case opWrite:
			_, err = f.Write(op.data)
		case opClose:
			err = f.Close()
			f = nil
		case opLink:
			if err = os.MkdirAll(filepath.Dir(op.path), 0o755); err == nil {
				err = os.Link(op.link, op.path)
			}
		}
		w.recycle(op)
		if err != nil {
			w.err = err
			close(w.failed)
		}
	}
}

func (w *diskWriter) recycle(op diskOp) {
	if op.data != nil {
		w.free <- op.data[:cap(op.data)]
	}
}

// send queues op; it fails with the writer's error once it has one.
func (w *diskWriter) send(op diskOp) error {
	select {
	case w.ops <- op:
		return nil
	case <-w.failed:
		w.recycle(op)
		return w.err
	}
}

// buf returns a free data buffer.
func (w *diskWriter) buf() ([]byte, error) {
	select {
	case b := <-w.free:
		return b, nil
	case <-w.failed:
		return nil, w.err
	}
}

// finish waits for every queued operation and returns the first error.
func (w *diskWriter) finish() error {
	close(w.ops)
	<-w.done
	return w.err
}
