package distrib

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
)

type entryKind uint8

const (
	kindDir entryKind = iota + 1
	kindFile
	kindSymlink
	kindHardlink
)

const (
	maxEntryName = 1024
	// tarOverhead is the decompressed bytes allowed per entry beyond its
	// data: header, PAX records, padding.
	tarOverhead = 8 << 10
)

// archiveEntry is one checked entry handed to a walkArchive callback.
type archiveEntry struct {
	Name string // canonical: relative, '/'-separated, no ".", "..", or empty parts
	Kind entryKind
	Exec bool   // regular file with an executable bit
	Link string // symlink: raw target (checked lexically); hard link: canonical target name
	R    io.Reader
}

// capReader passes at most n bytes of r through; if r has more, Read
// returns err. It counts what it passed in read.
type capReader struct {
	r    io.Reader
	n    int64
	read int64
	err  error // returned once more than n bytes are available
	rerr error // the last error other than io.EOF seen by Read
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		var one [1]byte
		k, err := c.r.Read(one[:])
		if k > 0 {
			c.rerr = c.err
			return 0, c.err
		}
		if err != nil && err != io.EOF {
			c.rerr = err
		}
		return 0, err
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	k, err := c.r.Read(p)
	c.n -= int64(k)
	c.read += int64(k)
	if err != nil && err != io.EOF {
		c.rerr = err
	}
	return k, err
}

// cleanEntryName returns the canonical form of a tar entry name, "" for the
// archive root, or ErrUnsafePath.
func cleanEntryName(name string) (string, error) {
	orig := name
	if len(name) > maxEntryName {
		return "", fmt.Errorf("%w: entry name %.40q... is longer than %d bytes", ErrUnsafePath, name, maxEntryName)
	}
	if strings.ContainsAny(name, "\x00\\") {
		return "", fmt.Errorf("%w: entry %q contains a NUL or backslash", ErrUnsafePath, clipName(orig))
	}
	if strings.HasPrefix(name, "/") || (len(name) >= 2 && name[1] == ':') {
		return "", fmt.Errorf("%w: entry %q is an absolute path", ErrUnsafePath, clipName(orig))
	}
	for strings.HasPrefix(name, "./") {
		name = name[2:]
	}
	name = strings.TrimSuffix(name, "/")
	if name == "" || name == "." {
		return "", nil
	}
	for _, part := range strings.Split(name, "/") {
		switch part {
		case "..":
			return "", fmt.Errorf("%w: entry %q contains \"..\"", ErrUnsafePath, clipName(orig))
		case "", ".":
			return "", fmt.Errorf("%w: entry %q is not a clean path", ErrUnsafePath, clipName(orig))
		}
	}
	return name, nil
}

// checkSymlinkTarget rejects symlink targets that are absolute or, read
// lexically from the link's directory, leave the tree. Extract also checks
// how links resolve once all of them exist (link chains).
func checkSymlinkTarget(name, target string) error {
	switch {
	case target == "":
		return fmt.Errorf("%w: symlink %q has an empty target", ErrUnsafePath, name)
	case len(target) > maxEntryName:
		return fmt.Errorf("%w: symlink %q: target longer than %d bytes", ErrUnsafePath, name, maxEntryName)
	case strings.ContainsAny(target, "\x00\\"):
		return fmt.Errorf("%w: symlink %q: target contains a NUL or backslash", ErrUnsafePath, name)
	case strings.HasPrefix(target, "/") || (len(target) >= 2 && target[1] == ':'):
		return fmt.Errorf("%w: symlink %q -> %q is absolute", ErrUnsafePath, name, target)
	}
	if r := path.Join(path.Dir(name), target); r == ".." || strings.HasPrefix(r, "../") {
		return fmt.Errorf("%w: symlink %q -> %q points outside the archive", ErrUnsafePath, name, target)
	}
	return nil
}

