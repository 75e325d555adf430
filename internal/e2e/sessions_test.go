package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/cli"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netlab"
)

// packRev packs examples/hosted-rev as name at version, with the given
// sessions limits (nil: the example's), signed with key, into outDir.
func packRev(t testing.TB, key ed25519.PrivateKey, outDir, name, version string, limits map[string]any) string {
	t.Helper()
	src := filepath.Join(repoRoot(t), "examples", "hosted-rev")
	dir := filepath.Join(t.TempDir(), name+"-"+version)
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	var man map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "nearby.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	man["name"], man["version"] = name, version
	if limits != nil {
		man["sessions"] = limits
	}
	if b, err = json.MarshalIndent(man, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nearby.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := distrib.Pack(dir, outDir, key)
	if err != nil {
		t.Fatalf("pack %s %s: %v", name, version, err)
	}
	return p
}

// presenter is a `nearby open NAME@NODE` process whose stdin the test
// writes.
type presenter struct {
	nd   *node
	proc *netlab.Proc
	in   *os.File
}

// open starts `nearby open target` on the node and waits until the session
// is open (its host answered).
func (nd *node) open(t testing.TB, target string) *presenter {
	t.Helper()
	p := nd.startOpen(t, target)
	waitFor(t, 15*time.Second, target+" open from "+nd.host.Name, func() error {
		if strings.Contains(p.proc.Stderr(), "open: ") {
			return nil
		}
		select {
		case <-p.proc.Exited():
			t.Fatalf("%s: nearby open %s exited: %v\n%s", nd.host.Name, target, p.proc.Wait(), p.proc.Stderr())
		default:
		}
		return fmt.Errorf("not open yet")
	})
	return p
}

func (nd *node) startOpen(t testing.TB, target string) *presenter {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := nd.host.Command(nd.c.bin, "open", target, "-v", "--state", nd.state)
	cmd.Env = append(cmd.Env, "NEARBY_MESH_KEY="+nd.key, "NEARBY_CONFIG=/nonexistent")
	cmd.Stdin = r
	proc, err := nd.host.StartCommand(cmd)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return &presenter{nd: nd, proc: proc, in: w}
}

func (p *presenter) send(t testing.TB, line string) {
	t.Helper()
	if _, err := p.in.WriteString(line + "\n"); err != nil {
		t.Fatalf("write to nearby open on %s: %v", p.nd.host.Name, err)
	}
}

// waitOutput waits until the presenter's stdout contains want.
func (p *presenter) waitOutput(t testing.TB, want string) string {
	t.Helper()
	var out string
	waitFor(t, 15*time.Second, fmt.Sprintf("%q from the session on %s", want, p.nd.host.Name), func() error {
		out = p.proc.Stdout()
		if strings.Contains(out, want) {
			return nil
		}
		return fmt.Errorf("stdout so far %q, stderr %q", tailStr(out, 500), tailStr(p.proc.Stderr(), 500))
	})
	return out
}

// waitExit waits for `nearby open` to exit and returns its error and stderr.
func (p *presenter) waitExit(t testing.TB) (error, string) {
	t.Helper()
	select {
	case <-p.proc.Exited():
	case <-time.After(20 * time.Second):
		t.Fatalf("nearby open on %s did not exit; stderr:\n%s", p.nd.host.Name, p.proc.Stderr())
	}
	return p.proc.Wait(), p.proc.Stderr()
}

// sessions returns a node's GET /v1/sessions.
func (nd *node) sessions(t testing.TB) control.Sessions {
	t.Helper()
	var s control.Sessions
	if err := nd.get("/v1/sessions", &s); err != nil {
		t.Fatalf("%s: sessions: %v", nd.host.Name, err)
	}
	return s
}

// hostedSession finds, in the host's table, the session of plugin that
// presenter opened most recently.
func hostedSession(t testing.TB, host *node, presenter, plugin string) control.Session {
	t.Helper()
	var found control.Session
	waitFor(t, 10*time.Second, plugin+" session of "+presenter+" on "+host.host.Name, func() error {
		for _, s := range host.sessions(t).Sessions {
			if s.Role == "host" && s.Presenter.Name == presenter && s.Plugin == plugin && s.State == "open" {
				found = s
				return nil
			}
		}
		return fmt.Errorf("not in the table")
	})
	return found
}

// waitSessionEnded waits until node lists session id (in role) as ended.
func waitSessionEnded(t testing.TB, nd *node, id, role string) control.Session {
	t.Helper()
	var found control.Session
	waitFor(t, 15*time.Second, "session "+id[:8]+" ended on "+nd.host.Name, func() error {
		for _, s := range nd.sessions(t).Sessions {
			if s.ID == id && s.Role == role {
				found = s
				if s.State == "ended" {
					return nil
				}
				return fmt.Errorf("state %s", s.State)
			}
		}
		return fmt.Errorf("not listed")
	})
	return found
}

func pidGone(pid int) error {
	if err := syscall.Kill(pid, 0); err == nil {
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			return nil
		}
		return fmt.Errorf("pid %d still alive", pid)
	}
	return nil
}

