package desktop

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/tray"
)

// TestRunWithoutBus: without a reachable session bus Run returns at once
// (fyne.io/systray would block forever), and Run refuses a second call.
// Both happen before systray starts, so this test needs no D-Bus.
func TestRunWithoutBus(t *testing.T) {
	t.Setenv(tray.EnvSessionBus, "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Run(ctx, tray.Config{StateDir: t.TempDir()})
	if !errors.Is(err, tray.ErrNoSessionBus) {
		t.Fatalf("Run without a bus: %v, want ErrNoSessionBus", err)
	}
	if err := Run(ctx, tray.Config{StateDir: t.TempDir()}); !errors.Is(err, ErrAlreadyRan) {
		t.Fatalf("second Run: %v, want ErrAlreadyRan", err)
	}
}

func TestLogWriter(t *testing.T) {
	var b bytes.Buffer
	w := &logWriter{log: slog.New(slog.NewTextHandler(&b, nil))}
	w.Write([]byte("systray error: failed to register: The name org.kde.StatusNotifierWatcher was not provided by any .service files\nsystray error: something else\n"))
	out := b.String()
	if strings.Count(out, "level=WARN") != 2 {
		t.Fatalf("want two warnings, got:\n%s", out)
	}
	if !strings.Contains(out, "no StatusNotifierWatcher") || !strings.Contains(out, `msg="systray: something else"`) {
		t.Fatalf("unexpected log:\n%s", out)
	}
}

func TestItemName(t *testing.T) {
	if got := ItemName(42); got != "org.kde.StatusNotifierItem-42-1" {
		t.Fatal(got)
	}
}
