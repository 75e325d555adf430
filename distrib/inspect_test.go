package distrib

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInspectErrors(t *testing.T) {
	dir := t.TempDir()
	priv := newKey(t)
	tests := []struct {
		name, file string
		ents       []ent
		sig        func(p string)
		want       error
		msg        string
	}{
		{"version mismatch", "chat-1.0.0.tar.gz", goodEnts("chat", "1.0.1"), nil, ErrBadManifest, "file name says chat 1.0.0"},
		{"name mismatch", "chat-1.0.0.tar.gz", goodEnts("talk", "1.0.0"), nil, ErrBadManifest, "says talk 1.0.0"},
		{"missing manifest", "chat-1.0.0.tar.gz", []ent{{name: "run.sh", body: "x"}}, nil, ErrBadManifest, "no nearby.json"},
		{"nested manifest", "chat-1.0.0.tar.gz", []ent{{name: "chat/nearby.json", body: manifestJSON("chat", "1.0.0")}}, nil, ErrBadManifest, "found chat/nearby.json"},
		{"manifest is a dir", "chat-1.0.0.tar.gz", []ent{{name: "nearby.json/", typ: '5'}}, nil, ErrBadManifest, "no nearby.json"},
		{"invalid manifest", "chat-1.0.0.tar.gz", []ent{{name: "nearby.json", body: `{"name":"chat"}`}}, nil, ErrBadManifest, "version"},
		{"bad file name", "Chat-1.0.0.tar.gz", goodEnts("chat", "1.0.0"), nil, ErrBadName, "lowercase"},
		{"bad version", "chat-1.0.tar.gz", goodEnts("chat", "1.0.0"), nil, ErrBadVersion, "strict semantic version"},
		{"garbage sig", "chat-1.0.0.tar.gz", goodEnts("chat", "1.0.0"), func(p string) { os.WriteFile(p+SigExt, []byte("garbage"), 0o644) }, ErrBadSignature, "nearby pack --sign"},
		{"sig of other bytes", "chat-1.0.0.tar.gz", goodEnts("chat", "1.0.0"), func(p string) {
			os.WriteFile(p+SigExt, Sign(priv, make([]byte, 32)), 0o644)
		}, ErrBadSignature, "does not match"},
		{"unsafe entry", "chat-1.0.0.tar.gz", append(goodEnts("chat", "1.0.0"), ent{name: "../x", body: "x"}), nil, ErrUnsafePath, ".."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			os.Mkdir(sub, 0o755)
			p := writeArchive(t, sub, tt.file, tarGz(t, tt.ents))
			if tt.sig != nil {
				tt.sig(p)
			}
			_, err := Inspect(p, Limits{})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
	p := goodArchive(t, dir, "chat", "1.0.0", nil)
	if _, err := Inspect(p, Limits{MaxArchiveBytes: 10}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("MaxArchiveBytes: %v", err)
	}
	if _, err := Inspect(filepath.Join(dir, "none-1.0.0.tar.gz"), Limits{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
