package discovery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
)

// ServiceType is the DNS-SD service type every node advertises and browses.
const ServiceType = "_nearby._tcp"

// Domain is the DNS-SD domain: multicast DNS only.
const Domain = "local."

// ProtocolVersion is the value of the v= TXT key this package writes and the
// only one it accepts. An incompatible change to the record bumps it;
// compatible additions add keys, which older readers ignore.
const ProtocolVersion = 1

// Limits of the TXT record. Each DNS-SD TXT string is at most MaxTXTString
// bytes; the whole record (each string plus its length byte) at most
// MaxTXTBytes, and a Service lowers that further so that its largest response
// fits in one 1500-byte Ethernet frame (see FrameBytes).
const (
	MaxTXTString = 255
	MaxTXTBytes  = 1300

	// MaxInstanceLen is the longest DNS label, and so the longest instance name.
	MaxInstanceLen = 63
	// MaxNameLen bounds the display name (n=), in bytes.
	MaxNameLen = 64
	// MaxDigestLen bounds the catalog digest (d=), in bytes.
	MaxDigestLen = 100
	// MaxSubNameLen and MaxSubVersionLen bound the two halves of an s= value.
	MaxSubNameLen    = 64
	MaxSubVersionLen = 128
	// MaxMore bounds the more= count.
	MaxMore = 1 << 20
)

// Errors returned by this package. Callers match them with errors.Is.
var (
	// ErrBadRecord means a TXT record is missing a required key or holds a
	// value that does not parse; DecodeRecord and Encode wrap it.
	ErrBadRecord = errors.New("discovery: bad record")
	// ErrProtoVersion means a record carries a v= other than ProtocolVersion.
	ErrProtoVersion = errors.New("discovery: unsupported protocol version")
	// ErrBadConfig means a Config or BrowseConfig was rejected by New or Browse.
	ErrBadConfig = errors.New("discovery: bad config")
	// ErrRunning means Run was called more than once on a Service.
	ErrRunning = errors.New("discovery: Run called twice")
)

// Record is the content of a node's TXT record. The zero value is not
// valid: NodeID, Name and MeshID are required.
type Record struct {
	// Proto is the protocol version (v=). Encode treats 0 as ProtocolVersion;
	// DecodeRecord always sets it.
	Proto int
	// NodeID is the node id (id=): 32 lowercase hex characters.
	NodeID string
	// Name is the node's display name (n=): non-empty UTF-8 without control
	// characters, at most MaxNameLen bytes.
	Name string
	// MeshID identifies the mesh (m=): 16 lowercase hex characters.
	MeshID string
	// Digest is the digest of the node's catalog (d=): at most MaxDigestLen
	// bytes of letters, digits and "+/=_:.-"; it may be empty.
	Digest string
	// Subservices are the node's subservices (one s=NAME@VERSION each), in
	// the order they should be advertised when not all of them fit.
	Subservices []Sub
	// More counts subservices the node has but did not list (more=).
	More int
}

// Sub is one advertised subservice: an archive name and its strict semver
// version, as in NAME-VERSION.tar.gz.
type Sub struct {
	Name    string
	Version string
}

// String returns the s= value of sub, NAME@VERSION.
func (sub Sub) String() string { return sub.Name + "@" + sub.Version }

// Encode returns r as DNS-SD TXT strings within MaxTXTBytes. See EncodeLimit.
func (r Record) Encode() ([]string, error) {
	return r.EncodeLimit(MaxTXTBytes)
}

