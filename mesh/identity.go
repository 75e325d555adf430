package mesh

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// NodeID identifies a node on the mesh. It is the lowercase hex encoding of
// the first 16 bytes of the SHA-256 of the node's ed25519 public key, so it
// is stable for as long as the node keeps its key and cannot be claimed by
// anyone who does not hold that key (the TLS handshake checks it).
type NodeID string

// NodeIDLen is the length of a NodeID string.
const NodeIDLen = 32

// IDFromPublicKey derives the NodeID of a public key.
func IDFromPublicKey(pub ed25519.PublicKey) NodeID {
	sum := sha256.Sum256(pub)
	return NodeID(hex.EncodeToString(sum[:NodeIDLen/2]))
}

// Short returns the first 8 characters of the id, for display and instance names.
func (id NodeID) Short() string {
	if len(id) < 8 {
		return string(id)
	}
	return string(id[:8])
}

// Valid reports whether id has the form of a NodeID.
func (id NodeID) Valid() bool {
	if len(id) != NodeIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Identity is a node's long-lived key pair. It is safe for concurrent use
// because it is never modified after loading.
type Identity struct {
	// Private is the node's signing key; it never leaves the state directory.
	Private ed25519.PrivateKey
	// Public is the public half, carried in the node's TLS certificate.
	Public ed25519.PublicKey
	// ID is derived from Public.
	ID NodeID
}

const identityPEMType = "NEARBY NODE PRIVATE KEY"

// NewIdentity returns a fresh random identity.
func NewIdentity() (*Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mesh: generate node key: %w", err)
	}
	return &Identity{Private: priv, Public: pub, ID: IDFromPublicKey(pub)}, nil
}

// LoadOrCreateIdentity reads the node key at path, creating it (mode 0600,
// written atomically) if it does not exist yet.
func LoadOrCreateIdentity(path string) (*Identity, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return parseIdentity(path, b)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("mesh: read node key: %w", err)
	}
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: identityPEMType, Bytes: id.Private.Seed()})
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("mesh: save node key: %w", err)
	}
	return id, nil
}

func parseIdentity(path string, b []byte) (*Identity, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != identityPEMType || len(blk.Bytes) != ed25519.SeedSize {
		return nil, fmt.Errorf("mesh: %s is not a nearby node key; move it away to create a new identity", path)
	}
	priv := ed25519.NewKeyFromSeed(blk.Bytes)
	pub := priv.Public().(ed25519.PublicKey)
	return &Identity{Private: priv, Public: pub, ID: IDFromPublicKey(pub)}, nil
}
