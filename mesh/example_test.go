package mesh_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nearbymesh/nearby/mesh"
)

// Two nodes of one mesh: b learns where a is (as discovery would tell it),
// and a message goes from b to a's "chat" subservice.
func Example() {
	key, _ := mesh.NewKey() // normally mesh.LoadKeyFile
	received := make(chan mesh.Message, 1)

	newNode := func(name string, onMessage func(mesh.Message) error) *mesh.Mesh {
		id, _ := mesh.NewIdentity() // normally mesh.LoadOrCreateIdentity
		cfg := mesh.DefaultConfig()
		cfg.Identity, cfg.Key, cfg.Name = id, key, name
		cfg.ListenAddr = "127.0.0.1:0"
		cfg.OnMessage = onMessage
		m, err := mesh.New(cfg)
		if err != nil {
			panic(err)
		}
		go m.Run(context.Background())
		return m
	}
	a := newNode("alpha", func(msg mesh.Message) error {
		received <- msg
		return nil
	})
	defer a.Close()
	b := newNode("beta", nil)
	defer b.Close()

	events, stop := b.Subscribe(16)
	defer stop()
	b.AddHint(mesh.Hint{ID: a.ID(), Addrs: []netip.AddrPort{netip.MustParseAddrPort(a.Addr().String())}})
	for ev := range events {
		if ev.Type == mesh.EventPeerUp {
			fmt.Println("b is connected to", ev.Name)
			break
		}
	}

	if err := b.Send(a.ID(), "chat", []byte("hello from beta"), 0); err != nil {
		panic(err)
	}
	msg := <-received
	fmt.Printf("a got %q for %s\n", msg.Payload, msg.Subservice)
	// Output:
	// b is connected to alpha
	// a got "hello from beta" for chat
}
