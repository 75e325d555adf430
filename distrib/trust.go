package distrib

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// TrustStore holds the publisher pins: for each plugin name, the SignerID
// whose signatures are accepted. It is a JSON file,
//
//	{"pins": {"chat": "ed25519:..."}}
//
// rewritten atomically on every change. Methods are safe for concurrent
// use; one process should own the file.
type TrustStore struct {
	path string
	mu   sync.Mutex
	pins map[string]string
}

type trustFile struct {
	Pins map[string]string `json:"pins"`
}

// OpenTrust loads the pins at path; a missing file means no pins yet (it is
// created on the first change).
func OpenTrust(path string) (*TrustStore, error) {
	t := &TrustStore{path: path, pins: map[string]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, wrap(err, "open trust store")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var tf trustFile
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("distrib: trust store %s is not valid (%v); fix or remove it (removing forgets every pin)", path, err)
	}
	for name, signer := range tf.Pins {
		if err := ValidName(name); err != nil {
			return nil, wrap(err, "trust store %s", path)
		}
		if _, err := ParseSignerID(signer); err != nil {
			return nil, wrap(err, "trust store %s: pin for %s", path, name)
		}
		t.pins[name] = signer
	}
	return t, nil
}

// Pin records signer (a SignerID) as the only publisher accepted for
// plugin name, replacing any earlier pin.
func (t *TrustStore) Pin(name, signer string) error {
	if err := ValidName(name); err != nil {
		return wrap(err, "pin")
	}
	if _, err := ParseSignerID(signer); err != nil {
		return wrap(err, "pin %s", name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pins[name] == signer {
		return nil
	}
	old, had := t.pins[name]
	t.pins[name] = signer
	if err := t.saveLocked(); err != nil {
		if had {
			t.pins[name] = old
		} else {
			delete(t.pins, name)
		}
		return err
	}
	return nil
}

// Get returns the SignerID pinned for name.
func (t *TrustStore) Get(name string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.pins[name]
	return s, ok
}

// Unpin forgets the pin for name, so the next signed install pins anew.
// Unpinning a name that has no pin is not an error.
func (t *TrustStore) Unpin(name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.pins[name]
	if !ok {
		return nil
	}
	delete(t.pins, name)
	if err := t.saveLocked(); err != nil {
		t.pins[name] = old
		return err
	}
	return nil
}

// List returns a copy of all pins, name to SignerID.
func (t *TrustStore) List() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.pins)
}

func (t *TrustStore) saveLocked() error {
	b, err := json.MarshalIndent(trustFile{Pins: t.pins}, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(t.path, append(b, '\n'), 0o600); err != nil {
		return wrap(err, "save trust store")
	}
	return nil
}
