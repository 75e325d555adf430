package subservice_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/nearbymesh/nearby/subservice"
)

// A plugin's main: connect to the node that started it, greet every node,
// answer each broadcast with a direct message, and offer a menu item.
// (examples/chat-go is the same plugin, complete.)
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	p, err := subservice.Connect(ctx) // reads NEARBY_SOCKET and NEARBY_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	type chat struct {
		Text string `json:"text"`
	}
	p.Broadcast(chat{Text: "hello from " + p.Self().Name})
	p.SetMenu([]subservice.MenuItem{{ID: "hello", Label: "Say hello", Enabled: true}})
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-p.Messages():
			if !ok {
				os.Exit(1) // the node went away; it restarts crashed plugins
			}
			var c chat
			if m.Decode(&c) == nil && m.Broadcast {
				p.Send(m.From.ID, chat{Text: "got " + c.Text})
			}
		case e := <-p.Errors():
			fmt.Println("node says:", e) // e.g. no-subservice for an earlier Send
		case item := <-p.Clicks():
			if item == "hello" {
				p.Broadcast(chat{Text: "hello again"})
			}
		}
	}
}