// TestSessions is the hosted-session journey on a virtual LAN of real
// nodes: rev is hosted on h3; h1 and h2 present sessions of it.
func TestSessions(t *testing.T) {
	requirePython(t)
	c := newCluster(t, 3)
	c.dumpOnFailure()
	c.startAll()
	waitFor(t, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	h1, h2, h3 := c.nodes[0], c.nodes[1], c.nodes[2]
	key := publisherKey(t)
	staging := t.TempDir()
	drop(t, packRev(t, key, staging, "rev", "1.0.0", nil), h3.dist)
	waitFor(t, 5*time.Second, "h1 lists rev", func() error {
		s, err := lsEntry(h1, "rev")
		if err == nil && s.Mode != "hosted" {
			err = fmt.Errorf("mode %q", s.Mode)
		}
		return err
	})

	// A hosted plugin is never downloaded: run and fetch elsewhere say
	// where it is hosted and how to open it.
	for _, verb := range []string{"run", "fetch"} {
		_, stderr, err := h1.cli(20*time.Second, verb, "rev")
		if err == nil || !strings.Contains(stderr, "hosted on h3: use `nearby open rev@h3`") {
			t.Fatalf("%s rev on h1: %v\n%s", verb, err, stderr)
		}
	}
	// Nobody reaches it before its host runs it.
	_, stderr, err := h1.cli(20*time.Second, "open", "rev@h3")
	if err == nil || !strings.Contains(stderr, "not running") || !strings.Contains(stderr, "nearby run rev") {
		t.Fatalf("open before the host runs rev: %v\n%s", err, stderr)
	}
	if r := runPlugin(t, h3, "rev"); r.Version != "1.0.0" || !strings.Contains(r.Message, "nearby open rev@h3") {
		t.Fatalf("run rev on h3: %+v", r)
	}

	t.Run("two presenters, two programs, no crosstalk", func(t *testing.T) {
		p1, p2 := h1.open(t, "rev@h3"), h2.open(t, "rev@h3")
		p1.send(t, "alpha from h1")
		p2.send(t, "beta from h2")
		p1.send(t, "!whoami")
		p2.send(t, "!whoami")
		o1 := p1.waitOutput(t, "presenter h1")
		o2 := p2.waitOutput(t, "presenter h2")
		if !strings.Contains(o1, "1h morf ahpla") || !strings.Contains(o2, "2h morf ateb") {
			t.Fatalf("replies: h1 %q, h2 %q", o1, o2)
		}
		if strings.Contains(o1, "ateb") || strings.Contains(o1, "presenter h2") || strings.Contains(o2, "ahpla") || strings.Contains(o2, "presenter h1") {
			t.Fatalf("crosstalk: h1 %q, h2 %q", o1, o2)
		}
		s1, s2 := hostedSession(t, h3, "h1", "rev"), hostedSession(t, h3, "h2", "rev")
		if s1.PID == s2.PID || s1.ID == s2.ID || s1.PID == 0 || !strings.Contains(o1, fmt.Sprintf("pid %d", s1.PID)) {
			t.Fatalf("host table: %+v / %+v", s1, s2)
		}
		// Each presenter's node lists its own session, and only that.
		own := h1.sessions(t).Sessions
		if len(own) != 1 || own[0].ID != s1.ID || own[0].Role != "presenter" || own[0].Host.Name != "h3" || own[0].Owner != "cli" {
			t.Fatalf("h1's table: %+v", own)
		}

		// A third node may not write into (or close) someone else's session;
		// the presenter's node may.
		_, stderr, err := h2.cli(20*time.Second, "sessions", "send", s1.ID, "intruder", "--node", "h3")
		if err == nil || !strings.Contains(stderr, "refused") {
			t.Fatalf("h2 writing into h1's session: %v\n%s", err, stderr)
		}
		if _, stderr, err := h2.cli(20*time.Second, "sessions", "close", s1.ID, "--node", "h3"); err == nil || !strings.Contains(stderr, "refused") {
			t.Fatalf("h2 closing h1's session: %v\n%s", err, stderr)
		}
		if _, stderr, err := h3.cli(20*time.Second, "sessions", "send", s1.ID, "host"); err == nil || !strings.Contains(stderr, "only that node") {
			t.Fatalf("the host writing into h1's session: %v\n%s", err, stderr)
		}
		if _, stderr, err := h1.cli(20*time.Second, "sessions", "send", s1.ID[:8], "owner"); err != nil {
			t.Fatalf("h1 writing into its own session: %v\n%s", err, stderr)
		}
		o1 = p1.waitOutput(t, "renwo")
		if strings.Contains(o1, "redurtni") || strings.Contains(o1, "tsoh") {
			t.Fatalf("a refused write reached the program: %q", o1)
		}
		if !strings.Contains(c.nodes[2].proc.Stderr(), "session control refused") {
			t.Error("the host did not log the refused control requests")
		}
		if log := pluginLog(t, h3, "rev"); !strings.Contains(log, "session "+s1.ID[:8]+": rev 1.0.0: session for h1") {
			t.Errorf("the program's stderr is not in the host's log:\n%s", log)
		}

		// Killing one session's program ends that session only; its
		// presenter is told.
		if err := syscall.Kill(s1.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err, stderr = p1.waitExit(t)
		if err == nil || !strings.Contains(stderr, "killed") {
			t.Fatalf("h1's nearby open after its program was killed: %v\n%s", err, stderr)
		}
		if s := waitSessionEnded(t, h3, s1.ID, "host"); s.EndCode != "crashed" {
			t.Fatalf("host table: %+v", s)
		}
		p2.send(t, "still here")
		p2.waitOutput(t, "ereh llits")

		// The presenter's node dies (kill -9): its session ends on the host
		// and the program is gone.
		h2.proc.Kill()
		killed := time.Now()
		s := waitSessionEnded(t, h3, s2.ID, "host")
		t.Logf("presenter node killed -> session ended on the host in %v (%s: %s)", time.Since(killed), s.EndCode, s.EndReason)
		if s.EndCode != "presenter-left" && s.EndCode != "lost" {
			t.Errorf("end code %q", s.EndCode)
		}
		waitFor(t, 5*time.Second, "h2's program gone", func() error { return pidGone(s2.PID) })
		if err, _ := p2.waitExit(t); err == nil {
			t.Error("h2's nearby open exited 0 after its node died")
		}
	})

	t.Run("restart ends sessions; new opens work at once", func(t *testing.T) {
		p := h1.open(t, "rev@h3")
		p.send(t, "!whoami")
		p.waitOutput(t, "version 1.0.0")
		dropped := time.Now()
		drop(t, packRev(t, key, staging, "rev", "1.1.0", nil), h3.dist)
		err, stderr := p.waitExit(t)
		t.Logf("new version dropped -> old session ended in %v", time.Since(dropped))
		if err == nil || !strings.Contains(stderr, "restarted") || !strings.Contains(stderr, "1.1.0") {
			t.Fatalf("old session: %v\n%s", err, stderr)
		}
		q := h1.open(t, "rev@h3")
		q.send(t, "!whoami")
		q.waitOutput(t, "version 1.1.0")

		if _, stderr, err := h3.cli(20*time.Second, "stop", "rev"); err != nil {
			t.Fatalf("stop rev: %v\n%s", err, stderr)
		}
		if err, stderr := q.waitExit(t); err == nil || !strings.Contains(stderr, "stopped") {
			t.Fatalf("session after stop: %v\n%s", err, stderr)
		}
		if _, stderr, err := h1.cli(20*time.Second, "open", "rev@h3"); err == nil || !strings.Contains(stderr, "not running") {
			t.Fatalf("open after stop: %v\n%s", err, stderr)
		}
		runPlugin(t, h3, "rev")
		r := h1.open(t, "rev@h3")
		r.send(t, "!whoami")
		r.waitOutput(t, "version 1.1.0")
		r.in.Close() // end of input: rev exits 0, a normal end
		if err, stderr := r.waitExit(t); err != nil {
			t.Fatalf("normal end exited with %v\n%s", err, stderr)
		}
	})

	t.Run("a plugin opens a session through the plugin protocol", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "opener")
		os.MkdirAll(dir, 0o755)
		man := `{"name":"opener","version":"1.0.0","command":["python3","opener.py"],"mode":"local","protocol":1}`
		if err := os.WriteFile(filepath.Join(dir, "nearby.json"), []byte(man), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "opener.py"), []byte(openerPlugin), 0o755); err != nil {
			t.Fatal(err)
		}
		archive, err := distrib.Pack(dir, staging, key)
		if err != nil {
			t.Fatal(err)
		}
		drop(t, archive, h1.dist)
		waitFor(t, 5*time.Second, "h1 lists opener", func() error { _, err := lsEntry(h1, "opener"); return err })
		runPlugin(t, h1, "opener")
		var log string
		waitFor(t, 15*time.Second, "the plugin's session to run its course", func() error {
			log = pluginLog(t, h1, "opener")
			if !strings.Contains(log, "closed closed") {
				return fmt.Errorf("log so far:\n%s", log)
			}
			return nil
		})
		if !strings.Contains(log, `"event": "opened"`) || !strings.Contains(log, "nigulp a morf olleh") || !strings.Contains(log, `"version": "1.1.0"`) {
			t.Fatalf("plugin log:\n%s", log)
		}
		var mine []control.Session
		for _, s := range h1.sessions(t).Sessions {
			if s.Owner == "plugin opener" {
				mine = append(mine, s)
			}
		}
		if len(mine) != 1 || mine[0].EndCode != "closed" || mine[0].Host.Name != "h3" {
			t.Fatalf("h1's table: %+v", mine)
		}
	})

	t.Run("limits", func(t *testing.T) {
		drop(t, packRev(t, key, staging, "revlimit", "1.0.0", map[string]any{"max_sessions": 1, "idle_timeout": "1s", "output_buffer": 65536}), h3.dist)
		waitFor(t, 5*time.Second, "h3 lists revlimit", func() error { _, err := lsEntry(h3, "revlimit"); return err })
		runPlugin(t, h3, "revlimit")
		p := h1.open(t, "revlimit@h3")
		_, stderr, err := h1.cli(20*time.Second, "open", "revlimit@h3")
		if err == nil || !strings.Contains(stderr, "max_sessions") {
			t.Fatalf("second session over max_sessions=1: %v\n%s", err, stderr)
		}
		err, stderr = p.waitExit(t) // idle for 1 s
		if err == nil || !strings.Contains(stderr, "idle") || !strings.Contains(stderr, "idle_timeout") {
			t.Fatalf("idle session: %v\n%s", err, stderr)
		}
		var hosted control.HostedPlugin
		for _, h := range h3.sessions(t).Hosted {
			if h.Name == "revlimit" {
				hosted = h
			}
		}
		if hosted.MaxSessions != 1 || hosted.IdleTimeout != "1s" || hosted.OutputBuffer != 65536 {
			t.Fatalf("h3 serves %+v", hosted)
		}
	})

	t.Run("the presenter closes", func(t *testing.T) {
		p := h1.open(t, "rev@h3")
		p.send(t, "z")
		p.waitOutput(t, "z\n")
		id := hostedSession(t, h3, "h1", "rev").ID
		if _, stderr, err := h1.cli(20*time.Second, "sessions", "close", id[:8]); err != nil {
			t.Fatalf("close: %v\n%s", err, stderr)
		}
		if err, stderr := p.waitExit(t); err != nil {
			t.Fatalf("nearby open after its session was closed: %v\n%s", err, stderr)
		}
		if s := waitSessionEnded(t, h3, id, "host"); s.EndCode != "closed" {
			t.Fatalf("host: %+v", s)
		}
		// Ctrl-C closes the session too.
		q := h1.open(t, "rev@h3")
		qid := hostedSession(t, h3, "h1", "rev").ID
		q.proc.Signal(syscall.SIGINT)
		if err, stderr := q.waitExit(t); err != nil {
			t.Fatalf("nearby open after Ctrl-C: %v\n%s", err, stderr)
		}
		if s := waitSessionEnded(t, h3, qid, "host"); s.EndCode != "closed" {
			t.Fatalf("host after Ctrl-C: %+v", s)
		}
	})

	t.Run("presenter node shutdown tells nearby open", func(t *testing.T) {
		p := h1.open(t, "rev@h3")
		p.send(t, "y")
		p.waitOutput(t, "y\n")
		id := hostedSession(t, h3, "h1", "rev").ID
		h1.stop()
		if err, stderr := p.waitExit(t); err == nil || !strings.Contains(stderr, "h1 is shutting down") {
			t.Fatalf("session at presenter shutdown: %v\n%s", err, stderr)
		}
		if s := waitSessionEnded(t, h3, id, "host"); s.EndCode != "closed" {
			t.Fatalf("host: %+v", s)
		}
		h1.start(h1.args...)
		waitFor(t, 15*time.Second, "h1 back", func() error { return c.fullMesh([]*node{h1, h3}) })
	})

	t.Run("host shutdown tells the presenter", func(t *testing.T) {
		p := h1.open(t, "rev@h3")
		p.send(t, "x")
		p.waitOutput(t, "x\n")
		h3.stop()
		if err, stderr := p.waitExit(t); err == nil || !strings.Contains(stderr, "shutting down") {
			t.Fatalf("session at host shutdown: %v\n%s", err, stderr)
		}
	})
}

