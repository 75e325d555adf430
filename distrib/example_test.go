package distrib_test

import (
	"fmt"

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
