package distrib

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest([]byte(`{
		"name": "chat", "version": "1.2.0", "description": "Chat\nwith\tpeers",
		"command": ["bin/chat", "--flag"], "commands": {"windows": ["bin/chat.exe"]},
		"mode": "hosted", "protocol": 1, "label": "Chat",
		"sessions": {"max_sessions": 4, "idle_timeout": "10m", "output_buffer": 65536}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{Name: "chat", Version: "1.2.0", Description: "Chat\nwith\tpeers", Command: []string{"bin/chat", "--flag"},
		Commands: map[string][]string{"windows": {"bin/chat.exe"}}, Mode: ModeHosted, Protocol: 1, Label: "Chat",
		Sessions: &SessionLimits{MaxSessions: 4, IdleTimeout: "10m", OutputBuffer: 65536}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	if d := m.Sessions.Idle(); d != 10*time.Minute {
		t.Errorf("Idle() = %v", d)
	}
	if got := m.Argv("windows"); !reflect.DeepEqual(got, []string{"bin/chat.exe"}) {
		t.Errorf("Argv(windows) = %v", got)
	}
	got := m.Argv("linux")
	got[0] = "changed"
	if m.Command[0] != "bin/chat" {
		t.Error("Argv returned the manifest's own slice")
	}
}

func TestParseManifestDefaults(t *testing.T) {
	m, err := ParseManifest([]byte(`{"name":"x","version":"0.1.0","command":["./run.sh"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != ModeLocal || m.Protocol != ProtocolVersion || m.Sessions != nil || m.Commands != nil {
		t.Fatalf("defaults not applied: %+v", m)
	}
}

func TestParseManifestErrors(t *testing.T) {
	base := `"name":"chat","version":"1.2.0","command":["bin/chat"]`
	tests := []struct {
		name, json, want string // want: a fragment of the error
	}{
		{"unknown field", `{` + base + `,"extra":1}`, `unknown key "extra"`},
		{"case variant", `{"Name":"chat","version":"1.2.0","command":["x"]}`, `unknown key "Name"`},
		{"duplicate key", `{` + base + `,"name":"other"}`, `duplicate key "name"`},
		{"duplicate goos", `{` + base + `,"commands":{"linux":["a"],"linux":["b"]}}`, `duplicate key "linux"`},
		{"unknown session key", `{` + base + `,"mode":"hosted","sessions":{"max":1}}`, `unknown key "max"`},
		{"trailing data", `{` + base + `} {}`, "after the JSON object"},
		{"not an object", `["chat"]`, "want a JSON object"},
		{"empty", ``, "EOF"},
		{"bad utf8", "{\"name\":\"\xff\"}", "UTF-8"},
		{"bad name", `{"name":"Chat","version":"1.2.0","command":["x"]}`, "name:"},
		{"bad version", `{"name":"chat","version":"v1.2.0","command":["x"]}`, "version:"},
		{"no command", `{"name":"chat","version":"1.2.0"}`, "command: empty"},
		{"empty program", `{"name":"chat","version":"1.2.0","command":[""]}`, "argv[0]"},
		{"absolute program", `{"name":"chat","version":"1.2.0","command":["/bin/sh"]}`, "relative"},
		{"dotdot program", `{"name":"chat","version":"1.2.0","command":["../x"]}`, "clean path"},
		{"unclean program", `{"name":"chat","version":"1.2.0","command":["bin//x"]}`, "clean path"},
		{"backslash program", `{"name":"chat","version":"1.2.0","command":["bin\\x"]}`, "relative"},
		{"nul arg", `{"name":"chat","version":"1.2.0","command":["x","a\u0000b"]}`, "NUL"},
		{"bad goos", `{` + base + `,"commands":{"window":["x"]}}`, `"window" is not a GOOS`},
		{"bad mode", `{` + base + `,"mode":"remote"}`, `mode "remote"`},
		{"protocol too new", `{` + base + `,"protocol":2}`, "upgrade nearby"},
		{"negative protocol", `{` + base + `,"protocol":-1}`, "protocol -1"},
		{"sessions on local", `{` + base + `,"sessions":{"max_sessions":1}}`, "only allowed with mode"},
		{"bad idle", `{` + base + `,"mode":"hosted","sessions":{"idle_timeout":"soon"}}`, "idle_timeout"},
		{"negative sessions", `{` + base + `,"mode":"hosted","sessions":{"max_sessions":-1}}`, "max_sessions"},
		{"control char label", `{` + base + `,"label":"a\u0007"}`, "control character"},
		{"long label", `{` + base + `,"label":"` + strings.Repeat("x", 65) + `"}`, "longer than"},
		{"wrong type", `{"name":1}`, "cannot unmarshal"},
		{"too large", `{` + base + `,"description":"` + strings.Repeat("x", MaxManifestBytes) + `"}`, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(tt.json))
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("err = %v, want ErrBadManifest", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestResolveArgv(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), []byte("x"), 0o755)
	tests := []struct {
		cmd  []string
		want string
	}{
		{[]string{"bin/chat", "-v"}, filepath.Join(dir, "bin", "chat")},
		{[]string{"./run.sh"}, filepath.Join(dir, "run.sh")},
		{[]string{"tool"}, filepath.Join(dir, "tool")},
	}
	for _, tt := range tests {
		m := &Manifest{Name: "x", Command: tt.cmd}
		argv, err := m.ResolveArgv(dir, "linux")
		if err != nil {
			t.Fatal(err)
		}
		if argv[0] != tt.want || len(argv) != len(tt.cmd) {
			t.Errorf("ResolveArgv(%v) = %v, want %s", tt.cmd, argv, tt.want)
		}
	}
	m := &Manifest{Name: "x", Command: []string{"sh", "-c", "true"}}
	argv, err := m.ResolveArgv(dir, "linux")
	if err != nil || !filepath.IsAbs(argv[0]) {
		t.Errorf("PATH lookup: %v, %v", argv, err)
	}
	m = &Manifest{Name: "x", Command: []string{"no-such-program-nearby"}}
	if _, err := m.ResolveArgv(dir, "linux"); err == nil || !strings.Contains(err.Error(), "neither in") {
		t.Errorf("missing program: err = %v", err)
	}
}

// FuzzParseManifest checks that every accepted manifest is valid and
// re-encodes to a manifest that parses to the same value.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"name":"chat","version":"1.2.0","command":["bin/chat"]}`))
	f.Add([]byte(`{"name":"c","version":"1.0.0-rc.1","command":["python3","x.py"],"commands":{"windows":["py","x.py"]},"mode":"hosted","protocol":1,"label":"C","sessions":{"max_sessions":2,"idle_timeout":"1m","output_buffer":10}}`))
	f.Add([]byte(`{"name":"c","version":"1.0.0","command":["x"],"name":"d"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("error does not wrap ErrBadManifest: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(enc)
		if err != nil {
			t.Fatalf("re-encoded manifest %s does not parse: %v", enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}
