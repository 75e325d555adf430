package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
)

func init() {
	var outDir, keyFile string
	var sign bool
	register(&command{
		name: "pack", args: "DIR", short: "make NAME-VERSION.tar.gz (and its signature) from a plugin folder",
		long: `
DIR holds a nearby.json manifest (see docs/ARCHIVES.md) and the plugin's
files. The archive is named from the manifest's name and version. With
--sign, a detached ed25519 signature NAME-VERSION.tar.gz.sig is written
beside it with your publisher key (created on first use). Peers pin that key
on first install and refuse later versions signed by another key.

Examples:
  nearby pack examples/chat-py --sign
  nearby pack ./myplugin -o dist/ --sign && nearby publish dist/myplugin-1.0.0.tar.gz
`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&outDir, "o", ".", "write the archive into `dir`")
			fs.BoolVar(&sign, "sign", false, "sign the archive with your publisher key")
			fs.StringVar(&keyFile, "key", "", "publisher key `file` (default STATE/publisher.key)")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("want one plugin DIR")
			}
			var err error
			var signer ed25519.PrivateKey
			if sign {
				if keyFile == "" {
					keyFile = filepath.Join(env.State, "publisher.key")
				}
				if signer, err = distrib.LoadOrCreatePublisherKey(keyFile); err != nil {
					return err
				}
			}
			path, err := distrib.Pack(fs.Arg(0), outDir, signer)
			if err != nil {
				return err
			}
			info, err := distrib.Inspect(path, distrib.DefaultLimits())
			if err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(info)
			}
			fmt.Fprintln(env.Stdout, path)
			if info.Signer != "" {
				fmt.Fprintf(env.Stderr, "signed by %s\n", info.Signer)
			} else {
				fmt.Fprintln(env.Stderr, "unsigned: peers will refuse to install it; use --sign")
			}
			return nil
		},
	})

	var dist string
	register(&command{
		name: "publish", args: "FILE", short: "place an archive into the node's dist folder (atomically)",
		long: `
Validates FILE (name, manifest, signature) and copies it, with its .sig,
into the running node's dist folder; every peer learns about it within a
second. Without a running node, give --dist.

Examples:
  nearby publish chat-1.2.0.tar.gz
  nearby publish chat-1.2.0.tar.gz --dist /srv/nearby/dist
`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dist, "dist", "", "publish into this dist `folder` instead of the node's")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("want one archive FILE")
			}
			file, err := filepath.Abs(fs.Arg(0))
			if err != nil {
				return err
			}
			if dist == "" {
				err := postResult(ctx, env, "/v1/publish", control.PublishRequest{Path: file})
				if !errors.Is(err, control.ErrNoNode) {
					return err
				}
				return fmt.Errorf("%w; or give --dist DIR to publish without a node", err)
			}
			dest, err := distrib.Publish(file, dist)
			if err != nil {
				return err
			}
			if env.JSON {
				return env.PrintJSON(control.Result{OK: true, Message: "published " + dest})
			}
			fmt.Fprintln(env.Stdout, "published", dest)
			return nil
		},
	})

	register(&command{
		name: "trust", args: "[pin NAME SIGNER | unpin NAME]", short: "show or change the publisher keys pinned per plugin",
		long: `
A plugin fetched from a peer is installed only if its signature verifies
against the key pinned for its name. The key is pinned on first install;
later versions signed by another key are refused. Use this command when a
publisher really changed keys, or to pin a key before the first install.

Examples:
  nearby trust                          # list the pins
  nearby trust pin chat ed25519:AbC...  # pin (or re-pin) chat to this key
  nearby trust unpin chat               # forget the pin; the next install pins again
`,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			c := env.Client()
			args := fs.Args()
			switch {
			case len(args) == 0:
				var pins map[string]string
				if err := c.Get(ctx, "/v1/trust", &pins); err != nil {
					return err
				}
				if env.JSON {
					return env.PrintJSON(pins)
				}
				names := make([]string, 0, len(pins))
				for n := range pins {
					names = append(names, n)
				}
				sort.Strings(names)
				tw := env.Table()
				fmt.Fprintln(tw, "NAME\tSIGNER")
				for _, n := range names {
					fmt.Fprintf(tw, "%s\t%s\n", n, pins[n])
				}
				return tw.Flush()
			case len(args) == 2 && args[0] == "unpin":
				return postResult(ctx, env, "/v1/trust", control.TrustRequest{Name: args[1], Remove: true})
			case len(args) == 3 && args[0] == "pin":
				return postResult(ctx, env, "/v1/trust", control.TrustRequest{Name: args[1], Signer: args[2]})
			}
			return usagef("want no arguments, `pin NAME SIGNER` or `unpin NAME`")
		},
	})
}
