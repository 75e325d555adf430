package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// unitTemplate is the systemd user unit; %s is the nearby executable.
const unitTemplate = `[Unit]
Description=Nearby node: LAN plugin mesh
Documentation=https://github.com/nearbymesh/nearby
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=%s up --no-tray
Restart=on-failure
RestartSec=2
# Logs go to the journal: journalctl --user -u nearby
Environment=NEARBY_LOG_JSON=0
# SIGTERM stops plugins, says bye to peers and withdraws the mDNS record.
KillMode=mixed
TimeoutStopSec=15

[Install]
WantedBy=default.target
`

func init() {
	register(&command{
		name: "service", args: "print|install", short: "print or install a systemd user unit that runs the node",
		long: `
"install" writes ~/.config/systemd/user/nearby.service (XDG_CONFIG_HOME is
honoured) running this executable; then enable it with
  systemctl --user daemon-reload && systemctl --user enable --now nearby
and read its logs with journalctl --user -u nearby. Settings for the node
go into the config file (see nearby up --help). The unit passes --no-tray:
run "nearby tray" from your desktop session's autostart instead.

Examples:
  nearby service print
  nearby service install
`,
		noState: true,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 || (fs.Arg(0) != "print" && fs.Arg(0) != "install") {
				return usagef("want print or install")
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if exe, err = filepath.EvalSymlinks(exe); err != nil {
				return err
			}
			if strings.ContainsAny(exe, " \t\n\"'\\%") {
				return fmt.Errorf("the executable path %q needs quoting in a unit; move nearby to a plain path such as ~/.local/bin", exe)
			}
			unit := fmt.Sprintf(unitTemplate, exe)
			if fs.Arg(0) == "print" {
				fmt.Fprint(env.Stdout, unit)
				return nil
			}
			dir := os.Getenv("XDG_CONFIG_HOME")
			if dir == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return err
				}
				dir = filepath.Join(home, ".config")
			}
			path := filepath.Join(dir, "systemd", "user", "nearby.service")
			if err := fsutil.WriteFileAtomic(path, []byte(unit), 0o644); err != nil {
				return err
			}
			fmt.Fprintln(env.Stdout, "wrote", path)
			fmt.Fprintln(env.Stderr, "now: systemctl --user daemon-reload && systemctl --user enable --now nearby")
			return nil
		},
	})
}
