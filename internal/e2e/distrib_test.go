package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// drop copies an archive (and its .sig) into a dist folder the way a user
// would: a plain copy, the signature first.
func drop(t testing.TB, archive, dist string) {
	t.Helper()
	for _, p := range []string{archive + ".sig", archive} {
		if _, err := os.Stat(p); os.IsNotExist(err) && p != archive {
			continue
		}
		src, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(dist, filepath.Base(p)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
}

// newest returns what a node's ls says about one subservice.
func lsEntry(nd *node, name string) (control.Subservice, error) {
	var l control.Listing
	if err := nd.get("/v1/ls", &l); err != nil {
		return control.Subservice{}, err
	}
	for _, s := range l.Subservices {
		if s.Name == name {
			return s, nil
		}
	}
	return control.Subservice{}, fmt.Errorf("%s does not list %s", nd.host.Name, name)
}

func publisherKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestPublishAndFetch: an archive dropped into h1's dist shows on h2 at
// once; h2 fetches and installs it; a newer version dropped on h3 is what
// h2's next fetch takes.
func TestPublishAndFetch(t *testing.T) {
	c := newCluster(t, 3)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	h1, h2, h3 := c.nodes[0], c.nodes[1], c.nodes[2]
	key := publisherKey(t)
	staging := t.TempDir()

	v1 := packPlugin(t, staging, "chat", "1.0.0", key)
	t0 := time.Now()
	drop(t, v1, h1.dist)
	waitFor(t, 5*time.Second, "h2 lists chat 1.0.0 from h1", func() error {
		s, err := lsEntry(h2, "chat")
		if err != nil {
			return err
		}
		if s.Newest != "1.0.0" {
			return fmt.Errorf("newest %s", s.Newest)
		}
		return nil
	})
	t.Logf("drop on h1 -> listed on h2: %v", time.Since(t0))

	var events []control.Event
	if err := decodeLines(h2, &events, "fetch", "chat"); err != nil {
		t.Fatal(err)
	}
	res := lastResult(t, events)
	if res.Version != "1.0.0" || res.Node != "h1" || res.Pinned == "" {
		t.Fatalf("fetch result %+v: want 1.0.0 from h1 with a newly pinned key", res)
	}
	s, _ := lsEntry(h2, "chat")
	if s.Installed != "1.0.0" {
		t.Fatalf("h2 installed %q", s.Installed)
	}

	v2 := packPlugin(t, staging, "chat", "1.1.0", key)
	drop(t, v2, h3.dist)
	waitFor(t, 5*time.Second, "h2 sees 1.1.0 as an update", func() error {
		s, err := lsEntry(h2, "chat")
		if err != nil {
			return err
		}
		if s.Newest != "1.1.0" || !s.UpdateAvailable {
			return fmt.Errorf("newest %s update %v", s.Newest, s.UpdateAvailable)
		}
		return nil
	})
	events = nil
	if err := decodeLines(h2, &events, "fetch", "chat"); err != nil {
		t.Fatal(err)
	}
	if res := lastResult(t, events); res.Version != "1.1.0" || res.Node != "h3" {
		t.Fatalf("second fetch %+v: want 1.1.0 from h3", res)
	}
}

// TestFetchRefusesOtherPublisher: once chat is pinned to one publisher, a
// newer chat signed by someone else is refused and 1.0.0 stays installed.
func TestFetchRefusesOtherPublisher(t *testing.T) {
	c := newCluster(t, 2)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	h1, h2 := c.nodes[0], c.nodes[1]
	staging := t.TempDir()
	drop(t, packPlugin(t, staging, "chat", "1.0.0", publisherKey(t)), h1.dist)
	waitFor(t, 5*time.Second, "h2 lists chat", func() error { _, err := lsEntry(h2, "chat"); return err })
	if _, _, err := h2.cli(30*time.Second, "fetch", "chat"); err != nil {
		t.Fatal(err)
	}
	drop(t, packPlugin(t, t.TempDir(), "chat", "2.0.0", publisherKey(t)), h1.dist)
	waitFor(t, 5*time.Second, "h2 sees 2.0.0", func() error {
		s, err := lsEntry(h2, "chat")
		if err == nil && s.Newest != "2.0.0" {
			err = fmt.Errorf("newest %s", s.Newest)
		}
		return err
	})
	_, stderr, err := h2.cli(30*time.Second, "fetch", "chat")
	if err == nil {
		t.Fatal("fetch of a version signed by another key succeeded")
	}
	t.Logf("refused as expected: %s", stderr)
	if s, _ := lsEntry(h2, "chat"); s.Installed != "1.0.0" {
		t.Fatalf("installed version changed to %q", s.Installed)
	}
}

// decodeLines runs a streaming CLI command with --json and decodes its
// NDJSON output.
func decodeLines(nd *node, out *[]control.Event, args ...string) error {
	o, e, err := nd.cli(60*time.Second, append(args, "--json")...)
	if err != nil {
		return fmt.Errorf("%s: nearby %v: %v\n%s", nd.host.Name, args, err, e)
	}
	return decodeNDJSON(o, out)
}

func lastResult(t testing.TB, events []control.Event) control.Result {
	t.Helper()
	for i := len(events) - 1; i >= 0; i-- {
		if events[i].Type == control.EventResult && events[i].Result != nil {
			return *events[i].Result
		}
	}
	t.Fatalf("no result event in %+v", events)
	return control.Result{}
}