// EncodeLimit returns r as DNS-SD TXT strings whose wire size (each string
// plus one length byte) is at most limit. The fixed keys come first, in the
// order v, id, n, m, d; then one s= per subservice, in order, as long as they
// fit; then more=K when K > 0, K being r.More plus the subservices left out.
// It fails, wrapping ErrBadRecord, when r is not valid or the fixed keys
// alone exceed limit.
func (r Record) EncodeLimit(limit int) ([]string, error) {
	if r.Proto == 0 {
		r.Proto = ProtocolVersion
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	txt := []string{
		"v=" + strconv.Itoa(r.Proto),
		"id=" + r.NodeID,
		"n=" + r.Name,
		"m=" + r.MeshID,
		"d=" + r.Digest,
	}
	size := txtSize(txt)
	if size > limit {
		return nil, fmt.Errorf("%w: fixed keys take %d bytes, over the limit of %d", ErrBadRecord, size, limit)
	}
	subs := make([]string, len(r.Subservices))
	all := size
	for i, sub := range r.Subservices {
		subs[i] = "s=" + sub.String()
		all += 1 + len(subs[i])
	}
	if r.More > 0 {
		all += 1 + len("more=") + len(strconv.Itoa(r.More))
	}
	if all <= limit {
		txt = append(txt, subs...)
		if r.More > 0 {
			txt = append(txt, "more="+strconv.Itoa(r.More))
		}
		return txt, nil
	}
	// Not everything fits: keep room for the largest more= we could write.
	reserve := 1 + len("more=") + len(strconv.Itoa(r.More+len(subs)))
	n := 0
	for _, s := range subs {
		if size+1+len(s)+reserve > limit {
			break
		}
		txt = append(txt, s)
		size += 1 + len(s)
		n++
	}
	if size+reserve > limit {
		return nil, fmt.Errorf("%w: no room for more= within %d bytes", ErrBadRecord, limit)
	}
	return append(txt, "more="+strconv.Itoa(r.More+len(subs)-n)), nil
}

// txtSize is the wire size of TXT strings: each string plus its length byte.
func txtSize(txt []string) int {
	n := 0
	for _, s := range txt {
		n += 1 + len(s)
	}
	return n
}

// validate checks every field of r.
func (r Record) validate() error {
	if r.Proto != ProtocolVersion {
		return fmt.Errorf("%w: v=%d, want %d", ErrProtoVersion, r.Proto, ProtocolVersion)
	}
	if !isHex(r.NodeID, 32) {
		return fmt.Errorf("%w: node id %q is not 32 lowercase hex characters", ErrBadRecord, r.NodeID)
	}
	if err := checkName(r.Name); err != nil {
		return err
	}
	if !isHex(r.MeshID, 16) {
		return fmt.Errorf("%w: mesh id %q is not 16 lowercase hex characters", ErrBadRecord, r.MeshID)
	}
	if err := checkDigest(r.Digest); err != nil {
		return err
	}
	for _, sub := range r.Subservices {
		if err := sub.validate(); err != nil {
			return err
		}
	}
	if r.More < 0 || r.More > MaxMore || len(r.Subservices) > MaxMore-r.More {
		return fmt.Errorf("%w: more=%d with %d subservices is out of range", ErrBadRecord, r.More, len(r.Subservices))
	}
	return nil
}

func (sub Sub) validate() error {
	if !validSubName(sub.Name) {
		return fmt.Errorf("%w: subservice name %q is not [a-z][a-z0-9]*(-[a-z][a-z0-9]*)* of at most %d bytes", ErrBadRecord, sub.Name, MaxSubNameLen)
	}
	if len(sub.Version) > MaxSubVersionLen {
		return fmt.Errorf("%w: subservice %s: version is longer than %d bytes", ErrBadRecord, sub.Name, MaxSubVersionLen)
	}
	if _, err := semver.StrictNewVersion(sub.Version); err != nil {
		return fmt.Errorf("%w: subservice %s: version %q: %v", ErrBadRecord, sub.Name, sub.Version, err)
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrBadRecord)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name is %d bytes, over %d", ErrBadRecord, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name %q is not valid UTF-8", ErrBadRecord, name)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: name %q holds a control character", ErrBadRecord, name)
	}
	return nil
}

func checkDigest(d string) error {
	if len(d) > MaxDigestLen {
		return fmt.Errorf("%w: digest is %d bytes, over %d", ErrBadRecord, len(d), MaxDigestLen)
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+/=_:.-", c) >= 0) {
			return fmt.Errorf("%w: digest %q holds %q", ErrBadRecord, d, c)
		}
	}
	return nil
}

