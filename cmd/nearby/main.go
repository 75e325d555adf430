// Command nearby runs a Nearby node and talks to it. See `nearby help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nearbymesh/nearby/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
