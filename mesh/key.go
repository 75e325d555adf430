package mesh

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Key is the shared secret of one mesh: only nodes that hold it can join.
// Its text form is "nearby-mesh-" followed by 43 characters of unpadded
// base64url.
type Key [32]byte

const keyPrefix = "nearby-mesh-"

// ErrBadKey is returned when a mesh key cannot be parsed.
var ErrBadKey = errors.New("mesh: not a mesh key (want nearby-mesh-<43 base64url chars>; make one with `nearby key new`)")

// NewKey returns a fresh random mesh key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("mesh: generate mesh key: %w", err)
	}
	return k, nil
}

// ParseKey parses the text form of a key. Surrounding white space is ignored
// so that keys can be read from files written by hand.
func ParseKey(s string) (Key, error) {
	var k Key
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, keyPrefix) {
		return k, ErrBadKey
	}
	b, err := base64.RawURLEncoding.DecodeString(s[len(keyPrefix):])
	if err != nil || len(b) != len(k) {
		return k, ErrBadKey
	}
	copy(k[:], b)
	return k, nil
}

// LoadKeyFile reads a key from a file.
func LoadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("mesh: read mesh key: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// String returns the text form of the key. It is a secret: never log it.
func (k Key) String() string {
	return keyPrefix + base64.RawURLEncoding.EncodeToString(k[:])
}

// MeshID returns a public identifier of the mesh, safe to advertise: 16 hex
// characters of an HMAC of a fixed label under the key. Nodes of different
// meshes on one LAN use it to ignore each other without learning the key.
func (k Key) MeshID() string {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte("nearby mesh id v1"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
