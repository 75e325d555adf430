package mesh

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Catalog is the list of plugin archives a node offers. The mesh carries it
// opaquely: the distrib package decides what the fields mean and validates
// them.
type Catalog struct {
	Entries []CatalogEntry
}

// CatalogEntry describes one archive in a catalog. Name, Version, SHA256 and
// Mode are at most 255 bytes, Signer, Description and Label at most 65535;
// see Catalog.Normalize.
type CatalogEntry struct {
	Name, Version, SHA256 string
	Size                  int64
	Mode, Signer          string
	Description, Label    string
}

// Catalog field and size limits.
const (
	maxCatalogEntries = 1 << 16
	maxShortField     = 255
	maxLongField      = 65535
)

// Normalize returns the catalog as it travels on the wire: entries with a
// Name, Version, SHA256 or Mode over 255 bytes are left out, and Signer,
// Description and Label are cut to 65535 bytes (at a UTF-8 boundary). It also
// returns how many entries were left out. Entries beyond 65536 are left out
// too. The order of entries is kept.
func (c Catalog) Normalize() (Catalog, int) {
	var out Catalog
	dropped := 0
	for _, e := range c.Entries {
		if len(e.Name) > maxShortField || len(e.Version) > maxShortField ||
			len(e.SHA256) > maxShortField || len(e.Mode) > maxShortField ||
			len(out.Entries) >= maxCatalogEntries {
			dropped++
			continue
		}
		e.Signer = cutUTF8(e.Signer, maxLongField)
		e.Description = cutUTF8(e.Description, maxLongField)
		e.Label = cutUTF8(e.Label, maxLongField)
		out.Entries = append(out.Entries, e)
	}
	return out, dropped
}

// Digest returns 16 hex characters that identify the catalog's content: the
// first 8 bytes of a SHA-256 over the entries' wire encodings in sorted
// order, so it does not depend on the order of entries and is the same on
// every node and every run. An empty catalog has the digest "" (so an
// advertisement can leave it out). Entries are normalized first.
func (c Catalog) Digest() string {
	n, _ := c.Normalize()
	if len(n.Entries) == 0 {
		return ""
	}
	encs := make([][]byte, len(n.Entries))
	for i, e := range n.Entries {
		encs[i] = appendEntry(nil, e)
	}
	slices.SortFunc(encs, bytes.Compare)
	h := sha256.New()
	for _, e := range encs {
		h.Write(e)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Clone returns a deep copy of the catalog.
func (c Catalog) Clone() Catalog {
	return Catalog{Entries: slices.Clone(c.Entries)}
}

// Equal reports whether two catalogs hold the same entries in the same order.
func (c Catalog) Equal(o Catalog) bool {
	return slices.Equal(c.Entries, o.Entries)
}

// encodeCatalog returns the body of a catalog frame for a normalized catalog.
func encodeCatalog(c Catalog) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(c.Entries)))
	for _, e := range c.Entries {
		b = appendEntry(b, e)
	}
	return b
}

func appendEntry(b []byte, e CatalogEntry) []byte {
	b = appendStr8(b, e.Name)
	b = appendStr8(b, e.Version)
	b = appendStr8(b, e.SHA256)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
	b = appendStr8(b, e.Mode)
	b = appendStr16(b, e.Signer)
	b = appendStr16(b, e.Description)
	return appendStr16(b, e.Label)
}

// decodeCatalog decodes the body of a catalog frame.
func decodeCatalog(b []byte) (Catalog, error) {
	if len(b) < 4 {
		return Catalog{}, fmt.Errorf("%w: catalog frame of %d bytes", ErrProtocol, len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxCatalogEntries {
		return Catalog{}, fmt.Errorf("%w: catalog of %d entries (limit %d)", ErrProtocol, n, maxCatalogEntries)
	}
	// Every entry takes at least 19 bytes: reject lies before allocating.
	if uint64(n)*19 > uint64(len(b)-4) {
		return Catalog{}, fmt.Errorf("%w: catalog of %d entries in %d bytes", ErrProtocol, n, len(b))
	}
	d := decoder{b: b[4:]}
	c := Catalog{Entries: make([]CatalogEntry, 0, n)}
	for range n {
		var e CatalogEntry
		e.Name = d.str8()
		e.Version = d.str8()
		e.SHA256 = d.str8()
		e.Size = int64(d.u64())
		e.Mode = d.str8()
		e.Signer = d.str16()
		e.Description = d.str16()
		e.Label = d.str16()
		if d.err {
			return Catalog{}, fmt.Errorf("%w: catalog entry %d overruns the frame", ErrProtocol, len(c.Entries))
		}
		c.Entries = append(c.Entries, e)
	}
	if len(d.b) != 0 {
		return Catalog{}, fmt.Errorf("%w: %d bytes after the last catalog entry", ErrProtocol, len(d.b))
	}
	return c, nil
}

func appendStr8(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

func appendStr16(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// decoder reads length-prefixed fields; err sticks once a read overruns.
type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) take(n int) []byte {
	if d.err || len(d.b) < n {
		d.err = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str8() string {
	l := d.take(1)
	if l == nil {
		return ""
	}
	return string(d.take(int(l[0])))
}

func (d *decoder) str16() string {
	l := d.take(2)
	if l == nil {
		return ""
	}
	return string(d.take(int(binary.BigEndian.Uint16(l))))
}

func (d *decoder) u64() uint64 {
	v := d.take(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// cutUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
