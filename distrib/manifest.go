package distrib

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// ManifestFile is the name of the manifest at the root of every archive.
	ManifestFile = "nearby.json"
	// MaxManifestBytes caps the size of nearby.json.
	MaxManifestBytes = 64 << 10
	// ProtocolVersion is the plugin protocol version this build speaks.
	// A manifest asking for a higher one is refused.
	ProtocolVersion = 1

	// ModeLocal runs the plugin on every node that opens it (the default).
	ModeLocal = "local"
	// ModeHosted runs the plugin on its publisher's node only; other nodes
	// open sessions on it.
	ModeHosted = "hosted"

	maxArgs        = 64
	maxArgBytes    = 4096
	maxLabel       = 64
	maxDescription = 1024
	maxOutputBuf   = 64 << 20
)

// knownGOOS lists the GOOS values accepted as Manifest.Commands keys, so a
// typo such as "window" is caught at pack time rather than never matching.
var knownGOOS = []string{
	"aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "js",
	"linux", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows",
}

// Manifest is the content of nearby.json at the root of an archive.
// The JSON field names are given by the struct tags; see docs/ARCHIVES.md.
type Manifest struct {
	// Name is the plugin name; it must equal the NAME in the file name.
	Name string `json:"name"`
	// Version is the strict semver version; it must equal the VERSION in
	// the file name.
	Version string `json:"version"`
	// Description is one or a few sentences for people (optional).
	Description string `json:"description,omitempty"`
	// Command is the argv that starts the plugin. argv[0] is either a path
	// relative to the install directory, with '/' separators ("bin/chat",
	// "./run.sh"), or a bare program name looked up in PATH ("python3")
	// when no such file exists in the install directory. See ResolveArgv.
	Command []string `json:"command"`
	// Commands overrides Command per GOOS, e.g. {"windows": ["chat.exe"]}.
	Commands map[string][]string `json:"commands,omitempty"`
	// Mode is ModeLocal (the default when empty) or ModeHosted.
	Mode string `json:"mode"`
	// Protocol is the plugin protocol version, currently 1 (the default
	// when zero).
	Protocol int `json:"protocol"`
	// Label is the menu label (optional; the name is shown otherwise).
	Label string `json:"label,omitempty"`
	// Subservice is the name the plugin speaks under on the mesh: messages
	// go to, and come from, plugins with the same subservice on other
	// nodes. Optional; it defaults to Name. Two implementations of one
	// protocol (say a Go and a Python chat) share a subservice.
	Subservice string `json:"subservice,omitempty"`
	// Sessions tunes hosted mode; it is only allowed with ModeHosted.
	Sessions *SessionLimits `json:"sessions,omitempty"`
}

// SessionLimits tunes a hosted plugin's sessions. Zero values mean the
// node's defaults.
type SessionLimits struct {
	// MaxSessions caps concurrent sessions (0: node default).
	MaxSessions int `json:"max_sessions,omitempty"`
	// IdleTimeout ends a session idle this long, as a Go duration such as
	// "10m" ("" or "0s": node default).
	IdleTimeout string `json:"idle_timeout,omitempty"`
	// OutputBuffer is the bytes of session output buffered for a slow
	// presenter (0: node default).
	OutputBuffer int `json:"output_buffer,omitempty"`
}

// SubserviceName returns the subservice the plugin speaks under: Subservice,
// or Name when that is empty.
func (m *Manifest) SubserviceName() string {
	if m.Subservice != "" {
		return m.Subservice
	}
	return m.Name
}

// Idle returns IdleTimeout parsed; 0 if unset. Validate has checked it.
func (s *SessionLimits) Idle() time.Duration {
	if s == nil || s.IdleTimeout == "" {
		return 0
	}
	d, _ := time.ParseDuration(s.IdleTimeout)
	return d
}

var (
	manifestKeys = []string{"name", "version", "description", "command", "commands", "mode", "protocol", "label", "subservice", "sessions"}
	sessionKeys  = []string{"max_sessions", "idle_timeout", "output_buffer"}
)

