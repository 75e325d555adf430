package discovery_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/nearbymesh/nearby/discovery"
)

func ExampleRecord_Encode() {
	r := discovery.Record{
		Proto:       discovery.ProtocolVersion,
		NodeID:      "1a2b3c4d5e6f708192a3b4c5d6e7f801",
		Name:        "Alice's laptop",
		MeshID:      "0123456789abcdef",
		Digest:      "9f86d081884c7d65",
		Subservices: []discovery.Sub{{Name: "chat", Version: "1.2.0"}},
	}
	txt, err := r.Encode()
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range txt {
		fmt.Println(s)
	}
	back, err := discovery.DecodeRecord(append(txt, "someone-elses-key=1"))
	fmt.Println(back.Name, back.Subservices, err)
	// Output:
	// v=1
	// id=1a2b3c4d5e6f708192a3b4c5d6e7f801
	// n=Alice's laptop
	// m=0123456789abcdef
	// d=9f86d081884c7d65
	// s=chat@1.2.0
	// Alice's laptop [chat@1.2.0] <nil>
}

func ExampleInstanceName() {
	fmt.Println(discovery.InstanceName("Alice's MacBook Pro", "1a2b3c4d5e6f708192a3b4c5d6e7f801"))
	fmt.Println(discovery.InstanceName("lab.example.com", "1a2b3c4d"))
	// Output:
	// alice-s-macbook-pro-1a2b3c4d
	// lab-example-com-1a2b3c4d
}

// A node advertises itself and hands every sighting to its mesh.
func ExampleService() {
	rec := discovery.Record{
		NodeID: "1a2b3c4d5e6f708192a3b4c5d6e7f801",
		Name:   "alice",
		MeshID: "0123456789abcdef",
	}
	svc, err := discovery.New(discovery.Config{Port: 7946, Record: rec, MeshID: rec.MeshID})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			select {
			case h := <-svc.Hints():
				fmt.Println("peer", h.Record.Name, h.AddrPorts()) // dial these; the mesh proves who it is
			case <-ctx.Done():
				return
			}
		}
	}()
	// When the catalog changes:
	rec.Digest = "new"
	if err := svc.Update(rec); err != nil {
		log.Fatal(err)
	}
	if err := svc.Run(ctx); err != context.Canceled {
		log.Fatal(err)
	}
}

// `nearby discover`: who is out there, right now.
func ExampleBrowse() {
	hints, err := discovery.Browse(context.Background(), discovery.BrowseConfig{Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hints {
		fmt.Printf("%s\t%s\t%v\tmesh %s\n", h.Record.Name, h.Record.NodeID, h.AddrPorts(), h.Record.MeshID)
	}
}
