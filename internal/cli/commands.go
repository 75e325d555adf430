package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/discovery"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/mesh"
)

func init() {
	register(&command{
		name: "version", short: "print the version", noState: true,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if env.JSON {
				return env.PrintJSON(map[string]string{"version": Version})
			}
			fmt.Fprintln(env.Stdout, "nearby", Version)
			return nil
		},
	})

	register(&command{
		name: "key", args: "new", short: "make a new mesh key", noState: true,
		long: `
Prints a fresh mesh key. Every node of one mesh needs the same key; nodes
with another key never connect (and are not even dialled).

Examples:
  nearby key new > mesh.key && chmod 600 mesh.key
  nearby up --mesh-key-file mesh.key
  NEARBY_MESH_KEY="$(cat mesh.key)" nearby up
`,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 || fs.Arg(0) != "new" {
				return usagef("want `nearby key new`")
			}
			k, err := mesh.NewKey()
			if err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(map[string]string{"key": k.String(), "mesh_id": k.MeshID()})
			}
			fmt.Fprintln(env.Stdout, k.String())
			return nil
		},
	})

	var timeout time.Duration
	var all bool
	register(&command{
		name: "discover", short: "list the Nearby nodes on the LAN (one-shot mDNS browse)", noState: true,
		long: `
Browses _nearby._tcp for a while and lists every node that answered, like
avahi-browse for Nearby. It does not need a running node. Without --all it
shows only nodes of this machine's mesh (the key from NEARBY_MESH_KEY or
the state directory), when one is known.

Examples:
  nearby discover
  nearby discover --timeout 3s --json | jq '.[].name'
`,
		flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&timeout, "timeout", 2*time.Second, "how long to listen")
			fs.BoolVar(&all, "all", false, "list nodes of every mesh")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			meshID := ""
			if !all {
				if k, err := existingMeshKey(env.State); err == nil {
					meshID = k.MeshID()
				}
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			hints, err := discovery.Browse(ctx, discovery.BrowseConfig{MeshID: meshID, Logger: env.Log})
			if err != nil {
				return err
			}
			out := []discovered{}
			for _, h := range hints {
				d := discovered{Name: h.Record.Name, ID: h.Record.NodeID, Instance: h.Instance, Port: h.Port,
					Mesh: h.Record.MeshID, Proto: h.Record.Proto, Digest: h.Record.Digest, More: h.Record.More,
					Addrs: []string{}, Subservices: map[string]string{}}
				for _, a := range h.Addrs {
					d.Addrs = append(d.Addrs, a.String())
				}
				for _, s := range h.Record.Subservices {
					d.Subservices[s.Name] = s.Version
				}
				out = append(out, d)
			}
			if env.JSON {
				return env.PrintJSON(out)
			}
			tw := env.Table()
			fmt.Fprintln(tw, "NAME\tID\tADDRESSES\tPORT\tSUBSERVICES")
			for _, d := range out {
				var subs []string
				for k, v := range d.Subservices {
					subs = append(subs, k+"@"+v)
				}
				if d.More > 0 {
					subs = append(subs, fmt.Sprintf("(+%d)", d.More))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", d.Name, d.ID[:min(8, len(d.ID))], strings.Join(d.Addrs, ","), d.Port, strings.Join(subs, " "))
			}
			tw.Flush()
			if len(out) == 0 {
				fmt.Fprintln(env.Stderr, "no nodes answered; `nearby doctor` checks what usually breaks discovery")
			}
			return nil
		},
	})

	register(&command{
		name: "status", short: "show this node's status",
		long: "Examples:\n  nearby status\n  nearby status --json | jq .peers",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			var st control.Status
			if err := env.Client().Get(ctx, "/v1/status", &st); err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(st)
			}
			tw := env.Table()
			fmt.Fprintf(tw, "node\t%s (%s)\n", st.Node.Name, st.Node.ID)
			fmt.Fprintf(tw, "mesh\t%s\n", st.MeshID)
			fmt.Fprintf(tw, "listen\t%s\n", st.Listen)
			fmt.Fprintf(tw, "peers\t%d\n", st.Peers)
			fmt.Fprintf(tw, "plugins running\t%d\n", st.Plugins)
			fmt.Fprintf(tw, "dist\t%s\n", st.DistDir)
			fmt.Fprintf(tw, "state\t%s\n", st.StateDir)
			fmt.Fprintf(tw, "up since\t%s\n", st.Started.Format(time.RFC3339))
			tw.Flush()
			return nil
		},
	})

	register(&command{
		name: "peers", short: "list the connected peers",
		long: "Examples:\n  nearby peers\n  nearby peers --json | jq -r '.[].name'",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			var ps []control.Peer
			if err := env.Client().Get(ctx, "/v1/peers", &ps); err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(ps)
			}
			tw := env.Table()
			fmt.Fprintln(tw, "NAME\tID\tADDR\tRTT\tSUBSERVICES\tSINCE")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fms\t%d\t%s\n", p.Name, p.ID[:8], p.Addr, p.RTTMillis, p.Subservices, p.Since.Format(time.TimeOnly))
			}
			tw.Flush()
			return nil
		},
	})

	var pre bool
	register(&command{
		name: "ls", short: "list every subservice on the mesh, with the newest version and where it is",
		long: `
Examples:
  nearby ls
  nearby ls --json | jq '.subservices[] | {name, newest}'
  nearby ls --pre          # include prereleases
`,
		flags: func(fs *flag.FlagSet) { fs.BoolVar(&pre, "pre", false, "consider prerelease versions") },
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			var l control.Listing
			path := "/v1/ls"
			if pre {
				path += "?pre=1"
			}
			if err := env.Client().Get(ctx, path, &l); err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(l)
			}
			tw := env.Table()
			fmt.Fprintln(tw, "NAME\tNEWEST\tINSTALLED\tRUNNING\tWHERE")
			for _, s := range l.Subservices {
				var where []string
				for _, o := range s.Offers {
					w := o.NodeName + "@" + o.Version
					if o.Local {
						w = "local@" + o.Version
					}
					where = append(where, w)
				}
				inst := dash(s.Installed)
				if s.UpdateAvailable {
					inst += " (update available)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Newest, inst, dash(s.Running), strings.Join(where, " "))
			}
			tw.Flush()
			for _, inv := range l.Invalid {
				fmt.Fprintf(env.Stderr, "not served: %s: %s\n", inv.File, inv.Error)
			}
			return nil
		},
	})

	register(&command{
		name: "ps", short: "list the plugins this node supervises",
		long: "Examples:\n  nearby ps\n  nearby ps --json",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			var ps []control.Plugin
			if err := env.Client().Get(ctx, "/v1/ps", &ps); err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(ps)
			}
			tw := env.Table()
			fmt.Fprintln(tw, "NAME\tVERSION\tSTATE\tPID\tRESTARTS\tLAST EXIT")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", p.Name, p.Version, p.State, p.PID, p.Restarts, dash(p.LastExit))
			}
			tw.Flush()
			return nil
		},
	})

	for _, verb := range []string{"fetch", "run"} {
		verb := verb
		var pre, downgrade bool
		short := "download and install the newest version of a plugin from the mesh"
		long := `
Finds the newest version of NAME anywhere on the mesh (semver; prereleases
only with --pre), downloads it from a peer that has it, verifies its hash and
signature, and installs it atomically (the previous version is kept).
NAME@VERSION picks a version (or a semver constraint such as "^1.2").

Examples:
  nearby fetch chat
  nearby fetch chat@1.2.0 --downgrade
`
		if verb == "run" {
			short = "start a plugin, fetching a newer version from the mesh first"
			long = `
Like fetch, then starts the plugin under this node's supervisor. If the
update fails, the installed version is started instead and the failure is
reported.

Examples:
  nearby run chat
  nearby run chat@1.2.0
`
		}
		register(&command{
			name: verb, args: "NAME[@VERSION]", short: short, long: long,
			flags: func(fs *flag.FlagSet) {
				fs.BoolVar(&pre, "pre", false, "consider prerelease versions")
				fs.BoolVar(&downgrade, "downgrade", false, "allow installing a lower version than the installed one")
			},
			run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
				if fs.NArg() != 1 {
					return usagef("want one NAME[@VERSION]")
				}
				name, version, _ := strings.Cut(fs.Arg(0), "@")
				req := control.FetchRequest{Name: name, Version: version, Pre: pre, Downgrade: downgrade}
				return streamAction(ctx, env, "/v1/"+verb, req)
			},
		})
	}

	register(&command{
		name: "stop", args: "NAME", short: "stop a running plugin",
		long: "Sends SIGTERM to the plugin's process group, then SIGKILL after a grace period.\n\nExample:\n  nearby stop chat",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("want one NAME")
			}
			return postResult(ctx, env, "/v1/stop", control.NameRequest{Name: fs.Arg(0)})
		},
	})

	var tail int
	register(&command{
		name: "logs", args: "NAME", short: "print a plugin's captured output",
		long:  "Example:\n  nearby logs chat --tail 4096",
		flags: func(fs *flag.FlagSet) { fs.IntVar(&tail, "tail", 0, "print only the last `bytes`") },
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("want one NAME")
			}
			path := "/v1/logs/" + url.PathEscape(fs.Arg(0))
			if tail > 0 {
				path += fmt.Sprintf("?tail=%d", tail)
			}
			b, err := env.Client().GetText(ctx, path)
			if err != nil {
				return err
			}
			env.Stdout.Write(b)
			return nil
		},
	})

	register(&command{
		name: "send", args: "NODE SUBSERVICE DATA", short: "send a message to one subservice on one node (debugging)",
		long: "NODE is a node id, an id prefix (8+ characters) or a node name.\n\nExample:\n  nearby send desk chat '{\"text\":\"hi\"}'",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 3 {
				return usagef("want NODE SUBSERVICE DATA")
			}
			return postResult(ctx, env, "/v1/send", control.SendRequest{To: fs.Arg(0), Subservice: fs.Arg(1), Data: []byte(fs.Arg(2))})
		},
	})

	register(&command{
		name: "broadcast", args: "SUBSERVICE DATA", short: "send a message to a subservice on every peer (debugging)",
		long: "Example:\n  nearby broadcast chat '{\"text\":\"hello all\"}'",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 2 {
				return usagef("want SUBSERVICE DATA")
			}
			return postResult(ctx, env, "/v1/broadcast", control.SendRequest{Subservice: fs.Arg(0), Data: []byte(fs.Arg(1))})
		},
	})

	register(&command{
		name: "events", short: "follow the node's event stream (peers, catalogs, plugins, progress)",
		long: "Prints one JSON object per line until interrupted.\n\nExample:\n  nearby events | jq -c 'select(.type==\"peer-up\")'",
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			return env.Client().Stream(ctx, "/v1/events", nil, func(e control.Event) error {
				if e.Type == "tick" {
					return nil
				}
				return printEvent(env, e)
			})
		},
	})
}

type discovered struct {
	Name        string            `json:"name"`
	ID          string            `json:"id"`
	Instance    string            `json:"instance"`
	Addrs       []string          `json:"addrs"`
	Port        int               `json:"port"`
	Mesh        string            `json:"mesh_id"`
	Proto       int               `json:"protocol"`
	Digest      string            `json:"digest"`
	More        int               `json:"more,omitempty"`
	Subservices map[string]string `json:"subservices"`
}

func existingMeshKey(state string) (mesh.Key, error) {
	if v := os.Getenv("NEARBY_MESH_KEY"); v != "" {
		return mesh.ParseKey(v)
	}
	return mesh.LoadKeyFile(filepath.Join(state, "mesh.key"))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func postResult(ctx context.Context, env *Env, path string, body any) error {
	var res control.Result
	if err := env.Client().Post(ctx, path, body, &res); err != nil {
		return err
	}
	if env.JSON {
		return env.PrintJSON(res)
	}
	if res.Message != "" {
		fmt.Fprintln(env.Stdout, res.Message)
	}
	return nil
}

func printEvent(env *Env, e control.Event) error {
	return env.PrintJSONLine(e)
}
