package distrib

import (
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Newest returns the entry of plugin name with the highest version that
// satisfies constraint, and whether there is one. constraint is "" (any
// version), an exact version ("1.2.0", which may be a prerelease), or a
// Masterminds/semver constraint ("^1.2", ">=1.0.0, <2.0.0"). Prereleases
// are skipped unless pre is true or the constraint names one. Among equal
// versions a signed entry wins, then the lowest file name and SHA-256, so
// the choice does not depend on the order of entries.
func Newest(entries []IndexEntry, name string, constraint string, pre bool) (IndexEntry, bool) {
	var exact *semver.Version
	var cs *semver.Constraints
	if constraint != "" {
		if v, err := semver.StrictNewVersion(constraint); err == nil {
			exact = v
		} else if c, err := semver.NewConstraint(constraint); err == nil {
			c.IncludePrerelease = pre
			cs = c
		} else {
			return IndexEntry{}, false
		}
	}
	var best IndexEntry
	var bestV *semver.Version
	found := false
	for _, e := range entries {
		if e.Name != name {
			continue
		}
		v, err := semver.StrictNewVersion(e.Version)
		if err != nil {
			continue
		}
		switch {
		case exact != nil:
			if !v.Equal(exact) || v.Metadata() != exact.Metadata() {
				continue
			}
		case cs != nil:
			if !cs.Check(v) {
				continue
			}
		default:
			if v.Prerelease() != "" && !pre {
				continue
			}
		}
		if !found || better(e, v, best, bestV) {
			best, bestV, found = e, v, true
		}
	}
	return best, found
}

func better(e IndexEntry, v *semver.Version, best IndexEntry, bestV *semver.Version) bool {
	if c := v.Compare(bestV); c != 0 {
		return c > 0
	}
	if (e.Signer != "") != (best.Signer != "") {
		return e.Signer != ""
	}
	if e.File != best.File {
		return e.File < best.File
	}
	return e.SHA256 < best.SHA256
}

// Compare compares two version strings by semver precedence, returning -1,
// 0 or +1. Build metadata is ignored, as semver says. A string that is not
// strict semver sorts below every valid version; two invalid strings
// compare as strings.
func Compare(a, b string) int {
	va, ea := semver.StrictNewVersion(a)
	vb, eb := semver.StrictNewVersion(b)
	switch {
	case ea != nil && eb != nil:
		return strings.Compare(a, b)
	case ea != nil:
		return -1
	case eb != nil:
		return 1
	}
	return va.Compare(vb)
}
