package subservice_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/nearbymesh/nearby/subservice"
)

// A plugin opens a session on the hosted plugin "rev" of node "gpu-box"
// (examples/hosted-rev): a rev program of its own runs there. It sends a
// line, prints the answer, and closes its input; rev then exits and the
// session ends normally.
func ExamplePlugin_Open() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := subservice.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	s, err := p.Open(ctx, "gpu-box", "rev")
	if err != nil {
		log.Fatal(err) // e.g. an *Error with code "session-refused" that says why
	}
	fmt.Printf("session %s: %s %s on %s\n", s.ID(), s.Plugin(), s.Version(), s.Host().Name)
	s.Write("hello\n")
	s.CloseInput()
	for text := range s.Data() { // closed when the session ends
		fmt.Print(text) // "olleh\n"
	}
	if end, _ := s.End(); !end.Normal() {
		log.Printf("session ended: %s [%s]", end.Reason, end.Code)
	}
}
