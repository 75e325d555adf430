package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStateDirOrder(t *testing.T) {
	t.Setenv(EnvState, "")
	t.Setenv("XDG_STATE_HOME", "/x/state")
	if got := StateDir(""); got != "/x/state/nearby" {
		t.Errorf("XDG: got %q", got)
	}
	t.Setenv(EnvState, "/env/state")
	if got := StateDir(""); got != "/env/state" {
		t.Errorf("env: got %q", got)
	}
	if got := StateDir("/flag"); got != "/flag" {
		t.Errorf("flag: got %q", got)
	}
}

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config")
	if s, err := ReadFile(p); err != nil || s != nil {
		t.Fatalf("missing file: %v %v", s, err)
	}
	os.WriteFile(p, []byte("# comment\nname = desk\n\npeer = 10.0.0.2:7946\npeer=10.0.0.3:7946\n"), 0o600)
	s, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 3 || s[0].Key != "name" || s[0].Value != "desk" || s[2].Value != "10.0.0.3:7946" || s[2].Line != 5 {
		t.Errorf("got %+v", s)
	}
	os.WriteFile(p, []byte("garbage line\n"), 0o600)
	if _, err := ReadFile(p); err == nil {
		t.Error("want error for a line without =")
	}
}