// validSubName reports whether name follows the archive naming rule
// [a-z][a-z0-9]*(-[a-z][a-z0-9]*)*.
func validSubName(name string) bool {
	if name == "" || len(name) > MaxSubNameLen {
		return false
	}
	for _, seg := range strings.Split(name, "-") {
		if seg == "" || seg[0] < 'a' || seg[0] > 'z' {
			return false
		}
		for i := 1; i < len(seg); i++ {
			if c := seg[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}

// DecodeRecord parses TXT strings written by Encode. It is strict about the
// keys it knows: v, id, n, m and d must each appear exactly once and parse,
// every s= must be a valid NAME@VERSION, and more= (optional) a count. Keys
// are matched case-insensitively; unknown keys and empty strings are
// ignored. A record with v= other than ProtocolVersion returns an error
// wrapping ErrProtoVersion (with Proto set in the returned Record); every
// other problem wraps ErrBadRecord.
func DecodeRecord(txt []string) (Record, error) {
	// The version comes first: a record of another version may use the
	// other keys differently, so they are not looked at.
	var r Record
	seen := make(map[string]bool, 6)
	for _, s := range txt {
		key, val, hasVal := strings.Cut(s, "=")
		if strings.ToLower(key) != "v" {
			continue
		}
		if seen["v"] {
			return Record{}, fmt.Errorf("%w: duplicate key \"v\"", ErrBadRecord)
		}
		seen["v"] = true
		n, err := parseCount(val, 9)
		if !hasVal || err != nil || n == 0 {
			return Record{}, fmt.Errorf("%w: v=%q is not a protocol version", ErrBadRecord, val)
		}
		r.Proto = n
	}
	if !seen["v"] {
		return Record{}, fmt.Errorf("%w: missing key \"v\"", ErrBadRecord)
	}
	if r.Proto != ProtocolVersion {
		return Record{Proto: r.Proto}, fmt.Errorf("%w: v=%d, want %d", ErrProtoVersion, r.Proto, ProtocolVersion)
	}
	for _, s := range txt {
		key, val, hasVal := strings.Cut(s, "=")
		key = strings.ToLower(key)
		switch key {
		case "id", "n", "m", "d", "more":
			if seen[key] {
				return Record{}, fmt.Errorf("%w: duplicate key %q", ErrBadRecord, key)
			}
			seen[key] = true
		case "s":
		default:
			continue // v (done above), an empty string, or not ours
		}
		if !hasVal {
			return Record{}, fmt.Errorf("%w: key %q has no value", ErrBadRecord, key)
		}
		switch key {
		case "id":
			r.NodeID = val
		case "n":
			r.Name = val
		case "m":
			r.MeshID = val
		case "d":
			r.Digest = val
		case "more":
			n, err := parseCount(val, 7)
			if err != nil {
				return Record{}, fmt.Errorf("%w: more=%q is not a count", ErrBadRecord, val)
			}
			r.More = n
		case "s":
			name, version, ok := strings.Cut(val, "@")
			if !ok {
				return Record{}, fmt.Errorf("%w: s=%q is not NAME@VERSION", ErrBadRecord, val)
			}
			r.Subservices = append(r.Subservices, Sub{Name: name, Version: version})
		}
	}
	for _, key := range []string{"id", "n", "m", "d"} {
		if !seen[key] {
			return Record{}, fmt.Errorf("%w: missing key %q", ErrBadRecord, key)
		}
	}
	if err := r.validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// parseCount parses a non-negative decimal of at most digits digits.
func parseCount(s string, digits int) (int, error) {
	if s == "" || len(s) > digits {
		return 0, errors.New("bad count")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("bad count")
		}
	}
	return strconv.Atoi(s)
}

// InstanceName returns the DNS-SD instance name for a node: the display name
// lowercased, with every run of characters other than a-z and 0-9 replaced
// by one '-', shortened so that the whole name fits one DNS label, then '-'
// and the first 8 characters of the node id (which may be passed whole or
// already shortened). The result has no dots, so every DNS-SD browser shows
// it as is (avahi ignores instance names with dots). An empty or unusable
// name becomes "nearby".
func InstanceName(name, nodeID string) string {
	id := sanitize(nodeID)
	if len(id) > 8 {
		id = id[:8]
	}
	base := sanitize(name)
	if max := MaxInstanceLen - 1 - len(id); len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	if base == "" {
		base = "nearby"
	}
	if id == "" {
		return base
	}
	return base + "-" + id
}

// sanitize keeps a-z and 0-9 of s (lowercased) and turns every other run
// into one '-', trimming '-' at both ends.
func sanitize(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
			continue
		}
		dash = true
	}
	return b.String()
}

// checkInstance validates an instance name given in a Config.
func checkInstance(s string) error {
	if s == "" || len(s) > MaxInstanceLen {
		return fmt.Errorf("%w: instance name %q must be 1 to %d bytes (use InstanceName)", ErrBadConfig, s, MaxInstanceLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: instance name %q may hold only letters, digits and '-' (use InstanceName)", ErrBadConfig, s)
		}
	}
	return nil
}
