package distrib

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned (wrapped, with context) by this package. Test for them
// with errors.Is.
var (
	// ErrBadName is returned for a plugin name or archive file name that does
	// not follow the naming contract (see ValidName and ParseFileName).
	ErrBadName = errors.New("distrib: bad name")

	// ErrBadVersion is returned for a version that is not strict semver.
	ErrBadVersion = errors.New("distrib: bad version")

	// ErrBadManifest is returned when nearby.json is missing, malformed,
	// invalid, or disagrees with the archive's file name.
	ErrBadManifest = errors.New("distrib: bad manifest")

	// ErrBadSignature is returned for a signature file that cannot be parsed
	// or does not verify against the archive's hash.
	ErrBadSignature = errors.New("distrib: bad signature")

	// ErrUntrustedSigner is returned when an archive carries a valid
	// signature from a key other than the one pinned for its name.
	ErrUntrustedSigner = errors.New("distrib: untrusted signer")

	// ErrUnsigned is returned when an archive from a peer has no signature
	// and the caller did not opt out of requiring one.
	ErrUnsigned = errors.New("distrib: unsigned archive")

	// ErrDowngrade is returned when installing a version lower than the one
	// installed, without InstallOptions.AllowDowngrade.
	ErrDowngrade = errors.New("distrib: downgrade refused")

	// ErrVersionConflict is returned when a version is already installed
	// with different content: versions are immutable.
	ErrVersionConflict = errors.New("distrib: version already installed with different content")

	// ErrUnsafePath is returned for archive entries that could write outside
	// the destination: absolute paths, "..", links leaving the tree, device
	// files, fifos and other special entries.
	ErrUnsafePath = errors.New("distrib: unsafe archive entry")

	// ErrTooLarge is returned when an archive or its contents exceed Limits.
	ErrTooLarge = errors.New("distrib: too large")

	// ErrCorrupt is returned for an archive that is not a complete, valid
	// gzip-compressed tar stream (for example a truncated download).
	ErrCorrupt = errors.New("distrib: corrupt archive")

	// ErrHashMismatch is returned when downloaded bytes do not have the
	// SHA-256 (or size) that the index promised.
	ErrHashMismatch = errors.New("distrib: hash mismatch")

	// ErrNotFound is returned for an archive, file or installed plugin that
	// does not exist.
	ErrNotFound = errors.New("distrib: not found")

	// ErrChanged is returned by Dist.Open when the file on disk changed
	// since it was indexed; it is re-indexed shortly.
	ErrChanged = errors.New("distrib: file changed since it was indexed")

	// ErrNoSource is returned by Fetch when no source could deliver the
	// archive; the wrapped errors say why each failed.
	ErrNoSource = errors.New("distrib: no source could deliver the archive")

	// ErrStalled is reported (wrapped in ErrNoSource's reasons) for a source
	// that sent no bytes for FetchOptions.StallTimeout.
	ErrStalled = errors.New("distrib: download stalled")
)

// ctxError adds context to an error, printing the package prefix once:
// wrap(fmt.Errorf("%w: x", ErrTooLarge), "extract") prints
// "distrib: extract: too large: x" and still matches ErrTooLarge.
type ctxError struct {
	msg string
	err error
}

func (e *ctxError) Error() string {
	return "distrib: " + e.msg + ": " + strings.TrimPrefix(e.err.Error(), "distrib: ")
}

func (e *ctxError) Unwrap() error { return e.err }

// wrap returns err with context; see ctxError.
func wrap(err error, format string, args ...any) error {
	return &ctxError{msg: fmt.Sprintf(format, args...), err: err}
}
