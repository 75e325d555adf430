package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// badDeps are the GUI and desktop-bus libraries the node binary must not
// link: they belong to nearby-tray, a process of its own (the idea of
// tailscale's cmd/tailscale/deps_test.go).
var badDeps = []string{
	"fyne.io/systray",
	"github.com/godbus/dbus",
}

// deps lists the packages pkg depends on for goos, with `go list -deps`.
func deps(t *testing.T, pkg, goos string) map[string]bool {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Fatalf("go command not found: %v", err)
		}
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s (GOOS=%s): %v\n%s", pkg, goos, err, stderr)
	}
	m := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		m[p] = true
	}
	return m
}

func badIn(m map[string]bool) []string {
	var found []string
	for p := range m {
		for _, bad := range badDeps {
			if p == bad || strings.HasPrefix(p, bad+"/") {
				found = append(found, p)
			}
		}
	}
	return found
}

func TestDeps(t *testing.T) {
	for _, goos := range []string{"linux", "darwin", "freebsd"} {
		t.Run(goos, func(t *testing.T) {
			m := deps(t, "github.com/nearbymesh/nearby/cmd/nearby", goos)
			if !m["github.com/nearbymesh/nearby/internal/cli"] {
				t.Fatalf("go list output does not look like cmd/nearby's dependencies (%d packages)", len(m))
			}
			if found := badIn(m); len(found) > 0 {
				t.Errorf("cmd/nearby depends on %v: keep the tray's libraries in cmd/nearby-tray", found)
			}
		})
	}
}

// TestDepsCheckCanFail: the same check on nearby-tray finds the libraries,
// so TestDeps is not vacuous.
func TestDepsCheckCanFail(t *testing.T) {
	m := deps(t, "github.com/nearbymesh/nearby/cmd/nearby-tray", "linux")
	if len(badIn(m)) == 0 {
		t.Fatal("the check finds no tray libraries in cmd/nearby-tray either: it would pass whatever cmd/nearby imports")
	}
}
