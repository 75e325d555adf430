package netlab_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/nearbymesh/nearby/internal/netlab"
)

// A LAN of three hosts: start a program on one, run another to
// completion on the next, cut the third off, and tear it all down.
func ExampleCreate() {
	lan, err := netlab.Create(3)
	if err != nil {
		log.Fatal(err)
	}
	defer lan.Close()

	h1, h2, h3 := lan.Host(0), lan.Host(1), lan.Host(2)
	p, err := h1.Start("sleep", "600") // e.g. a node: bin, "up"
	if err != nil {
		log.Fatal(err)
	}
	defer p.Stop(2 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _, err := h2.Run(ctx, "hostname")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s says %s", h2.IPv4, out)

	if err := h3.Cut(); err != nil { // h3 keeps its carrier but hears nothing
		log.Fatal(err)
	}
}
