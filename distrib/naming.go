package distrib

import (
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
)

const (
	// ArchiveExt is the file name suffix of a plugin archive.
	ArchiveExt = ".tar.gz"
	// SigExt is appended to an archive's file name to name its detached
	// signature.
	SigExt = ".sig"

	// MaxNameLen is the longest plugin name accepted.
	MaxNameLen = 64
	// MaxVersionLen is the longest version string accepted. Together with
	// MaxNameLen it keeps NAME-VERSION.tar.gz.sig under 255 bytes.
	MaxVersionLen = 128
)

// ValidName reports whether name is a valid plugin name: lowercase
// `[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*`, at most MaxNameLen bytes. No segment
// starts with a digit, so in NAME-VERSION the version begins at the first
// '-' that is followed by a digit.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty plugin name", ErrBadName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: plugin name %.20q... is longer than %d bytes", ErrBadName, name, MaxNameLen)
	}
	segStart := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z':
			segStart = false
		case c >= '0' && c <= '9':
			if segStart {
				return fmt.Errorf("%w: plugin name %q: each '-'-separated part must start with a letter a-z", ErrBadName, name)
			}
		case c == '-':
			if segStart {
				return fmt.Errorf("%w: plugin name %q: '-' must separate two non-empty parts", ErrBadName, name)
			}
			segStart = true
		default:
			return fmt.Errorf("%w: plugin name %q: only lowercase a-z, 0-9 and '-' are allowed", ErrBadName, name)
		}
	}
	if segStart {
		return fmt.Errorf("%w: plugin name %q must not end with '-'", ErrBadName, name)
	}
	return nil
}

// ParseVersion parses a strict semantic version (no "v" prefix, all three
// numbers, no leading zeros), as every version in Nearby must be.
func ParseVersion(s string) (*semver.Version, error) {
	if len(s) > MaxVersionLen {
		return nil, fmt.Errorf("%w: version %.20q... is longer than %d bytes", ErrBadVersion, s, MaxVersionLen)
	}
	v, err := semver.StrictNewVersion(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a strict semantic version like 1.2.0 (%v)", ErrBadVersion, s, err)
	}
	return v, nil
}

// ParseFileName splits an archive file name such as "chat-1.2.0.tar.gz"
// into its plugin name and version. file must be a base name (no
// directory). The name is the part before the first '-' followed by a digit.
func ParseFileName(file string) (name string, v *semver.Version, err error) {
	if strings.ContainsAny(file, `/\`) {
		return "", nil, fmt.Errorf("%w: %q: want a file name without a directory", ErrBadName, file)
	}
	stem, ok := strings.CutSuffix(file, ArchiveExt)
	if !ok {
		return "", nil, fmt.Errorf("%w: %q does not end in %s (want NAME-VERSION%s)", ErrBadName, file, ArchiveExt, ArchiveExt)
	}
	cut := -1
	for i := 0; i+1 < len(stem); i++ {
		if stem[i] == '-' && stem[i+1] >= '0' && stem[i+1] <= '9' {
			cut = i
			break
		}
	}
	if cut < 0 {
		return "", nil, fmt.Errorf("%w: %q has no version (want NAME-VERSION%s, e.g. chat-1.2.0%s)", ErrBadName, file, ArchiveExt, ArchiveExt)
	}
	name, vs := stem[:cut], stem[cut+1:]
	if err := ValidName(name); err != nil {
		return "", nil, wrap(err, "archive %q", file)
	}
	v, err = ParseVersion(vs)
	if err != nil {
		return "", nil, wrap(err, "archive %q", file)
	}
	return name, v, nil
}

// FileName returns the archive file name for name and version, the inverse
// of ParseFileName.
func FileName(name string, v *semver.Version) string {
	return name + "-" + v.String() + ArchiveExt
}
