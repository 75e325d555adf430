package supervisor

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// exampleDir returns the absolute path of examples/NAME in this repository.
func exampleDir(t *testing.T, name string) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// exampleSpec reads an example's nearby.json into a Spec.
func exampleSpec(t *testing.T, name string) Spec {
	t.Helper()
	dir := exampleDir(t, name)
	b, err := os.ReadFile(filepath.Join(dir, "nearby.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man struct {
		Name, Version, Description, Mode, Label string
		Command                                 []string
		Protocol                                int
	}
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatalf("%s/nearby.json: %v", name, err)
	}
	if man.Name != name || man.Version == "" || man.Description == "" || man.Label == "" ||
		man.Mode != "local" || man.Protocol != 1 || len(man.Command) == 0 {
		t.Fatalf("%s/nearby.json is incomplete: %+v", name, man)
	}
	return Spec{Name: man.Name, Version: man.Version, Dir: dir, Argv: man.Command}
}

// logHas waits until the plugin's log holds s.
func logHas(t *testing.T, n *testNode, name, s string) {
	t.Helper()
	waitFor(t, "log line "+s, func() bool {
		b, _ := os.ReadFile(n.sv.LogPath(name))
		return strings.Contains(string(b), s)
	})
}

func TestPythonExample(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	m := newMesh(t)
	a := m.node("alpha", nil)
	spec := exampleSpec(t, "chat-py")
	spec.Env = []string{"CHAT_INTERVAL=0.1"}
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"hello #1 from alpha", "hello #2 from alpha"} {
		r := m.rec.expect(t, text, func(r recMsg) bool { return r.Sub == "chat-py" && r.Data["text"] == text })
		if !r.Broadcast || r.From != a.peer {
			t.Errorf("greeting %+v", r)
		}
	}
	st := a.waitState(t, "chat-py", StateRunning)
	if len(st.Menu) != 2 || st.Menu[0].ID != "hello" || st.Menu[1] != (MenuItem{ID: "mute", Label: "Mute", Enabled: true}) {
		t.Fatalf("menu %+v", st.Menu)
	}
	if err := a.sv.Click("chat-py", "mute"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "mute checked", func() bool { st, _ := a.sv.Status("chat-py"); return len(st.Menu) == 2 && st.Menu[1].Checked })

	if err := a.sv.Deliver(m.rec.peer, "chat-py", []byte(`{"text":"hi python"}`), false); err != nil {
		t.Fatal(err)
	}
	logHas(t, a, "chat-py", "recorder (rec0000000000000) to me: hi python")
	a.sv.PeerEvent(true, Peer{ID: "charlie000000000", Name: "charlie"})
	logHas(t, a, "chat-py", "peer up: charlie (charlie000000000)")
	if err := a.sv.Stop("chat-py"); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.sv.Status("chat-py"); st.State != StateStopped {
		t.Errorf("after Stop: %+v", st)
	}
}

func TestGoExample(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example")
	}
	spec := exampleSpec(t, "chat-go")
	bin := shortDir(t)
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "chat-go"), ".")
	build.Dir = spec.Dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	spec.Dir = bin

	m := newMesh(t)
	a := m.node("alpha", nil)
	if err := a.sv.Start(spec); err != nil {
		t.Fatal(err)
	}
	m.rec.expect(t, "greeting", func(r recMsg) bool {
		return r.Sub == "chat-go" && r.Broadcast && r.Data["text"] == "hello from alpha"
	})
	// A broadcast from another node is answered with a direct message.
	if err := a.sv.Deliver(m.rec.peer, "chat-go", []byte(`{"text":"anyone?"}`), true); err != nil {
		t.Fatal(err)
	}
	r := m.rec.expect(t, "answer", func(r recMsg) bool { return r.Sub == "chat-go" && r.Data["reply"] == true })
	if r.Broadcast || r.From != a.peer || r.Data["text"] != `alpha got your "anyone?"` {
		t.Errorf("answer %+v", r)
	}
	logHas(t, a, "chat-go", "recorder (rec0000000000000) to all: anyone?")
	if err := a.sv.Click("chat-go", "hello"); err != nil {
		t.Fatal(err)
	}
	m.rec.expect(t, "greeting again", func(r recMsg) bool { return r.Sub == "chat-go" && r.Data["text"] == "hello from alpha" })
}
