package e2e

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nearbymesh/nearby/distrib"
)

// packPlugin writes a tiny shell-script plugin called name at version into
// a temporary folder and packs it into outDir (signed when key is non-nil).
// It returns the archive path.
func packPlugin(t testing.TB, outDir, name, version string, key ed25519.PrivateKey) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name+"-"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	man := map[string]any{
		"name": name, "version": version, "description": "test plugin " + name,
		"command": []string{"./run.sh"}, "mode": "local", "protocol": 1,
	}
	b, _ := json.MarshalIndent(man, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "nearby.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\necho %s %s started\nexec sleep 3600\n", name, version)
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := distrib.Pack(dir, outDir, key)
	if err != nil {
		t.Fatalf("pack %s %s: %v", name, version, err)
	}
	return p
}
