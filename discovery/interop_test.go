package discovery

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// pyEvent is one line printed by testdata/pybrowse.py.
type pyEvent struct {
	Event     string   `json:"event"`
	Name      string   `json:"name"`
	Server    string   `json:"server"`
	Port      int      `json:"port"`
	Addresses []string `json:"addresses"`
	TXT       []string `json:"txt"`
}

// TestInteropPythonZeroconf checks that an independent implementation
// (Debian's python3-zeroconf) browses our service, reads the TXT record
// string for string, and sees the goodbye.
func TestInteropPythonZeroconf(t *testing.T) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import zeroconf").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s cannot import zeroconf (apt-get install python3-zeroconf): %v", python, err)
		}
		t.Skipf("%s cannot import zeroconf: %v", python, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/pybrowse.py", "30")
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // the script exits when stdin closes
		if err := cmd.Wait(); err != nil {
			t.Errorf("pybrowse.py: %v", err)
		}
	}()
	events := make(chan pyEvent, 64)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e pyEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("pybrowse.py printed %q: %v", sc.Text(), err)
				continue
			}
			events <- e
		}
	}()
	next := func(want string, name string) pyEvent {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatalf("pybrowse.py exited before %q", want)
				}
				if e.Event == want && (name == "" || e.Name == name) {
					return e
				}
			case <-deadline:
				t.Fatalf("no %q event from python-zeroconf within 15 s", want)
			}
		}
	}
	next("ready", "")

	rec := testRecord(90)
	rec.Subservices = manySubs(150)
	a := start(t, Config{Port: 7990, Record: rec})
	name := InstanceName(rec.Name, rec.NodeID) + "." + ServiceType + "." + Domain
	e := next("added", name)
	if e.Port != 7990 || e.Server != InstanceName(rec.Name, rec.NodeID)+".local." || !slices.Contains(e.Addresses, "127.0.0.1") {
		t.Errorf("python-zeroconf sees %+v", e)
	}
	got, err := DecodeRecord(e.TXT)
	if err != nil {
		t.Fatalf("python-zeroconf's TXT %q: %v", e.TXT, err)
	}
	k := len(got.Subservices)
	if got.NodeID != rec.NodeID || got.MeshID != rec.MeshID || got.Name != rec.Name || got.Digest != rec.Digest ||
		k == 0 || got.More != 150-k || !slices.Equal(got.Subservices, rec.Subservices[:k]) {
		t.Errorf("python-zeroconf's record: %+v", got)
	}
	t.Logf("python-zeroconf resolved %s: port %d, %v, %d TXT strings, %d subservices listed, more=%d", e.Name, e.Port, e.Addresses, len(e.TXT), k, got.More)
	if err := a.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	next("removed", name)
}
