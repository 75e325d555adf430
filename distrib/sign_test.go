package distrib

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignVerify(t *testing.T) {
	priv := newKey(t)
	sum := sha256.Sum256([]byte("archive bytes"))
	b := Sign(priv, sum[:])
	if !bytes.HasPrefix(b, []byte("nearby-sig-v1 ed25519:")) || !bytes.HasSuffix(b, []byte("\n")) || bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("signature file %q is not one documented line", b)
	}
	sig, err := ParseSignature(b)
	if err != nil {
		t.Fatal(err)
	}
	if !sig.Signer.Equal(priv.Public()) {
		t.Fatal("wrong signer")
	}
	if err := sig.Verify(sum[:]); err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("other bytes"))
	if err := sig.Verify(other[:]); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other hash: %v", err)
	}
	if err := sig.Verify(sum[:16]); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("short hash: %v", err)
	}
	// A signature made by one key but claiming another signer fails.
	forged := &Signature{Signer: newKey(t).Public().(ed25519.PublicKey), Sig: sig.Sig}
	if err := forged.Verify(sum[:]); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged signer: %v", err)
	}
	// The domain prefix matters: a plain signature of the hash is refused.
	plain := &Signature{Signer: sig.Signer, Sig: ed25519.Sign(priv, sum[:])}
	if err := plain.Verify(sum[:]); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("undomained signature accepted: %v", err)
	}
	// Without the trailing newline it still parses.
	if _, err := ParseSignature(bytes.TrimSuffix(b, []byte("\n"))); err != nil {
		t.Fatal(err)
	}
}

func TestParseSignatureErrors(t *testing.T) {
	priv := newKey(t)
	sum := sha256.Sum256(nil)
	good := string(Sign(priv, sum[:]))
	f := strings.Fields(good)
	tests := map[string]string{
		"empty":          "",
		"wrong magic":    "nearby-sig-v2 " + f[1] + " " + f[2],
		"two fields":     f[0] + " " + f[1],
		"four fields":    good[:len(good)-1] + " x",
		"double space":   f[0] + "  " + f[1] + " " + f[2],
		"crlf":           good[:len(good)-1] + "\r\n",
		"two newlines":   good + "\n",
		"bad signer":     f[0] + " ed25519:AAAA " + f[2],
		"no prefix":      f[0] + " " + strings.TrimPrefix(f[1], "ed25519:") + " " + f[2],
		"short sig":      f[0] + " " + f[1] + " " + f[2][:40],
		"padded sig":     f[0] + " " + f[1] + " " + f[2] + "==",
		"std base64":     f[0] + " " + f[1] + " " + strings.NewReplacer("-", "+", "_", "/").Replace(f[2]) + "+",
		"newline inside": f[0] + " " + f[1] + " " + f[2][:10] + "\n" + f[2][10:],
		"too long":       strings.Repeat("x", MaxSigBytes+1),
	}
	for name, in := range tests {
		if _, err := ParseSignature([]byte(in)); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: err = %v, want ErrBadSignature", name, err)
		}
	}
}

func TestSignerID(t *testing.T) {
	pub := newKey(t).Public().(ed25519.PublicKey)
	id := SignerID(pub)
	if !strings.HasPrefix(id, "ed25519:") || len(id) != 51 {
		t.Fatalf("SignerID = %q", id)
	}
	back, err := ParseSignerID(id)
	if err != nil || !back.Equal(pub) {
		t.Fatalf("ParseSignerID(%q) = %v, %v", id, back, err)
	}
	for _, bad := range []string{"", "ed25519:", id[:50], id + "A", "rsa:" + id[8:], strings.ToUpper(id)} {
		if _, err := ParseSignerID(bad); err == nil {
			t.Errorf("ParseSignerID(%q) accepted", bad)
		}
	}
}

func TestLoadOrCreatePublisherKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys", "publisher.key")
	k1, err := LoadOrCreatePublisherKey(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	k2, err := LoadOrCreatePublisherKey(p)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("reload gave another key (%v)", err)
	}
	os.WriteFile(p, []byte("not a key"), 0o600)
	if _, err := LoadOrCreatePublisherKey(p); err == nil || !strings.Contains(err.Error(), "not a nearby publisher key") {
		t.Fatalf("garbage key file: %v", err)
	}
}

// FuzzParseSignature checks that every accepted signature file is the
// canonical encoding of what was parsed (one spelling per signature).
func FuzzParseSignature(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(bytes.NewReader(make([]byte, 64)))
	sum := sha256.Sum256([]byte("seed"))
	good := Sign(priv, sum[:])
	f.Add(good)
	f.Add(bytes.TrimSuffix(good, []byte("\n")))
	f.Add([]byte("nearby-sig-v1 ed25519:AAAA AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sig, err := ParseSignature(b)
		if err != nil {
			return
		}
		enc := sig.encode()
		if !bytes.Equal(enc, b) && !bytes.Equal(enc, append(bytes.Clone(b), '\n')) {
			t.Fatalf("accepted %q but its canonical form is %q", b, enc)
		}
		sig2, err := ParseSignature(enc)
		if err != nil || !sig2.Signer.Equal(sig.Signer) || !bytes.Equal(sig2.Sig, sig.Sig) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
