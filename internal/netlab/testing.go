package netlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvCI is the variable that, when "true", makes New fail instead of skip
// where the harness cannot run: CI must never pass by skipping.
const EnvCI = "CI"

// EnvE2ERace is the variable that, when "1", makes Binary build with -race.
const EnvE2ERace = "NEARBY_E2E_RACE"

// available is Available, replaceable in tests.
var available = Available

// Require skips the test where the harness cannot run (not root, ip, tc,
// nft or unshare missing), or fails it when CI=true.
func Require(t testing.TB) {
	t.Helper()
	if err := available(); err != nil {
		if os.Getenv(EnvCI) == "true" {
			t.Fatalf("%v (CI=true: failing instead of skipping)", err)
		} else {
			t.Skip(err)
		}
	}
}

// New is Create for tests. Where the harness cannot run (not root, ip, tc,
// nft or unshare missing) it skips the test, or fails it when CI=true. It
// fails the test if the LAN cannot be built, and closes the LAN in
// t.Cleanup, so everything is removed even when the test fails or panics;
// if the test failed, the tail of every started process's output is logged
// first.
func New(t testing.TB, n int, opts ...Option) *LAN {
	t.Helper()
	Require(t)
	l, err := Create(n, opts...)
	if err != nil {
		t.Fatalf("netlab: create LAN of %d hosts: %v", n, err)
	}
	l.beforeRemove = func() {
		if !t.Failed() {
			return
		}
		l.mu.Lock()
		procs := append([]*Proc(nil), l.procs...)
		l.mu.Unlock()
		for _, p := range procs {
			t.Logf("netlab: %s (pid %d) stdout:\n%s", p.name, p.PID(), tail(p.Stdout(), 4096))
			t.Logf("netlab: %s (pid %d) stderr:\n%s", p.name, p.PID(), tail(p.Stderr(), 4096))
		}
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netlab: close LAN: %v", err)
		}
	})
	return l
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

type build struct {
	once sync.Once
	path string
	err  error
}

var (
	builds   sync.Map // package path -> *build
	binOnce  sync.Once
	binDir   string
	binErr   error
	binLock  *os.File // held for the life of the process; see binaryDir
	binMutex sync.Mutex
)

// BuildNearby returns the path of the nearby binary built for this test
// process (see Binary).
func BuildNearby(t testing.TB) string {
	t.Helper()
	return Binary(t, "github.com/nearbymesh/nearby/cmd/nearby")
}

// Binary builds the Go main package pkg once per test process and returns
// the binary's path; later calls (from any test) return the same path, or
// fail the same way. It builds with -race when NEARBY_E2E_RACE=1. Binaries
// live in a directory of this process that the next test process to call
// Binary removes once this one has exited.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(pkg, new(build))
	b := v.(*build)
	b.once.Do(func() { b.path, b.err = buildBinary(pkg) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildBinary(pkg string) (string, error) {
	dir, err := binaryDir()
	if err != nil {
		return "", err
	}
	gobin, err := goTool()
	if err != nil {
		return "", err
	}
	// Distinct names for distinct packages with the same last element.
	binMutex.Lock()
	out := filepath.Join(dir, path.Base(pkg))
	for i := 2; fileExists(out); i++ {
		out = filepath.Join(dir, fmt.Sprintf("%s.%d", path.Base(pkg), i))
	}
	if err := os.WriteFile(out, nil, 0o755); err != nil { // reserve the name
		binMutex.Unlock()
		return "", fmt.Errorf("netlab: build %s: %w", pkg, err)
	}
	binMutex.Unlock()
	args := []string{"build", "-o", out}
	if os.Getenv(EnvE2ERace) == "1" {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, args...)
	if outb, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("netlab: go %s: %w\n%s", strings.Join(args, " "), err, outb)
	}
	return out, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// goTool finds the go command: the one of the running toolchain first.
func goTool() (string, error) {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: go command not found (set GOROOT or PATH)", ErrUnavailable)
}

// binaryDir returns this process's directory for built binaries. Each such
// directory holds a lock file flocked by its owner; directories whose lock
// is free belong to processes that are gone and are removed here.
func binaryDir() (string, error) {
	binOnce.Do(func() {
		parent := filepath.Join(os.TempDir(), "nearby-netlab-bin")
		if err := os.MkdirAll(parent, 0o1777); err != nil {
			binErr = fmt.Errorf("netlab: binary dir: %w", err)
			return
		}
		_ = os.Chmod(parent, 0o1777|os.ModeSticky)
		if ents, err := os.ReadDir(parent); err == nil {
			for _, e := range ents {
				d := filepath.Join(parent, e.Name())
				f, err := os.Open(filepath.Join(d, "lock"))
				if err != nil {
					continue
				}
				if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
					_ = os.RemoveAll(d)
				}
				f.Close()
			}
		}
		dir, err := os.MkdirTemp(parent, "run-")
		if err != nil {
			binErr = fmt.Errorf("netlab: binary dir: %w", err)
			return
		}
		f, err := os.Create(filepath.Join(dir, "lock"))
		if err == nil {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		}
		if err != nil {
			binErr = fmt.Errorf("netlab: binary dir lock: %w", err)
			return
		}
		binDir, binLock = dir, f
	})
	return binDir, binErr
}
