// Command chat-go is an example Nearby plugin: a LAN chat and echo.
//
// It greets every node with a broadcast when it starts, prints every
// message it receives to stdout (the node keeps it in the plugin's log),
// answers each broadcast with a direct message to its sender, and offers a
// "Say hello" tray item that broadcasts the greeting again. It exits when
// the node closes its connection, and on SIGTERM.
//
// Build it into this folder before packing: ./build.sh (or
// `go build -o chat-go .`).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/nearbymesh/nearby/subservice"
)

// Chat is what chat-go sends: the same shape as chat-py's messages.
type Chat struct {
	Text string `json:"text"`
	// Reply marks an automatic answer, which is never answered again.
	Reply bool `json:"reply,omitempty"`
}

func main() {
	log.SetFlags(0)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatalf("chat-go: %v", err)
	}
}

func run(ctx context.Context) error {
	p, err := subservice.Connect(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	self := p.Self()
	fmt.Printf("chat-go %s on %s (%s), %d peers\n", p.Version(), self.Name, self.ID, len(p.Peers()))
	greeting := Chat{Text: "hello from " + self.Name}
	if _, err := p.Broadcast(greeting); err != nil {
		return err
	}
	if err := p.SetMenu([]subservice.MenuItem{{ID: "hello", Label: "Say hello", Enabled: true}}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-p.Messages():
			if !ok {
				return p.Err()
			}
			var c Chat
			if err := m.Decode(&c); err != nil {
				fmt.Printf("%s: (not a chat message) %s\n", m.From.Name, m.Data)
				continue
			}
			kind := "to me"
			if m.Broadcast {
				kind = "to all"
			}
			fmt.Printf("%s (%s) %s: %s\n", m.From.Name, m.From.ID, kind, c.Text)
			if m.Broadcast && !c.Reply {
				answer := Chat{Text: fmt.Sprintf("%s got your %q", self.Name, c.Text), Reply: true}
				if _, err := p.Send(m.From.ID, answer); err != nil {
					return err
				}
			}
		case ev, ok := <-p.Events():
			if ok {
				fmt.Printf("peer %s: %s (%s)\n", map[bool]string{true: "up", false: "down"}[ev.Up], ev.Peer.Name, ev.Peer.ID)
			}
		case e, ok := <-p.Errors():
			if ok {
				fmt.Printf("node error: %v\n", e)
			}
		case item, ok := <-p.Clicks():
			if ok && item == "hello" {
				if _, err := p.Broadcast(greeting); err != nil {
					return err
				}
			}
		}
	}
}
