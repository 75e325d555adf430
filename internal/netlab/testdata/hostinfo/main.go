// Command hostinfo prints what a program sees on a netlab host: its
// hostname, whether internal/netsafe lets it multicast, and its
// interfaces. TestBinary builds it with netlab.Binary.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/nearbymesh/nearby/internal/netsafe"
)

func main() {
	name, err := os.Hostname()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	isolation := "ok"
	if err := netsafe.CheckIfRequired(); err != nil {
		isolation = err.Error()
	}
	if !netsafe.Required() {
		isolation = "not required"
	}
	ifs, err := net.Interfaces()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var names []string
	for _, ifi := range ifs {
		names = append(names, ifi.Name)
	}
	fmt.Printf("hostname=%s isolation=%s ifaces=%s\n", name, isolation, strings.Join(names, ","))
}
