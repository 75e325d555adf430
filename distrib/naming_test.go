package distrib

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, name := range []string{"a", "chat", "chat2", "my-chat", "a-b-c", "x9-y8", strings.Repeat("a", MaxNameLen)} {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "Chat", "9chat", "chat-2", "chat-", "-chat", "a--b", "ch_at", "ch.at", "chät", "a b", strings.Repeat("a", MaxNameLen+1)} {
		if err := ValidName(name); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, want ErrBadName", name, err)
		}
	}
}

func TestParseFileName(t *testing.T) {
	tests := []struct {
		file, name, version string
	}{
		{"chat-1.2.0.tar.gz", "chat", "1.2.0"},
		{"my-chat-0.0.1.tar.gz", "my-chat", "0.0.1"},
		{"a-b2-10.20.30-rc.1+build.5.tar.gz", "a-b2", "10.20.30-rc.1+build.5"},
		{"x-1.0.0-alpha-2.tar.gz", "x", "1.0.0-alpha-2"},
	}
	for _, tt := range tests {
		name, v, err := ParseFileName(tt.file)
		if err != nil {
			t.Errorf("ParseFileName(%q): %v", tt.file, err)
			continue
		}
		if name != tt.name || v.String() != tt.version {
			t.Errorf("ParseFileName(%q) = %q, %q; want %q, %q", tt.file, name, v, tt.name, tt.version)
		}
		if got := FileName(name, v); got != tt.file {
			t.Errorf("FileName(%q, %q) = %q, want %q", name, v, got, tt.file)
		}
	}
}

func TestParseFileNameErrors(t *testing.T) {
	tests := []struct {
		file string
		want error
	}{
		{"chat-1.2.0.tgz", ErrBadName},
		{"chat-1.2.0.tar.gz.sig", ErrBadName},
		{"chat.tar.gz", ErrBadName},
		{"chat-v1.2.0.tar.gz", ErrBadName}, // no '-' before a digit
		{"Chat-1.2.0.tar.gz", ErrBadName},
		{"dir/chat-1.2.0.tar.gz", ErrBadName},
		{`dir\chat-1.2.0.tar.gz`, ErrBadName},
		{"-1.2.0.tar.gz", ErrBadName},
		{"chat-1.2.tar.gz", ErrBadVersion},
		{"chat-01.2.0.tar.gz", ErrBadVersion},
		{"chat-1.2.0-.tar.gz", ErrBadVersion},
		{"chat-1.2.0+.tar.gz", ErrBadVersion},
		{"chat-1.2.0-01.tar.gz", ErrBadVersion},
		{"chat-1.2.0 .tar.gz", ErrBadVersion},
		{"chat-1." + strings.Repeat("1", MaxVersionLen) + ".0.tar.gz", ErrBadVersion},
	}
	for _, tt := range tests {
		_, _, err := ParseFileName(tt.file)
		if !errors.Is(err, tt.want) {
			t.Errorf("ParseFileName(%q) = %v, want %v", tt.file, err, tt.want)
		}
	}
}

// FuzzParseFileName checks that every accepted file name round-trips
// through FileName and names a valid plugin.
func FuzzParseFileName(f *testing.F) {
	for _, s := range []string{"chat-1.2.0.tar.gz", "a-b-1.0.0-rc.1+x.tar.gz", "chat-1.2.tar.gz", "x-0.0.0.tar.gz.sig"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		name, v, err := ParseFileName(file)
		if err != nil {
			return
		}
		if got := FileName(name, v); got != file {
			t.Fatalf("FileName(ParseFileName(%q)) = %q", file, got)
		}
		if ValidName(name) != nil {
			t.Fatalf("ParseFileName(%q) accepted invalid name %q", file, name)
		}
		if _, err := ParseVersion(v.String()); err != nil {
			t.Fatalf("ParseFileName(%q) accepted version %q that does not re-parse: %v", file, v, err)
		}
	})
}
