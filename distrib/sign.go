package distrib

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// Signature file format (docs/ARCHIVES.md): one line of ASCII,
//
//	nearby-sig-v1 <signer> <signature>\n
//
// where <signer> is SignerID of the publisher's ed25519 public key
// ("ed25519:" + unpadded base64url of the 32 key bytes) and <signature> is
// the unpadded base64url ed25519 signature of
//
//	"nearby archive signature v1\x00" || SHA-256(archive bytes)
//
// The prefix separates these signatures from anything else the key might
// sign. The trailing newline is optional when parsing.
const (
	sigMagic     = "nearby-sig-v1"
	sigDomain    = "nearby archive signature v1\x00"
	signerPrefix = "ed25519:"
	// MaxSigBytes caps the size of a .sig file.
	MaxSigBytes = 1024

	publisherPEMType = "NEARBY PUBLISHER PRIVATE KEY"
)

var b64 = base64.RawURLEncoding

// Signature is a parsed detached signature: who signed, and the ed25519
// signature over the domain-separated SHA-256 of the archive bytes.
type Signature struct {
	// Signer is the publisher's public key.
	Signer ed25519.PublicKey
	// Sig is the ed25519 signature.
	Sig []byte
}

func signedMessage(archiveSHA256 []byte) []byte {
	return append([]byte(sigDomain), archiveSHA256...)
}

// Sign signs an archive's SHA-256 with the publisher key and returns the
// content of its .sig file (one line, see the format above).
func Sign(priv ed25519.PrivateKey, archiveSHA256 []byte) []byte {
	s := &Signature{
		Signer: priv.Public().(ed25519.PublicKey),
		Sig:    ed25519.Sign(priv, signedMessage(archiveSHA256)),
	}
	return s.encode()
}

func (s *Signature) encode() []byte {
	return []byte(sigMagic + " " + SignerID(s.Signer) + " " + b64.EncodeToString(s.Sig) + "\n")
}

// ParseSignature parses the content of a .sig file. It checks the format
// only; call Verify to check the signature.
func ParseSignature(b []byte) (*Signature, error) {
	if len(b) > MaxSigBytes {
		return nil, fmt.Errorf("%w: signature file is %d bytes, more than %d", ErrBadSignature, len(b), MaxSigBytes)
	}
	line := string(bytes.TrimSuffix(b, []byte("\n")))
	f := strings.Split(line, " ")
	if len(f) != 3 || f[0] != sigMagic {
		return nil, fmt.Errorf("%w: want one line %q, made by `nearby pack --sign`", ErrBadSignature, sigMagic+" SIGNER SIGNATURE")
	}
	pub, err := ParseSignerID(f[1])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	sig, err := decodeB64(f[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is not %d bytes of unpadded base64url", ErrBadSignature, ed25519.SignatureSize)
	}
	return &Signature{Signer: pub, Sig: sig}, nil
}

// Verify checks the signature against an archive's SHA-256.
func (s *Signature) Verify(archiveSHA256 []byte) error {
	if len(archiveSHA256) != sha256.Size {
		return fmt.Errorf("%w: want a %d-byte SHA-256, got %d bytes", ErrBadSignature, sha256.Size, len(archiveSHA256))
	}
	if len(s.Signer) != ed25519.PublicKeySize || !ed25519.Verify(s.Signer, signedMessage(archiveSHA256), s.Sig) {
		return fmt.Errorf("%w: signature by %s does not match the archive's contents (altered or corrupted archive, or a .sig from another archive)", ErrBadSignature, SignerID(s.Signer))
	}
	return nil
}

// SignerID returns the printable identity of a publisher key:
// "ed25519:" followed by the unpadded base64url encoding of the 32 key
// bytes (51 characters in all). It is what pins store and what people
// compare; ParseSignerID is its inverse.
func SignerID(pub ed25519.PublicKey) string {
	return signerPrefix + b64.EncodeToString(pub)
}

// ParseSignerID parses a SignerID back into a public key.
func ParseSignerID(id string) (ed25519.PublicKey, error) {
	enc, ok := strings.CutPrefix(id, signerPrefix)
	if !ok {
		return nil, fmt.Errorf("signer %q: want %q followed by the base64url public key", id, signerPrefix)
	}
	pub, err := decodeB64(enc)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("signer %q: want %q followed by %d bytes of unpadded base64url", id, signerPrefix, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(pub), nil
}

// LoadOrCreatePublisherKey reads the publisher key at path (PEM, type
// "NEARBY PUBLISHER PRIVATE KEY", holding the 32-byte ed25519 seed),
// creating it with mode 0600 if it does not exist. Keep this file private
// and backed up: the pins on every node that installed your plugins name
// its public half.
func LoadOrCreatePublisherKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != publisherPEMType || len(blk.Bytes) != ed25519.SeedSize {
			return nil, fmt.Errorf("distrib: %s is not a nearby publisher key (want PEM %q)", path, publisherPEMType)
		}
		return ed25519.NewKeyFromSeed(blk.Bytes), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, wrap(err, "read publisher key")
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, wrap(err, "generate publisher key")
	}
	data := pem.EncodeToMemory(&pem.Block{Type: publisherPEMType, Bytes: priv.Seed()})
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, wrap(err, "save publisher key")
	}
	return priv, nil
}

// decodeB64 decodes unpadded base64url strictly: unlike the encoding
// package alone it also refuses embedded CR/LF, so each value has exactly
// one accepted spelling.
func decodeB64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return nil, errors.New("not base64url")
		}
	}
	return b64.Strict().DecodeString(s)
}
