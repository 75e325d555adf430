//go:build unix

package distrib

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPackRefusesFifo(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte(manifestJSON("x", "1.0.0")), 0o644)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Skip("no fifos here:", err)
	}
	if _, err := Pack(dir, t.TempDir(), nil); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("err = %v, want ErrUnsafePath", err)
	}
}
