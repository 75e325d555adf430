package cli

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
)

func init() {
	register(&command{
		name: "completion", args: "bash|zsh|fish", short: "print a shell completion script", noState: true,
		long: `
Examples:
  source <(nearby completion bash)
  nearby completion zsh > "${fpath[1]}/_nearby"
  nearby completion fish > ~/.config/fish/completions/nearby.fish
`,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("want bash, zsh or fish")
			}
			names := commandNames()
			switch fs.Arg(0) {
			case "bash":
				fmt.Fprintf(env.Stdout, bashCompletion, strings.Join(names, " "))
			case "zsh":
				fmt.Fprintf(env.Stdout, "#compdef nearby\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion, strings.Join(names, " "))
			case "fish":
				for _, c := range commands {
					fmt.Fprintf(env.Stdout, "complete -c nearby -n __fish_use_subcommand -f -a %s -d %q\n", c.name, c.short)
				}
				fmt.Fprintln(env.Stdout, "complete -c nearby -n '__fish_seen_subcommand_from run fetch stop logs' -f -a '(nearby ls --json 2>/dev/null | string match -r \"\\\"name\\\": \\\"[^\\\"]+\" | string replace -r \".*\\\"\" \"\")'")
			default:
				return usagef("unknown shell %q: want bash, zsh or fish", fs.Arg(0))
			}
			return nil
		},
	})
}

func commandNames() []string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	sort.Strings(names)
	return names
}

// bashCompletion completes command names, and plugin names (from the
// running node) after run/fetch/stop/logs.
const bashCompletion = `_nearby() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
		return
	fi
	case "${COMP_WORDS[1]}" in
	run|fetch|stop|logs)
		local names
		names=$(nearby ls --json 2>/dev/null | sed -n 's/^      "name": "\(.*\)",$/\1/p')
		COMPREPLY=($(compgen -W "$names" -- "$cur"));;
	*)
		COMPREPLY=($(compgen -f -- "$cur"));;
	esac
}
complete -F _nearby nearby
`