// BenchmarkSessionOpen measures, across hosts of a virtual LAN, the time
// from a presenter's request (POST /v1/open on h1's control socket) until
// the host (h2) has started the session's program and the opened answer is
// back ("open"), and until the program's first reply arrives ("reply";
// Python's start-up included).
//
//	scripts/isolated.sh go test -run '^$' -bench SessionOpen -benchtime 100x ./internal/e2e/
func BenchmarkSessionOpen(b *testing.B) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		b.Skip("python3 missing")
	}
	c := newCluster(b, 2)
	c.dumpOnFailure()
	c.startAll()
	waitFor(b, 15*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
	h1, h2 := c.nodes[0], c.nodes[1]
	drop(b, packRev(b, publisherKey(b), b.TempDir(), "rev", "1.0.0", nil), h2.dist)
	waitFor(b, 5*time.Second, "h2 lists rev", func() error { _, err := lsEntry(h2, "rev"); return err })
	runPlugin(b, h2, "rev")
	socket := h1.client().Socket
	var opens, replies []time.Duration
	buf := make([]byte, 256)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t0 := time.Now()
		conn, err := cli.OpenSession(ctx, socket, control.OpenRequest{Node: "h2", Plugin: "rev"})
		if err != nil {
			b.Fatal(err)
		}
		opens = append(opens, time.Since(t0))
		conn.Write([]byte("ping\n"))
		if _, err := conn.Read(buf); err != nil {
			b.Fatal(err)
		}
		replies = append(replies, time.Since(t0))
		conn.Close()
		cancel()
	}
	report := func(ds []time.Duration, unit string) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, unit+"-p50-ms")
		b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds())/1000, unit+"-p90-ms")
	}
	report(opens, "open")
	report(replies, "reply")
}

// openerPlugin is a local plugin in plain Python that opens a session on
// rev@h3 through the plugin protocol, says hello, closes the session when
// the answer comes, and logs every frame.
const openerPlugin = `import json, os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["NEARBY_SOCKET"])
lines = sock.makefile("rb")
def send(frame):
    sock.sendall(json.dumps(frame, separators=(",", ":")).encode() + b"\n")
send({"op": "hello", "token": os.environ["NEARBY_TOKEN"], "protocol": 1})
send({"op": "open", "id": 1, "to": "h3", "plugin": "rev"})
session = None
for line in lines:
    if not line.strip():
        continue
    f = json.loads(line)
    print("got", json.dumps(f, sort_keys=True), flush=True)
    if f["op"] == "session" and f["event"] == "opened":
        session = f["session"]
        send({"op": "session-data", "session": session, "data": "hello from a plugin\n"})
    elif f["op"] == "session-data" and "nigulp" in f["data"]:
        send({"op": "session-close", "session": session})
    elif f["op"] == "session" and f["event"] == "closed":
        print("closed", f["code"], f["reason"], flush=True)
sys.exit(1)
`