// ParseManifest decodes and validates nearby.json. It is strict: the input
// must be at most MaxManifestBytes of UTF-8 JSON holding exactly one object,
// with no unknown, duplicate or differently-cased keys. Defaults are filled
// in (Mode "local", Protocol 1), so the result re-encodes canonically.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrBadManifest, ManifestFile, len(b), MaxManifestBytes)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: %s is not valid UTF-8", ErrBadManifest, ManifestFile)
	}
	if err := checkJSONKeys(b); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadManifest, ManifestFile, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadManifest, ManifestFile, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: %s: unexpected data after the JSON object", ErrBadManifest, ManifestFile)
	}
	if m.Mode == "" {
		m.Mode = ModeLocal
	}
	if m.Protocol == 0 {
		m.Protocol = ProtocolVersion
	}
	if len(m.Commands) == 0 {
		m.Commands = nil
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkJSONKeys walks b's token stream and rejects duplicate keys anywhere,
// and keys of the manifest and its "sessions" object that are not spelled
// exactly as documented (encoding/json would match them case-insensitively).
func checkJSONKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var walk func(allowed []string, depth int) error
	walk = func(allowed []string, depth int) error {
		if depth > 8 {
			return errors.New("nested too deeply")
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if depth == 0 && tok != json.Delim('{') {
			return errors.New("want a JSON object")
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k := kt.(string)
				if seen[k] {
					return fmt.Errorf("duplicate key %q", k)
				}
				seen[k] = true
				if allowed != nil && !slices.Contains(allowed, k) {
					return fmt.Errorf("unknown key %q (known: %s)", k, strings.Join(allowed, ", "))
				}
				var sub []string
				if depth == 0 && k == "sessions" {
					sub = sessionKeys
				}
				if err := walk(sub, depth+1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(nil, depth+1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	return walk(manifestKeys, 0)
}

// Validate checks every field; see docs/ARCHIVES.md for the rules. It does
// not fill in defaults (ParseManifest does): an empty Mode counts as
// "local" and a zero Protocol as 1.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadManifest, ManifestFile, fmt.Sprintf(format, args...))
	}
	if err := ValidName(m.Name); err != nil {
		return bad("name: %v", err)
	}
	if m.Subservice != "" {
		if err := ValidName(m.Subservice); err != nil {
			return bad("subservice: %v", err)
		}
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return bad("version: %v", err)
	}
	if err := checkText(m.Description, maxDescription, true); err != nil {
		return bad("description: %v", err)
	}
	if err := checkText(m.Label, maxLabel, false); err != nil {
		return bad("label: %v", err)
	}
	if err := checkArgv(m.Command); err != nil {
		return bad("command: %v", err)
	}
	for goos, argv := range m.Commands {
		if !slices.Contains(knownGOOS, goos) {
			return bad("commands: %q is not a GOOS (one of %s)", goos, strings.Join(knownGOOS, ", "))
		}
		if err := checkArgv(argv); err != nil {
			return bad("commands[%s]: %v", goos, err)
		}
	}
	switch m.Mode {
	case "", ModeLocal, ModeHosted:
	default:
		return bad("mode %q: want %q or %q", m.Mode, ModeLocal, ModeHosted)
	}
	switch {
	case m.Protocol < 0:
		return bad("protocol %d: want %d", m.Protocol, ProtocolVersion)
	case m.Protocol > ProtocolVersion:
		return bad("protocol %d is newer than this node's %d: upgrade nearby to run %s", m.Protocol, ProtocolVersion, m.Name)
	}
	if s := m.Sessions; s != nil {
		if m.Mode != ModeHosted {
			return bad("sessions is only allowed with mode %q", ModeHosted)
		}
		if s.MaxSessions < 0 {
			return bad("sessions.max_sessions %d: want >= 0", s.MaxSessions)
		}
		if s.OutputBuffer < 0 || s.OutputBuffer > maxOutputBuf {
			return bad("sessions.output_buffer %d: want 0..%d", s.OutputBuffer, maxOutputBuf)
		}
		if s.IdleTimeout != "" {
			d, err := time.ParseDuration(s.IdleTimeout)
			if err != nil || d < 0 {
				return bad("sessions.idle_timeout %q: want a duration such as \"10m\"", s.IdleTimeout)
			}
		}
	}
	return nil
}

func checkText(s string, max int, multiline bool) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) {
			return fmt.Errorf("control character %U", r)
		}
	}
	return nil
}

func checkArgv(argv []string) error {
	if len(argv) == 0 {
		return errors.New("empty; want the program and its arguments, e.g. [\"bin/chat\"]")
	}
	if len(argv) > maxArgs {
		return fmt.Errorf("more than %d arguments", maxArgs)
	}
	for i, a := range argv {
		if len(a) > maxArgBytes {
			return fmt.Errorf("argument %d is longer than %d bytes", i, maxArgBytes)
		}
		if strings.IndexByte(a, 0) >= 0 || !utf8.ValidString(a) {
			return fmt.Errorf("argument %d has a NUL byte or invalid UTF-8", i)
		}
	}
	p := argv[0]
	switch {
	case p == "":
		return errors.New("program (argv[0]) is empty")
	case strings.HasPrefix(p, "/") || strings.Contains(p, `\`) || (len(p) >= 2 && p[1] == ':'):
		return fmt.Errorf("program %q must be relative to the install directory, with '/' separators", p)
	}
	rel := strings.TrimPrefix(p, "./")
	if rel == "" || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("program %q must be a clean path inside the install directory", p)
	}
	return nil
}

// Argv returns a copy of the command for goos: Commands[goos] if present,
// else Command.
func (m *Manifest) Argv(goos string) []string {
	if c, ok := m.Commands[goos]; ok {
		return slices.Clone(c)
	}
	return slices.Clone(m.Command)
}

// ResolveArgv returns the command for goos with argv[0] made absolute:
// a path containing '/' is taken inside dir (the install directory); a bare
// name is taken from dir if such a regular file exists there, else looked
// up in PATH (an interpreter such as "python3").
func (m *Manifest) ResolveArgv(dir, goos string) ([]string, error) {
	argv := m.Argv(goos)
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: %s has no command", ErrBadManifest, m.Name)
	}
	p := argv[0]
	if strings.Contains(p, "/") {
		argv[0] = filepath.Join(dir, filepath.FromSlash(p))
		return argv, nil
	}
	if fi, err := os.Stat(filepath.Join(dir, p)); err == nil && fi.Mode().IsRegular() {
		argv[0] = filepath.Join(dir, p)
		return argv, nil
	}
	lp, err := exec.LookPath(p)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: program %q is neither in %s nor in PATH: %w", m.Name, p, dir, err)
	}
	argv[0] = lp
	return argv, nil
}
