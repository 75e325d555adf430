package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nearbymesh/nearby/mesh"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestHelpEveryCommand(t *testing.T) {
	code, out, _ := run(t, "help")
	if code != 0 || !strings.Contains(out, "Commands:") {
		t.Fatalf("help: %d %q", code, out)
	}
	for _, c := range commands {
		code, out, _ := run(t, c.name, "--help")
		if code != 0 || !strings.Contains(out, "Usage: nearby "+c.name) {
			t.Errorf("%s --help: code %d, out %q", c.name, code, out)
		}
		if c.name != "version" && !strings.Contains(out, "Example") {
			t.Errorf("%s --help has no example", c.name)
		}
	}
}

func TestUnknownCommandSuggests(t *testing.T) {
	code, _, errOut := run(t, "peerz")
	if code != ExitUsage || !strings.Contains(errOut, "nearby peers") {
		t.Fatalf("got %d %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"run"}, {"send", "a"}, {"key", "old"}, {"status", "--bogus"}, {"trust", "pin", "x"}} {
		if code, _, _ := run(t, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, ExitUsage)
		}
	}
}

func TestNoNode(t *testing.T) {
	code, _, errOut := run(t, "status", "--state", t.TempDir())
	if code != ExitNoNode || !strings.Contains(errOut, "nearby up") {
		t.Fatalf("status without a node: %d %q", code, errOut)
	}
	code, _, errOut = run(t, "peers", "--json", "--state", t.TempDir())
	var e map[string]string
	if code != ExitNoNode || json.Unmarshal([]byte(errOut), &e) != nil || e["error"] == "" {
		t.Fatalf("--json error is not JSON on stderr: %d %q", code, errOut)
	}
}

func TestKeyNew(t *testing.T) {
	code, out, _ := run(t, "key", "new")
	if code != 0 {
		t.Fatal(code)
	}
	if _, err := mesh.ParseKey(out); err != nil {
		t.Fatalf("key new printed %q: %v", out, err)
	}
}

func TestFlagsAfterArgs(t *testing.T) {
	code, out, _ := run(t, "version", "--json")
	if code != 0 || !strings.Contains(out, `"version"`) {
		t.Fatalf("%d %q", code, out)
	}
}

func TestLoadMeshKey(t *testing.T) {
	state := t.TempDir()
	t.Setenv("NEARBY_MESH_KEY", "")
	k1, created, err := loadMeshKey(state, "")
	if err != nil || !created {
		t.Fatalf("first run: %v %v", created, err)
	}
	k2, created, err := loadMeshKey(state, "")
	if err != nil || created || k1 != k2 {
		t.Fatalf("second run: key changed or recreated: %v %v", created, err)
	}
	t.Setenv("NEARBY_MESH_KEY", "garbage")
	if _, _, err := loadMeshKey(state, ""); err == nil || !strings.Contains(err.Error(), "NEARBY_MESH_KEY") {
		t.Fatalf("bad env key: %v", err)
	}
	f := filepath.Join(t.TempDir(), "k")
	os.WriteFile(f, []byte(k1.String()+"\n"), 0o600)
	if k, _, err := loadMeshKey(state, f); err != nil || k != k1 {
		t.Fatalf("key file: %v", err)
	}
}

func TestConfigFileApplies(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	os.WriteFile(cfg, []byte("name = desk\nbogus = 1\n"), 0o600)
	t.Setenv("NEARBY_CONFIG", cfg)
	code, _, errOut := run(t, "up", "--state", t.TempDir())
	if code == 0 || !strings.Contains(errOut, `unknown setting "bogus"`) {
		t.Fatalf("bad config file: %d %q", code, errOut)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, _ := run(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "discover") {
			t.Errorf("%s: %d", sh, code)
		}
	}
}

func TestGlobalFlagsBeforeCommand(t *testing.T) {
	code, _, errOut := run(t, "--state", t.TempDir(), "status")
	if code != ExitNoNode {
		t.Fatalf("nearby --state DIR status: %d %q", code, errOut)
	}
	code, out, _ := run(t, "--json", "version")
	if code != 0 || !strings.Contains(out, `"version"`) {
		t.Fatalf("nearby --json version: %d %q", code, out)
	}
}
