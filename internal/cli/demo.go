package cli

import (
	"context"
	"flag"

	"github.com/nearbymesh/nearby/internal/demo"
)

func init() {
	var examples, dir string
	var keep, tourOnly, noTray bool
	register(&command{
		name: "demo", short: "run 3 nodes on a virtual LAN with the example plugins (root)", noState: true,
		long: `
Builds a virtual LAN of three network namespaces (h1, h2, h3; nothing runs
in your own network namespace), starts a node on each, publishes the example
plugins on different hosts and shows discovery, fetching from a peer,
broadcast between a Python and a Go plugin, and an automatic update. Then
it keeps running until Ctrl-C so you can poke at the nodes with the
commands it prints. Needs root (network namespaces), iproute2 and nftables,
and runs from the source tree (it packs examples/, building chat-go with go).

Examples:
  sudo ./bin/nearby demo
  sudo ./bin/nearby demo --tour-only     # exit after the tour
`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&examples, "examples", "examples", "the examples `dir` of the source tree")
			fs.StringVar(&dir, "dir", "", "keep state and logs in `dir` (default: a temporary directory)")
			fs.BoolVar(&keep, "keep", false, "keep the temporary directory at the end")
			fs.BoolVar(&tourOnly, "tour-only", false, "exit after the tour")
			fs.BoolVar(&noTray, "no-tray", false, "do not start a tray icon")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() > 0 {
				return usagef("unexpected argument %q", fs.Arg(0))
			}
			return demo.Run(ctx, demo.Config{Examples: examples, Dir: dir, Keep: keep, TourOnly: tourOnly, Tray: !noTray, Out: env.Stdout})
		},
	})
}
