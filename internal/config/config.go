// Package config finds Nearby's directories and reads its config file.
//
// The state directory (node key, mesh key, installed plugins, logs, the
// control socket) is, in order: --state, $NEARBY_STATE,
// $XDG_STATE_HOME/nearby, ~/.local/state/nearby. The config file is
// $XDG_CONFIG_HOME/nearby/config (default ~/.config/nearby/config): lines of
// `key = value` whose keys are the long flag names of `nearby up`
// (name, listen, dist, peer, mesh-key-file, dist-http, no-discovery, no-tray,
// no-restore, log-level).
// Flags given on the command line win over the file.
package config

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvState names the environment variable that selects the state directory.
const EnvState = "NEARBY_STATE"

// StateDir returns the state directory: flag if set, else $NEARBY_STATE,
// else the XDG state directory.
func StateDir(flag string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv(EnvState); v != "" {
		return v
	}
	if v := os.Getenv("XDG_STATE_HOME"); v != "" {
		return filepath.Join(v, "nearby")
	}
	return filepath.Join(home(), ".local", "state", "nearby")
}

// ConfigFile returns the path of the config file.
func ConfigFile() string {
	if v := os.Getenv("NEARBY_CONFIG"); v != "" {
		return v
	}
	if v := os.Getenv("XDG_CONFIG_HOME"); v != "" {
		return filepath.Join(v, "nearby", "config")
	}
	return filepath.Join(home(), ".config", "nearby", "config")
}

func home() string {
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return h
	}
	return "/"
}

// Setting is one `key = value` line of the config file.
type Setting struct {
	Key, Value string
	Line       int
}

// ReadFile parses a config file. A missing file is not an error: it yields
// no settings. Blank lines and lines starting with '#' are ignored.
func ReadFile(path string) ([]Setting, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	var out []Setting
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("config: %s:%d: want `key = value`, got %q", path, n, line)
		}
		out = append(out, Setting{Key: k, Value: strings.Trim(v, `"`), Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return out, nil
}
