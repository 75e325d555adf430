// Package cli implements the nearby command line. Each command is a small
// function over a Config; data goes to stdout (as a table, or JSON with
// --json), logs and progress to stderr.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/nearbymesh/nearby/internal/config"
	"github.com/nearbymesh/nearby/internal/control"
)

// Version is the program version, set at build time with
// -ldflags "-X github.com/nearbymesh/nearby/internal/cli.Version=...".
var Version = "0.1.0-dev"

// Exit codes.
const (
	ExitOK       = 0
	ExitError    = 1 // the command failed
	ExitUsage    = 2 // bad flags or arguments
	ExitNoNode   = 3 // no node runs for this state directory
	ExitNotFound = 4 // the named thing does not exist
)

// Env is what a command runs with.
type Env struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	// State is the state directory (--state, $NEARBY_STATE, XDG).
	State string
	// JSON asks for machine-readable output.
	JSON bool
	// Log is the logger for this command.
	Log *slog.Logger
}

// Client returns a control API client for the node of e.State.
func (e *Env) Client() *control.Client { return control.NewClient(e.State) }

// PrintJSON writes v as indented JSON to stdout.
func (e *Env) PrintJSON(v any) error {
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Table returns a tab writer on stdout; call Flush when done.
func (e *Env) Table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
}

type command struct {
	name    string
	args    string // usage of positional arguments
	short   string
	long    string // more help; examples
	flags   func(fs *flag.FlagSet)
	run     func(ctx context.Context, env *Env, fs *flag.FlagSet) error
	noState bool // does not need a node
}

// usageError marks an error as bad usage (exit 2).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

var commands []*command

func register(c *command) { commands = append(commands, c) }

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Run runs the command line args (without the program name) and returns the
// exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1 {
		mainUsage(stdout)
		return ExitOK
	}
	if args[0] == "help" {
		args = []string{args[1], "--help"}
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	// `nearby --state DIR peers` works like `nearby peers --state DIR`.
	if strings.HasPrefix(args[0], "-") {
		for i, a := range args {
			if lookup(a) != nil && (i == 0 || !strings.HasPrefix(args[i-1], "-") || strings.Contains(args[i-1], "=") || isBoolFlag(args[i-1])) {
				args = append(append([]string{a}, args[:i]...), args[i+1:]...)
				break
			}
		}
	}
	cmd := lookup(args[0])
	if cmd == nil {
		fmt.Fprintf(stderr, "nearby: unknown command %q\n", args[0])
		if s := suggest(args[0]); s != "" {
			fmt.Fprintf(stderr, "Did you mean `nearby %s`?\n", s)
		}
		fmt.Fprintln(stderr, "Run `nearby help` for the list of commands.")
		return ExitUsage
	}
	env := &Env{Stdout: stdout, Stderr: stderr, Stdin: stdin}
	fs := flag.NewFlagSet("nearby "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", "", "state `dir` of the node (default $NEARBY_STATE, else $XDG_STATE_HOME/nearby)")
	fs.BoolVar(&env.JSON, "json", false, "print machine-readable JSON on stdout")
	logLevel := fs.String("log-level", envOr("NEARBY_LOG_LEVEL", "info"), "log `level`: debug, info, warn, error")
	logJSON := fs.Bool("log-json", os.Getenv("NEARBY_LOG_JSON") == "1", "write logs as JSON lines")
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() { commandUsage(stdout, cmd, fs) }
	if err := fs.Parse(interleave(fs, args[1:])); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "Run `nearby %s --help` for usage.\n", cmd.name)
		return ExitUsage
	}
	env.State = config.StateDir(*state)
	env.Log = newLogger(stderr, *logLevel, *logJSON)
	if stderr == io.Writer(os.Stderr) {
		// The real program (not a test calling Main with its own
		// writers): libraries' standard-log lines join the structured log.
		routeStdLog(env.Log)
	}
	err := cmd.run(ctx, env, fs)
	if err == nil {
		return ExitOK
	}
	return report(env, cmd, err)
}

func report(env *Env, cmd *command, err error) int {
	var ue usageError
	var ae *control.APIError
	code := ExitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "nearby %s: %s\nRun `nearby %s --help` for usage.\n", cmd.name, ue.msg, cmd.name)
		return ExitUsage
	case errors.Is(err, control.ErrNoNode):
		code = ExitNoNode
	case errors.As(err, &ae) && ae.Status == 404:
		code = ExitNotFound
	case errors.Is(err, context.Canceled):
		return 130
	}
	if env.JSON {
		e := control.Error{Error: err.Error()}
		if ae != nil {
			e = ae.Body
		}
		json.NewEncoder(env.Stderr).Encode(e)
	} else {
		fmt.Fprintf(env.Stderr, "nearby %s: %v\n", cmd.name, err)
	}
	return code
}

// interleave lets flags follow positional arguments (`nearby run chat
// --json`), which the flag package alone does not allow.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(append(flags, "--"), pos...)
}

// isBoolFlag reports whether a leading global flag takes no value.
func isBoolFlag(a string) bool {
	switch strings.TrimLeft(a, "-") {
	case "json", "log-json":
		return true
	}
	return false
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newLogger(w io.Writer, level string, asJSON bool) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if asJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `Nearby turns the machines on a LAN into one plugin mesh.

Usage: nearby COMMAND [flags] [args]

Commands:
`)
	cs := append([]*command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range cs {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
	}
	tw.Flush()
	fmt.Fprint(w, `
Every command takes --state DIR (or NEARBY_STATE) to pick the node, and
--json where it prints data. Run 'nearby COMMAND --help' for details.

Start here:
  nearby up                  run a node on this machine
  nearby ls                  what the mesh offers
  nearby run chat            fetch the newest chat plugin and start it
`)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: nearby %s [flags] %s\n\n%s\n", c.name, c.args, c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	fmt.Fprintln(w, "\nFlags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func suggest(s string) string {
	best, bestD := "", 3
	for _, c := range commands {
		if d := editDistance(s, c.name); d < bestD {
			best, bestD = c.name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