// corrupt classifies a read error from the gzip or tar layer.
func corrupt(err error) error {
	switch {
	case errors.Is(err, ErrTooLarge):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%w: truncated (%v); the file is incomplete, download or copy it again", ErrCorrupt, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// walkArchive reads a gzip-compressed tar stream, checks every entry
// against the security checklist and lim, and calls fn for each. For files
// fn may read e.R (capped by bytes actually read, whatever the header
// says); what it leaves unread is drained and counted. After the last entry
// the gzip stream is read to its end so that truncation and checksum errors
// are seen.
func walkArchive(r io.Reader, lim Limits, fn func(e *archiveEntry) error) error {
	lim = lim.withDefaults()
	var src io.Reader
	if br, ok := r.(*bytes.Reader); ok && int64(br.Len()) <= lim.MaxArchiveBytes {
		src = br // the decompressor has a fast path for *bytes.Reader
	} else {
		// A large buffer: gzip would otherwise add a 4 KiB one.
		src = bufio.NewReaderSize(&capReader{r: r, n: lim.MaxArchiveBytes,
			err: fmt.Errorf("%w: archive is larger than %d bytes", ErrTooLarge, lim.MaxArchiveBytes)}, 256<<10)
	}
	gz, err := gzip.NewReader(src)
	if err != nil {
		return corrupt(err)
	}
	defer gz.Close()
	stream := lim.MaxTotalBytes + int64(lim.MaxFiles)*tarOverhead + 1<<20
	dr := &capReader{r: gz, n: stream,
		err: fmt.Errorf("%w: decompressed stream is larger than %d bytes", ErrTooLarge, stream)}
	tr := tar.NewReader(dr)
	seen := make(map[string]entryKind)
	var files int
	var total int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return corrupt(err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX global header (git archive writes one): metadata only
		}
		files++
		if files > lim.MaxFiles {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, lim.MaxFiles)
		}
		name, err := cleanEntryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			if hdr.Typeflag == tar.TypeDir {
				continue
			}
			return fmt.Errorf("%w: entry %q names the archive root", ErrUnsafePath, hdr.Name)
		}
		for i := strings.IndexByte(name, '/'); i >= 0; i = next(name, i) {
			if k, ok := seen[name[:i]]; ok && k != kindDir {
				return fmt.Errorf("%w: entry %q is inside %q, which is not a directory", ErrUnsafePath, name, name[:i])
			}
		}
		prev, dup := seen[name]
		e := &archiveEntry{Name: name}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if dup && prev != kindDir {
				return fmt.Errorf("%w: duplicate entry %q", ErrUnsafePath, name)
			}
			if hdr.Size != 0 {
				return fmt.Errorf("%w: directory entry %q claims %d bytes of data", ErrCorrupt, name, hdr.Size)
			}
			e.Kind = kindDir
		case tar.TypeReg, '\x00':
			if dup {
				return fmt.Errorf("%w: duplicate entry %q", ErrUnsafePath, name)
			}
			left := lim.MaxTotalBytes - total
			switch {
			case hdr.Size < 0:
				return fmt.Errorf("%w: entry %q has a negative size", ErrCorrupt, name)
			case hdr.Size > lim.MaxFileBytes:
				return fmt.Errorf("%w: entry %q is %d bytes, more than the %d allowed per file", ErrTooLarge, name, hdr.Size, lim.MaxFileBytes)
			case hdr.Size > left:
				return fmt.Errorf("%w: entries add up to more than %d bytes", ErrTooLarge, lim.MaxTotalBytes)
			}
			e.Kind = kindFile
			e.Exec = hdr.Mode&0o111 != 0
			// Cap what is actually read, whatever the header claims.
			e.R = &capReader{r: tr, n: min(lim.MaxFileBytes, left),
				err: fmt.Errorf("%w: entry %q holds more data than allowed", ErrTooLarge, name)}
		case tar.TypeLink:
			if dup {
				return fmt.Errorf("%w: duplicate entry %q", ErrUnsafePath, name)
			}
			target, err := cleanEntryName(hdr.Linkname)
			if err != nil {
				return wrap(err, "hard link %q", name)
			}
			if seen[target] != kindFile {
				return fmt.Errorf("%w: hard link %q -> %q: target is not a regular file earlier in the archive", ErrUnsafePath, name, hdr.Linkname)
			}
			e.Kind, e.Link = kindHardlink, target
		case tar.TypeSymlink:
			if dup {
				return fmt.Errorf("%w: duplicate entry %q", ErrUnsafePath, name)
			}
			if err := checkSymlinkTarget(name, hdr.Linkname); err != nil {
				return err
			}
			e.Kind, e.Link = kindSymlink, hdr.Linkname
		case tar.TypeChar, tar.TypeBlock:
			return fmt.Errorf("%w: entry %q is a device file", ErrUnsafePath, name)
		case tar.TypeFifo:
			return fmt.Errorf("%w: entry %q is a fifo", ErrUnsafePath, name)
		default:
			return fmt.Errorf("%w: entry %q has unsupported type %q", ErrUnsafePath, name, hdr.Typeflag)
		}
		seen[name] = e.Kind
		if err := fn(e); err != nil {
			if c, ok := e.R.(*capReader); ok && c.rerr != nil {
				return corrupt(c.rerr) // the archive failed, not the callback
			}
			return err
		}
		if c, ok := e.R.(*capReader); ok {
			if _, err := io.Copy(io.Discard, c); err != nil {
				return corrupt(err)
			}
			total += c.read
		}
	}
	// Read to the end of the gzip stream: tar stops at its end marker, but
	// truncation and the gzip checksum only show at the very end.
	if _, err := io.Copy(io.Discard, dr); err != nil {
		return corrupt(err)
	}
	return nil
}

func next(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// clipName shortens a name for an error message.
func clipName(s string) string {
	if len(s) > 100 {
		return s[:60] + "..." + s[len(s)-30:]
	}
	return s
}
