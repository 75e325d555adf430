// Command nearby-tray shows a Nearby node's menu in the desktop tray: the
// subservices of the whole mesh (pick one to run it), the running plugins
// with their own menu items, and the peers. It talks only to the node's
// control socket and runs in a process of its own; `nearby up` starts it
// when there is a desktop session, `nearby tray` runs it by hand.
//
// Usage: nearby-tray [--state DIR] [--log-level LEVEL]
//
// Exit status: 0 after Quit or a signal, 1 on error, 2 for bad flags, 3
// when there is no desktop session bus to show an icon on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nearbymesh/nearby/internal/config"
	"github.com/nearbymesh/nearby/tray"
	"github.com/nearbymesh/nearby/tray/desktop"
)

// ExitNoSessionBus is the exit status when there is no desktop session bus.
const ExitNoSessionBus = 3

func main() {
	fs := flag.NewFlagSet("nearby-tray", flag.ContinueOnError)
	state := fs.String("state", "", "state `dir` of the node (default $NEARBY_STATE, else $XDG_STATE_HOME/nearby)")
	level := fs.String("log-level", envOr("NEARBY_LOG_LEVEL", "info"), "log `level`: debug, info, warn, error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "nearby-tray: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "nearby-tray: bad --log-level %q (want debug, info, warn or error)\n", *level)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("component", "tray")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	dir := config.StateDir(*state)
	logger.Info("tray starting", "state", dir, "pid", os.Getpid())
	err := desktop.Run(ctx, tray.Config{StateDir: dir, Logger: logger})
	stop()
	switch {
	case err == nil || errors.Is(err, context.Canceled):
		logger.Info("tray stopped")
	case errors.Is(err, tray.ErrNoSessionBus):
		fmt.Fprintf(os.Stderr, "nearby-tray: %v\n", err)
		os.Exit(ExitNoSessionBus)
	default:
		fmt.Fprintf(os.Stderr, "nearby-tray: %v\n", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
