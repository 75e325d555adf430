package distrib

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"
)

// Limits bound what an archive may contain. A zero field means the default
// from DefaultLimits.
type Limits struct {
	// MaxFiles caps the number of entries (files, directories, links).
	MaxFiles int
	// MaxFileBytes caps the bytes written for any one file.
	MaxFileBytes int64
	// MaxTotalBytes caps the bytes written for all files together.
	MaxTotalBytes int64
	// MaxArchiveBytes caps the size of the compressed archive.
	MaxArchiveBytes int64
}

// DefaultLimits returns the limits used when none are given: 10000
// entries, 512 MiB per file, 1 GiB in all, 512 MiB compressed.
func DefaultLimits() Limits {
	return Limits{
		MaxFiles:        10000,
		MaxFileBytes:    512 << 20,
		MaxTotalBytes:   1 << 30,
		MaxArchiveBytes: 512 << 20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = d.MaxArchiveBytes
	}
	return l
}

// Info describes a checked archive file.
type Info struct {
	// Name and Version come from the file name and agree with the manifest.
	Name, Version string
	// File is the base name, NAME-VERSION.tar.gz.
	File string
	// Size is the archive's size in bytes.
	Size int64
	// SHA256 is the lowercase hex SHA-256 of the archive bytes.
	SHA256 string
	// Signer is the SignerID of a valid signature beside the archive, or ""
	// if it has none.
	Signer string
	// Manifest is the parsed nearby.json.
	Manifest *Manifest
	// ModTime is the file's modification time.
	ModTime time.Time

	sig  []byte      // the .sig file's bytes, when signed
	stat os.FileInfo // of the archive as read
}

// Inspect checks the archive at archivePath without extracting it: its file name,
// every entry against the security checklist and lim, the manifest and its
// agreement with the file name, and the signature in archivePath+".sig" if that
// exists (a signature that does not verify is an error). It reads the whole
// archive once.
func Inspect(archivePath string, lim Limits) (*Info, error) {
	lim = lim.withDefaults()
	file := filepath.Base(archivePath)
	name, v, err := ParseFileName(file)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(archivePath)
	if err != nil {
		return nil, wrap(err, "inspect")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, wrap(err, "inspect")
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadName, file)
	}
	if fi.Size() > lim.MaxArchiveBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrTooLarge, file, fi.Size(), lim.MaxArchiveBytes)
	}
	h := sha256.New()
	var manifest []byte
	var nested string
	err = walkArchive(io.TeeReader(f, h), lim, func(e *archiveEntry) error {
		switch {
		case e.Kind == kindFile && e.Name == ManifestFile:
			b, err := io.ReadAll(io.LimitReader(e.R, MaxManifestBytes+1))
			if err != nil {
				return err
			}
			manifest = b
		case path.Base(e.Name) == ManifestFile && nested == "":
			nested = e.Name
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err, "archive %s", file)
	}
	if _, err := io.Copy(h, f); err != nil {
		return nil, wrap(err, "inspect %s", file)
	}
	sum := h.Sum(nil)
	m, err := manifestFor(file, name, v.String(), manifest, nested)
	if err != nil {
		return nil, err
	}
	info := &Info{
		Name: name, Version: v.String(), File: file, Size: fi.Size(),
		SHA256: hex.EncodeToString(sum), Manifest: m, ModTime: fi.ModTime(), stat: fi,
	}
	sig, raw, err := readSig(archivePath + SigExt)
	if err != nil {
		return nil, wrap(err, "archive %s", file)
	}
	if sig != nil {
		if err := sig.Verify(sum); err != nil {
			return nil, wrap(err, "archive %s", file)
		}
		info.Signer, info.sig = SignerID(sig.Signer), raw
	}
	return info, nil
}

// manifestFor parses the manifest bytes found in archive file and checks
// that it agrees with the name and version from the file name.
func manifestFor(file, name, version string, b []byte, nested string) (*Manifest, error) {
	if b == nil {
		hint := " (nearby pack DIR makes a valid archive)"
		if nested != "" {
			hint = fmt.Sprintf(" (found %s: archive the directory's contents, not the directory; nearby pack DIR does this)", nested)
		}
		return nil, wrap(fmt.Errorf("%w: no %s at the archive root%s", ErrBadManifest, ManifestFile, hint), "archive %s", file)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, wrap(err, "archive %s", file)
	}
	if m.Name != name || m.Version != version {
		return nil, wrap(fmt.Errorf("%w: the file name says %s %s but %s says %s %s; rename the file or fix the manifest",
			ErrBadManifest, name, version, ManifestFile, m.Name, m.Version), "archive %s", file)
	}
	return m, nil
}

// readSig reads and parses the signature file at p; (nil, nil, nil) if
// there is none.
func readSig(p string) (*Signature, []byte, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, wrap(err, "read signature")
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSigBytes+1))
	if err != nil {
		return nil, nil, wrap(err, "read signature")
	}
	sig, err := ParseSignature(b)
	if err != nil {
		return nil, nil, wrap(err, "%s", filepath.Base(p))
	}
	return sig, b, nil
}
