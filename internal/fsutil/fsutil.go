// Package fsutil holds the few file helpers several packages share: atomic
// writes (temporary file + rename) and size-capped, rotated log files.
package fsutil

import (
	"io"
	"os"
	"path/filepath"
	"sync"
)

// WriteFileAtomic writes data to a hidden temporary file beside path,
// syncs it and renames it into place, so readers see the old or the new
// content, never a part. It creates path's directory (mode 0700) if needed.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return WriteAtomic(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// CopyFileAtomic copies src to dst the same way; dst's directory must exist.
func CopyFileAtomic(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return WriteAtomic(dst, perm, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// WriteAtomic writes what fill writes to a hidden temporary file beside
// path (whose directory must exist), syncs it and renames it into place,
// unless fill fails, in which case path is left as it was.
func WriteAtomic(path string, perm os.FileMode, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Log appends to a file, rotating it to Path+".1" (one old file is kept)
// when a write would take it past Max bytes. It is safe for concurrent use
// and never fails: a program's output must not stall because its log
// cannot be written. The zero value is not usable; set Path and Max.
type Log struct {
	Path string
	Max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Write implements io.Writer; it always reports success.
func (l *Log) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil && !l.open() {
		return len(b), nil
	}
	if l.size > 0 && l.size+int64(len(b)) > l.Max {
		l.f.Close()
		l.f = nil
		os.Rename(l.Path, l.Path+".1")
		if !l.open() {
			return len(b), nil
		}
	}
	n, _ := l.f.Write(b)
	l.size += int64(n)
	return len(b), nil
}

// WriteString writes s.
func (l *Log) WriteString(s string) { l.Write([]byte(s)) }

func (l *Log) open() bool {
	f, err := os.OpenFile(l.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return false
	}
	l.f, l.size = f, fi.Size()
	return true
}

// Close closes the file; a later Write reopens it.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
