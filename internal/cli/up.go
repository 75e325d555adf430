package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nearbymesh/nearby/internal/config"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/fsutil"
	"github.com/nearbymesh/nearby/internal/node"
	"github.com/nearbymesh/nearby/mesh"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func init() {
	var (
		name, listen, dist, keyFile, distHTTP string
		peers                                 multiFlag
		noDiscovery, noTray, noRestore        bool
	)
	register(&command{
		name:  "up",
		short: "run a node on this machine (until Ctrl-C)",
		long: `
Starts a node: it keeps its identity in the state directory, advertises
itself over mDNS (_nearby._tcp), connects to the peers of its mesh, serves its
dist folder and supervises plugins. SIGINT/SIGTERM stop it cleanly: plugins
are stopped, peers are told, the advertisement is withdrawn.

Plugins started with "nearby run" (or from the tray) and not stopped with
"nearby stop" are started again, in their installed version, when the node
next comes up (STATE/running.json); --no-restore skips that.

The mesh key comes from --mesh-key-file, else $NEARBY_MESH_KEY, else the
state directory's mesh.key, which is created on the first run. Every machine
of one mesh needs the same key.

Settings can also live in the config file (` + config.ConfigFile() + `),
one "flag = value" per line; flags on the command line win.

Examples:
  nearby up
  nearby up --name desk --listen :7946 --dist ~/nearby-dist
  nearby up --peer 192.168.2.10:7946 --mesh-key-file /etc/nearby/mesh.key
`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "display `name` of this node (default: host name)")
			fs.StringVar(&listen, "listen", ":0", "mesh `address` to listen on and advertise")
			fs.StringVar(&dist, "dist", "", "dist `folder` to serve (default: STATE/dist)")
			fs.StringVar(&keyFile, "mesh-key-file", "", "read the mesh key from `file`")
			fs.Var(&peers, "peer", "static peer `host:port`, dialled without mDNS (repeatable)")
			fs.StringVar(&distHTTP, "dist-http", "", "also serve the dist folder read-only over plain HTTP on `addr`")
			fs.BoolVar(&noDiscovery, "no-discovery", false, "do not use mDNS (static peers only)")
			fs.BoolVar(&noTray, "no-tray", false, "do not start the tray icon")
			fs.BoolVar(&noRestore, "no-restore", false, "do not restart the plugins that ran when the node last stopped")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() > 0 {
				return usagef("unexpected argument %q", fs.Arg(0))
			}
			if err := applyConfigFile(fs); err != nil {
				return err
			}
			key, created, err := loadMeshKey(env.State, keyFile)
			if err != nil {
				return err
			}
			if created {
				env.Log.Info("created a new mesh key; to add another machine to this mesh, copy it there",
					"file", filepath.Join(env.State, "mesh.key"),
					"then", "nearby up --mesh-key-file FILE (or NEARBY_MESH_KEY=...)")
			}
			cfg := node.Config{
				StateDir: env.State, DistDir: dist, Name: name, Listen: listen, Key: key,
				StaticPeers: peers, DistHTTP: distHTTP, NoDiscovery: noDiscovery, NoRestore: noRestore,
				Version: Version, Logger: env.Log,
				Ready: func(st control.Status) {
					if env.JSON {
						env.PrintJSON(st)
					}
				},
			}
			cfg.Ready = StartTray(ctx, env, noTray, cfg.Ready)
			return node.Run(ctx, cfg)
		},
	})
}

// applyConfigFile sets every flag named in the config file that was not
// given on the command line.
func applyConfigFile(fs *flag.FlagSet) error {
	path := config.ConfigFile()
	settings, err := config.ReadFile(path)
	if err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range settings {
		f := fs.Lookup(s.Key)
		if f == nil || s.Key == "state" || s.Key == "json" {
			return fmt.Errorf("%s:%d: unknown setting %q (settings are the long flags of `nearby up`)", path, s.Line, s.Key)
		}
		if given[s.Key] && s.Key != "peer" {
			continue
		}
		if err := f.Value.Set(s.Value); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, s.Line, s.Key, err)
		}
	}
	return nil
}

// loadMeshKey finds the mesh key: a file named by flag, $NEARBY_MESH_KEY, or
// STATE/mesh.key (created if missing).
func loadMeshKey(state, file string) (key mesh.Key, created bool, err error) {
	if file != "" {
		key, err = mesh.LoadKeyFile(file)
		return key, false, err
	}
	if v := os.Getenv("NEARBY_MESH_KEY"); v != "" {
		key, err = mesh.ParseKey(v)
		if err != nil {
			return key, false, fmt.Errorf("NEARBY_MESH_KEY: %w", err)
		}
		return key, false, nil
	}
	path := filepath.Join(state, "mesh.key")
	key, err = mesh.LoadKeyFile(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return key, false, err
	}
	if key, err = mesh.NewKey(); err != nil {
		return key, false, err
	}
	if err := fsutil.WriteFileAtomic(path, []byte(key.String()+"\n"), 0o600); err != nil {
		return key, false, fmt.Errorf("save mesh key: %w", err)
	}
	return key, true, nil
}
