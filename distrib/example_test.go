package distrib_test

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nearbymesh/nearby/distrib"
)

func ExampleParseFileName() {
	name, v, err := distrib.ParseFileName("my-chat-1.2.0-rc.1.tar.gz")
	if err != nil {
		panic(err)
	}
	fmt.Println(name, v, v.Prerelease())
	fmt.Println(distrib.FileName(name, v))
	// Output:
	// my-chat 1.2.0-rc.1 rc.1
	// my-chat-1.2.0-rc.1.tar.gz
}

func ExampleNewest() {
	entries := []distrib.IndexEntry{
		{Name: "chat", Version: "1.2.0"},
		{Name: "chat", Version: "1.10.0"},
		{Name: "chat", Version: "2.0.0-beta.1"},
	}
	e, _ := distrib.Newest(entries, "chat", "", false)
	fmt.Println(e.Version)
	e, _ = distrib.Newest(entries, "chat", "", true)
	fmt.Println(e.Version)
	e, _ = distrib.Newest(entries, "chat", "~1.2", false)
	fmt.Println(e.Version)
	// Output:
	// 1.10.0
	// 2.0.0-beta.1
	// 1.2.0
}

func ExampleParseManifest() {
	m, err := distrib.ParseManifest([]byte(`{
		"name": "chat", "version": "1.2.0",
		"command": ["python3", "chat.py"],
		"commands": {"windows": ["py", "chat.py"]}
	}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Mode, m.Protocol, m.Argv("linux"), m.Argv("windows"))
	// Output: local 1 [python3 chat.py] [py chat.py]
}

// Example_publishAndInstall shows the local path of a plugin: pack a
// directory into an archive, drop it in a dist folder, and install it from
// there. Installs from peers go through Fetch first and pass the peer's
// node id as Origin.
func Example_publishAndInstall() {
	tmp, _ := os.MkdirTemp("", "nearby-example-")
	defer os.RemoveAll(tmp)

	key, _ := distrib.LoadOrCreatePublisherKey(filepath.Join(tmp, "publisher.key"))
	archive, err := distrib.Pack("testdata/plugins/hello", tmp, key)
	if err != nil {
		panic(err)
	}
	dest, _ := distrib.Publish(archive, filepath.Join(tmp, "dist"))

	dist, _ := distrib.OpenDist(filepath.Join(tmp, "dist"), distrib.DistConfig{})
	for _, e := range dist.Index().Entries {
		fmt.Println("offered:", e.File, e.Signer == distrib.SignerID(key.Public().(ed25519.PublicKey)))
	}

	store, _ := distrib.OpenStore(filepath.Join(tmp, "state", "plugins"))
	trust, _ := distrib.OpenTrust(filepath.Join(tmp, "state", "trust.json"))
	in, err := store.Install(dest, distrib.InstallOptions{Trust: trust, Origin: distrib.OriginLocal})
	if err != nil {
		panic(err)
	}
	argv, _ := in.Manifest.ResolveArgv(in.Dir, "linux")
	fmt.Println("installed:", in.Name, in.Version, "pinned now:", in.NewPin)
	fmt.Println("run:", filepath.Base(argv[0]))
	// Output:
	// offered: hello-1.0.0.tar.gz true
	// installed: hello 1.0.0 pinned now: true
	// run: hello
}
