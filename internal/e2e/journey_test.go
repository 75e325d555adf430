package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netlab"
)

// journeyLoss is the packet loss on every link of the journey, in percent.
const journeyLoss = 5

// TestJourneyUnderFaults is the whole user journey on a 5-host virtual LAN
// with the real binaries, under faults: 5% packet loss on every link from
// the first packet to the last, nodes started in random order, one host cut
// and healed in the middle, source nodes killed with kill -9 during
// downloads, a plugin that crashes in a loop, and hostile archives dropped
// into a dist folder (unsafe ones, and a valid higher version signed by
// another publisher). Every step waits for its outcome with a bound and
// logs how long it took; the end checks that nothing installed was lost, no
// node crashed and every view converged.
//
//	scripts/isolated.sh go test -run 'TestJourneyUnderFaults$' -v ./internal/e2e/
func TestJourneyUnderFaults(t *testing.T) {
	requirePython(t)
	c := newCluster(t, 5)
	c.dumpOnFailure()
	j := &journey{t: t, c: c, start: time.Now()}
	h1, h2, h3, h4, h5 := c.nodes[0], c.nodes[1], c.nodes[2], c.nodes[3], c.nodes[4]
	key := publisherKey(t)
	staging := t.TempDir()
	pids := map[*node]int{} // node processes that must survive the journey

	j.step("5% loss on every link; nodes start in random order; full mesh", func() {
		j.lossy(c.nodes...)
		var order []string
		for _, i := range mrand.Perm(len(c.nodes)) {
			c.nodes[i].start()
			order = append(order, c.nodes[i].host.Name)
			time.Sleep(time.Duration(mrand.IntN(300)) * time.Millisecond)
		}
		t.Logf("start order: %s", strings.Join(order, " "))
		waitFor(t, 30*time.Second, "full mesh of 5 under loss", func() error { return c.fullMesh(c.nodes) })
		for _, nd := range []*node{h1, h2, h3} {
			pids[nd] = nd.proc.PID()
		}
	})

	j.step("chat-go and chat-py published on h1; every node lists them", func() {
		drop(t, packChat(t, "chat-go", "1.0.0", key, staging), h1.dist)
		drop(t, packChat(t, "chat-py", "1.0.0", key, staging), h1.dist)
		j.everyNode(15*time.Second, "lists chat-go and chat-py 1.0.0", func(nd *node) error {
			return newestIs(nd, map[string]string{"chat-go": "1.0.0", "chat-py": "1.0.0"})
		})
	})

	j.step("h2 runs chat-go, fetched from h1; h4 and h5 too; h1 runs chat-py", func() {
		if r := runPlugin(t, h2, "chat-go"); r.Version != "1.0.0" || r.Node != "h1" || r.Pinned == "" {
			t.Fatalf("h2 run chat-go: %+v, want 1.0.0 from h1 with a newly pinned key", r)
		}
		for _, nd := range []*node{h4, h5} {
			if r := runPlugin(t, nd, "chat-go"); r.Version != "1.0.0" {
				t.Fatalf("%s run chat-go: %+v", nd.host.Name, r)
			}
		}
		if r := runPlugin(t, h1, "chat-py"); r.Version != "1.0.0" || r.Node != "h1" {
			t.Fatalf("h1 run chat-py: %+v", r)
		}
		for _, nd := range []*node{h2, h4, h5} {
			waitRunning(t, nd, "chat-go")
		}
		waitRunning(t, h1, "chat-py")
		// Mute chat-py's periodic greeting: greeting numbers are then ours.
		j.click(h1, "chat-py", "mute")
		waitFor(t, 10*time.Second, "chat-py muted", func() error {
			p, err := pluginStatus(h1, "chat-py")
			if err != nil {
				return err
			}
			for _, it := range p.Menu {
				if it.ID == "mute" && it.Checked {
					return nil
				}
			}
			return fmt.Errorf("menu %+v", p.Menu)
		})
	})

	j.step("a plugin that exits at once runs on h2 (its crash loop goes on in the background)", func() {
		drop(t, packScript(t, staging, "crashy", "1.0.0", "echo crashy: giving up; exit 3", nil, key), h2.dist)
		waitFor(t, 10*time.Second, "h2 lists crashy", func() error { _, err := lsEntry(h2, "crashy"); return err })
		if r := runPlugin(t, h2, "crashy"); r.Version != "1.0.0" {
			t.Fatalf("run crashy: %+v", r)
		}
	})

	var cut time.Time
	upgraded := map[*node]int{} // chat-go's pid after the upgrade
	j.step("h5 cut; chat-go 1.1.0 dropped on h3; the running chat-go on h2 and h4 upgrade", func() {
		if err := h5.host.Cut(); err != nil {
			t.Fatal(err)
		}
		cut = time.Now()
		drop(t, packChat(t, "chat-go", "1.1.0", key, staging), h3.dist)
		for _, nd := range []*node{h2, h4} {
			upgraded[nd] = j.waitVersion(nd, "chat-go", "1.1.0").PID
			if log := pluginLog(t, nd, "chat-go"); !strings.Contains(log, "chat-go 1.1.0 on "+nd.host.Name) {
				t.Fatalf("%s: no start of 1.1.0 in the log:\n%s", nd.host.Name, log)
			}
		}
	})

	j.step("chat-py on h1 broadcasts twice: chat-go on h2 and h4 gets each once and replies", func() {
		j.click(h1, "chat-py", "hello") // hello #2
		j.click(h1, "chat-py", "hello") // hello #3
		j.delivered(h1, []*node{h2, h4}, 2, 3)
	})

	j.step("h5 gone from every peer table, then healed: full mesh, h5 upgrades to 1.1.0", func() {
		t.Logf("cut h5: gone after %v", goneFrom(t, []*node{h1, h2, h3, h4}, "h5", cut, 15*time.Second))
		j.heal(h5)
		healed := time.Now()
		waitFor(t, 30*time.Second, "full mesh after healing h5", func() error { return c.fullMesh(c.nodes) })
		t.Logf("healed h5: full mesh after %v", time.Since(healed))
		j.waitVersion(h5, "chat-go", "1.1.0")
		t.Logf("healed h5: running chat-go 1.1.0 after %v", time.Since(healed))
	})

	j.step("chat-py broadcasts again: h2, h4 and the healed h5 get it once", func() {
		j.click(h1, "chat-py", "hello") // hello #4
		j.delivered(h1, []*node{h2, h4, h5}, 4)
		log := pluginLog(t, h5, "chat-go")
		for _, k := range []int{2, 3} {
			n := strings.Count(log, fmt.Sprintf("hello #%d from h1", k))
			if n > 1 {
				t.Errorf("h5 got hello #%d %d times", k, n)
			}
			t.Logf("h5 got hello #%d (sent while it was cut) %d times: no retransmission across sessions", k, n)
		}
	})

	j.step("rev hosted on h3; h4 opens a session, talks, closes it", func() {
		drop(t, packRev(t, key, staging, "rev", "1.0.0", nil), h3.dist)
		waitFor(t, 10*time.Second, "h4 lists rev", func() error { _, err := lsEntry(h4, "rev"); return err })
		runPlugin(t, h3, "rev")
		p := h4.open(t, "rev@h3")
		p.send(t, "journey under faults")
		p.waitOutput(t, "stluaf rednu yenruoj")
		s := hostedSession(t, h3, "h4", "rev")
		if _, stderr, err := h4.cli(20*time.Second, "sessions", "close", s.ID[:8]); err != nil {
			t.Fatalf("close: %v\n%s", err, stderr)
		}
		if err, stderr := p.waitExit(t); err != nil {
			t.Fatalf("nearby open after its session was closed: %v\n%s", err, stderr)
		}
		if e := waitSessionEnded(t, h3, s.ID, "host"); e.EndCode != "closed" {
			t.Fatalf("host's table: %+v", e)
		}
		if e := waitSessionEnded(t, h4, s.ID, "presenter"); e.EndCode != "closed" {
			t.Fatalf("presenter's table: %+v", e)
		}
	})

	// A big archive, so that a download lasts long enough to kill its
	// source in the middle (its link is rate-limited to 8 Mbit/s).
	small := packScript(t, staging, "bulk", "1.0.0", helloPlugin, nil, key)
	payload := make([]byte, 6<<20)
	rand.Read(payload)
	big := packScript(t, t.TempDir(), "bulk", "2.0.0", helloPlugin, map[string][]byte{"payload.bin": payload}, key)

	j.step("kill -9 of the only source during an automatic update: it fails cleanly, the old version runs on", func() {
		drop(t, small, h1.dist)
		waitFor(t, 10*time.Second, "h3 lists bulk", func() error { _, err := lsEntry(h3, "bulk"); return err })
		runPlugin(t, h3, "bulk")
		before := waitRunning(t, h3, "bulk")
		ev := watch(t, h3)
		if err := h4.host.Rate("8mbit"); err != nil {
			t.Fatal(err)
		}
		drop(t, big, h4.dist)
		done := ev.wait(t, 30*time.Second, "h3 downloading bulk 2.0.0 from h4", func(e control.Event) bool {
			return e.Type == control.EventProgress && e.Progress.Node == "h4" && e.Progress.Done >= 1<<20
		}).Progress.Done
		h4.proc.Kill()
		t.Logf("killed h4 after it sent %d of %d bytes", done, len(payload))
		failed := ev.wait(t, 30*time.Second, "update-failed on h3", func(e control.Event) bool {
			return e.Type == control.EventUpdateFailed && strings.Contains(e.Message, "bulk")
		})
		t.Logf("h3: %s", failed.Message)
		after, err := pluginStatus(h3, "bulk")
		if err != nil || after.PID != before.PID || after.Version != "1.0.0" || after.State != "running" {
			t.Fatalf("bulk on h3 after the failed update: %+v (%v), before %+v", after, err, before)
		}
		if s, _ := lsEntry(h3, "bulk"); s.Installed != "1.0.0" {
			t.Fatalf("h3 has bulk %q installed", s.Installed)
		}
		if ents, _ := os.ReadDir(filepath.Join(h3.state, "tmp")); len(ents) != 0 {
			t.Errorf("the failed download left %d entries in h3's tmp", len(ents))
		}
	})

	j.step("h4 back, the same archive on h5 as well: h3's update completes", func() {
		j.restart(h4, "chat-go")
		drop(t, big, h5.dist)
		j.waitVersion(h3, "bulk", "2.0.0")
	})

	j.step("kill -9 of one of two sources during a run on h2: the download resumes from the other", func() {
		waitFor(t, 15*time.Second, "h2 sees bulk 2.0.0 offered by h4 and h5", func() error {
			s, err := lsEntry(h2, "bulk")
			if err != nil {
				return err
			}
			by := map[string]bool{}
			for _, o := range s.Offers {
				by[o.NodeName+" "+o.Version] = true
			}
			if !by["h4 2.0.0"] || !by["h5 2.0.0"] {
				return fmt.Errorf("offers %+v", s.Offers)
			}
			return nil
		})
		first, second := h4, h5
		if h5.id() < h4.id() { // sources are tried in node id order
			first, second = h5, h4
		}
		if err := first.host.Rate("8mbit"); err != nil {
			t.Fatal(err)
		}
		type outcome struct {
			events []control.Event
			err    error
		}
		ch := make(chan control.Event, 1024)
		res := make(chan outcome, 1)
		go func() {
			var o outcome
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			o.err = h2.client().Stream(ctx, "/v1/run", control.FetchRequest{Name: "bulk"}, func(e control.Event) error {
				o.events = append(o.events, e)
				select {
				case ch <- e:
				default:
				}
				return nil
			})
			res <- o
		}()
		var killedAt int64
		timeout := time.After(60 * time.Second)
		for killedAt == 0 {
			select {
			case e := <-ch:
				if e.Type == control.EventProgress && e.Progress.Node == first.host.Name && e.Progress.Done >= 1<<20 {
					first.proc.Kill()
					killedAt = e.Progress.Done
				}
			case <-timeout:
				t.Fatalf("no progress of 1 MiB from %s in 60 s", first.host.Name)
			}
		}
		t.Logf("killed %s after it sent %d of %d bytes", first.host.Name, killedAt, len(payload))
		var o outcome
		select {
		case o = <-res:
		case <-time.After(90 * time.Second):
			t.Fatal("run bulk did not finish")
		}
		if o.err != nil {
			t.Fatalf("run bulk on h2: %v", o.err)
		}
		var resumed int64 = -1
		for _, e := range o.events {
			if e.Type == control.EventProgress && e.Progress.Node == second.host.Name {
				resumed = e.Progress.Done
				break
			}
		}
		if resumed < killedAt {
			t.Errorf("%s took over at byte %d, want a resume at or after %d", second.host.Name, resumed, killedAt)
		}
		r := lastResult(t, o.events)
		t.Logf("resumed from %s at byte %d; result %+v", second.host.Name, resumed, r)
		if r.Version != "2.0.0" || r.Node != second.host.Name {
			t.Fatalf("run bulk on h2: %+v, want 2.0.0 from %s", r, second.host.Name)
		}
		j.waitVersion(h2, "bulk", "2.0.0")
		j.restart(first, "chat-go")
	})

	j.step("the crashing plugin ended in a crash loop; nothing else on h2 noticed", func() {
		var p control.Plugin
		waitFor(t, 30*time.Second, "crashy failed on h2", func() error {
			var err error
			p, err = pluginStatus(h2, "crashy")
			if err == nil && p.State != "failed" {
				err = fmt.Errorf("state %s restarts %d", p.State, p.Restarts)
			}
			return err
		})
		log := pluginLog(t, h2, "crashy")
		if p.Restarts != 5 || p.LastExit != "exit status 3" || !strings.Contains(log, "crash loop: not restarting") {
			t.Errorf("crashy: %+v\n%s", p, log)
		}
		t.Logf("crashy: %d restarts, last %s, then failed", p.Restarts, p.LastExit)
		if n := strings.Count(log, "crashy: giving up"); n != 6 {
			t.Errorf("crashy ran %d times, want 6", n)
		}
		if p, err := pluginStatus(h2, "chat-go"); err != nil || p.PID != upgraded[h2] || p.State != "running" {
			t.Errorf("chat-go on h2 disturbed: %+v %v (pid was %d)", p, err, upgraded[h2])
		}
	})

	escape := t.TempDir()
	j.step("hostile archives dropped into h4's dist: listed invalid there, offered nowhere, nothing written outside", func() {
		hostile := hostileArchives(t, t.TempDir(), escape)
		for _, p := range hostile {
			drop(t, p, h4.dist)
		}
		waitFor(t, 15*time.Second, "h4 lists the hostile archives as invalid", func() error {
			var l control.Listing
			if err := h4.cliJSON(&l, "ls"); err != nil {
				return err
			}
			got := map[string]string{}
			for _, iv := range l.Invalid {
				got[iv.File] = iv.Error
			}
			for _, p := range hostile {
				if _, ok := got[filepath.Base(p)]; !ok {
					return fmt.Errorf("%s not listed invalid (invalid: %v)", filepath.Base(p), got)
				}
			}
			for f, why := range got {
				t.Logf("h4 invalid: %s: %s", f, why)
			}
			return nil
		})
		for _, nd := range c.nodes {
			var l control.Listing
			if err := nd.get("/v1/ls", &l); err != nil {
				t.Fatal(err)
			}
			for _, s := range l.Subservices {
				if strings.HasPrefix(s.Name, "evil") {
					t.Errorf("%s lists the hostile %s", nd.host.Name, s.Name)
				}
			}
		}
		if ents, _ := os.ReadDir(escape); len(ents) != 0 {
			t.Errorf("a hostile archive wrote outside: %v", ents)
		}
	})

	j.step("an impostor chat-go 9.0.0 (another signer) on h4 is never fetched; the pinned publisher's 1.2.0 still upgrades everyone", func() {
		running := map[*node]*watcher{}
		for _, nd := range []*node{h2, h4, h5} {
			waitRunning(t, nd, "chat-go")
			running[nd] = watch(t, nd)
		}
		drop(t, packChat(t, "chat-go", "9.0.0", publisherKey(t), t.TempDir()), h4.dist)
		j.everyNode(15*time.Second, "sees the impostor chat-go 9.0.0 offered by h4", func(nd *node) error {
			return newestIs(nd, map[string]string{"chat-go": "9.0.0"})
		})
		drop(t, packChat(t, "chat-go", "1.2.0", key, staging), h1.dist)
		for nd, w := range running {
			j.waitVersion(nd, "chat-go", "1.2.0")
			w.mu.Lock()
			for _, e := range w.events {
				if e.Type == control.EventProgress && e.Progress.Name == "chat-go" && e.Progress.Version == "9.0.0" ||
					e.Type == control.EventUpdateFailed && strings.Contains(e.Message, "9.0.0") {
					t.Errorf("%s tried the impostor: %+v %s", nd.host.Name, e.Progress, e.Message)
					break
				}
			}
			w.mu.Unlock()
		}
	})

	j.step("every node alive, nothing installed lost, every view converged", func() {
		for _, nd := range c.nodes {
			select {
			case <-nd.proc.Exited():
				t.Fatalf("%s: nearby up exited: %v", nd.host.Name, nd.proc.Wait())
			default:
			}
			if pid, ok := pids[nd]; ok && nd.proc.PID() != pid {
				t.Errorf("%s was restarted", nd.host.Name)
			}
			if strings.Contains(nd.proc.Stderr(), "panic:") {
				t.Errorf("%s panicked", nd.host.Name)
			}
		}
		waitFor(t, 30*time.Second, "full mesh", func() error { return c.fullMesh(c.nodes) })
		waitFor(t, 30*time.Second, "every node discovered every other", c.allDiscovered)
		installed := map[*node]map[string]string{
			h1: {"chat-py": "1.0.0"},
			h2: {"chat-go": "1.2.0", "crashy": "1.0.0", "bulk": "2.0.0"},
			h3: {"bulk": "2.0.0", "rev": "1.0.0"},
			h4: {"chat-go": "1.2.0"},
			h5: {"chat-go": "1.2.0"},
		}
		for nd, want := range installed {
			for name, v := range want {
				if s, err := lsEntry(nd, name); err != nil || s.Installed != v {
					t.Errorf("%s: %s installed %q (%v), want %s", nd.host.Name, name, s.Installed, err, v)
				}
			}
		}
		waitFor(t, 30*time.Second, "every node's ls agrees", func() error {
			var ref string
			for _, nd := range c.nodes {
				v, err := meshView(nd)
				if err != nil {
					return err
				}
				if ref == "" {
					ref = v
				} else if v != ref {
					return fmt.Errorf("%s sees\n%s\nh1 sees\n%s", nd.host.Name, v, ref)
				}
			}
			return nil
		})
	})
	t.Logf("journey under faults: %v in all", time.Since(j.start).Round(time.Millisecond))
}

// journey runs named steps and logs how long each took.
type journey struct {
	t     *testing.T
	c     *cluster
	start time.Time
}

func (j *journey) step(name string, f func()) {
	j.t.Helper()
	t0 := time.Now()
	f()
	j.t.Logf("step %-95s %6.1fs", name, time.Since(t0).Seconds())
}

// lossy puts the journey's packet loss on the nodes' links.
func (j *journey) lossy(nodes ...*node) {
	for _, nd := range nodes {
		if err := nd.host.Loss(journeyLoss); err != nil {
			j.t.Fatal(err)
		}
	}
}

// heal removes every fault from a node's link but the journey's loss.
func (j *journey) heal(nd *node) {
	if err := nd.host.Heal(); err != nil {
		j.t.Fatal(err)
	}
	j.lossy(nd)
}

// restart starts a killed node again on a healed (lossy) link, waits until
// it is back in the full mesh, and runs plugins again: a node does not
// restart what ran before it died, but what it installed is still there,
// so nothing is fetched.
func (j *journey) restart(nd *node, plugins ...string) {
	j.t.Helper()
	<-nd.proc.Exited()
	j.heal(nd)
	nd.start(nd.args...)
	waitFor(j.t, 30*time.Second, nd.host.Name+" back in the full mesh", func() error { return j.c.fullMesh(j.c.nodes) })
	for _, name := range plugins {
		if r := runPlugin(j.t, nd, name); r.Node != "" {
			j.t.Fatalf("%s: run %s after a restart fetched it again: %+v", nd.host.Name, name, r)
		}
		waitRunning(j.t, nd, name)
	}
}

// everyNode waits until f holds on every node.
func (j *journey) everyNode(timeout time.Duration, what string, f func(*node) error) {
	j.t.Helper()
	waitFor(j.t, timeout, "every node "+what, func() error {
		for _, nd := range j.c.nodes {
			if err := f(nd); err != nil {
				return fmt.Errorf("%s: %w", nd.host.Name, err)
			}
		}
		return nil
	})
}

// click clicks a plugin's menu item.
func (j *journey) click(nd *node, plugin, item string) {
	j.t.Helper()
	if err := nd.client().Post(j.t.Context(), "/v1/click", control.ClickRequest{Plugin: plugin, Item: item}, nil); err != nil {
		j.t.Fatalf("%s: click %s/%s: %v", nd.host.Name, plugin, item, err)
	}
}

// waitVersion waits until version of name runs on nd.
func (j *journey) waitVersion(nd *node, name, version string) control.Plugin {
	j.t.Helper()
	var p control.Plugin
	waitFor(j.t, 60*time.Second, name+" "+version+" running on "+nd.host.Name, func() error {
		var err error
		p, err = pluginStatus(nd, name)
		if err == nil && (p.Version != version || p.State != "running") {
			err = fmt.Errorf("%s %s (%s)", p.Version, p.State, p.LastExit)
		}
		return err
	})
	return p
}

// delivered waits until each receiver's chat-go printed each of chat-py's
// greetings #k from `from` exactly once, and `from` got each receiver's
// reply to each exactly once.
func (j *journey) delivered(from *node, to []*node, ks ...int) {
	j.t.Helper()
	sender := from.host.Name
	for _, nd := range to {
		waitFor(j.t, 20*time.Second, "greetings on "+nd.host.Name, func() error {
			log := pluginLog(j.t, nd, "chat-go")
			for _, k := range ks {
				if n := strings.Count(log, fmt.Sprintf("to all: hello #%d from %s", k, sender)); n != 1 {
					return fmt.Errorf("hello #%d seen %d times", k, n)
				}
			}
			return nil
		})
	}
	waitFor(j.t, 20*time.Second, "replies on "+sender, func() error {
		log := pluginLog(j.t, from, "chat-py")
		for _, nd := range to {
			for _, k := range ks {
				reply := fmt.Sprintf("%s got your \"hello #%d from %s\"", nd.host.Name, k, sender)
				if n := strings.Count(log, reply); n != 1 {
					return fmt.Errorf("%q seen %d times", reply, n)
				}
			}
		}
		return nil
	})
}

// newestIs checks what a node's ls says is the newest version of each
// subservice in want.
func newestIs(nd *node, want map[string]string) error {
	for name, v := range want {
		s, err := lsEntry(nd, name)
		if err != nil {
			return err
		}
		if s.Newest != v {
			return fmt.Errorf("%s newest %s, want %s", name, s.Newest, v)
		}
	}
	return nil
}

// meshView is a node's ls reduced to what every node must agree on: each
// subservice's newest version and offers (node, version, hash).
func meshView(nd *node) (string, error) {
	var l control.Listing
	if err := nd.get("/v1/ls", &l); err != nil {
		return "", err
	}
	var lines []string
	for _, s := range l.Subservices {
		var offers []string
		for _, o := range s.Offers {
			offers = append(offers, fmt.Sprintf("%s@%s:%.12s", o.Version, o.NodeName, o.SHA256))
		}
		slices.Sort(offers)
		lines = append(lines, fmt.Sprintf("%s newest %s: %s", s.Name, s.Newest, strings.Join(offers, " ")))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

// watcher collects a node's /v1/events stream.
type watcher struct {
	mu     sync.Mutex
	events []control.Event
	done   chan struct{}
	err    error
}

// watch follows a node's events until the test ends (or the node stops);
// it returns once the stream is subscribed.
func watch(t testing.TB, nd *node) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{done: make(chan struct{})}
	hello := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(w.done)
		err := nd.client().Stream(ctx, "/v1/events", nil, func(e control.Event) error {
			if e.Type == control.EventHello {
				once.Do(func() { close(hello) })
				return nil
			}
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
			return nil
		})
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	select {
	case <-hello:
	case <-w.done:
		t.Fatalf("%s: event stream: %v", nd.host.Name, w.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no hello on the event stream in 30 s", nd.host.Name)
	}
	return w
}

// wait waits until an event matching pred has arrived and returns it.
func (w *watcher) wait(t testing.TB, timeout time.Duration, what string, pred func(control.Event) bool) control.Event {
	t.Helper()
	var found control.Event
	waitFor(t, timeout, what, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, e := range w.events {
			if pred(e) {
				found = e
				return nil
			}
		}
		return fmt.Errorf("%d events so far, none matching", len(w.events))
	})
	return found
}

// packChat packs the example chat-go or chat-py as version.
func packChat(t testing.TB, name, version string, key ed25519.PrivateKey, outDir string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(repoRoot(t), "examples", name))); err != nil {
		t.Fatal(err)
	}
	if name == "chat-go" {
		b, err := os.ReadFile(netlab.Binary(t, "github.com/nearbymesh/nearby/examples/chat-go"))
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "chat-go"))
		if err := os.WriteFile(filepath.Join(dir, "chat-go"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	setManifest(t, dir, map[string]any{"version": version})
	p, err := distrib.Pack(dir, outDir, key)
	if err != nil {
		t.Fatalf("pack %s %s: %v", name, version, err)
	}
	return p
}

// setManifest changes fields of dir/nearby.json.
func setManifest(t testing.TB, dir string, fields map[string]any) {
	t.Helper()
	path := filepath.Join(dir, "nearby.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var man map[string]any
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	for k, v := range fields {
		man[k] = v
	}
	if b, err = json.MarshalIndent(man, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// helloPlugin is a shell-script plugin that says hello to its node (so it
// counts as running) and then waits until the node closes the socket.
const helloPlugin = `exec python3 -c '
import json, os, socket
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["NEARBY_SOCKET"])
s.sendall((json.dumps({"op": "hello", "token": os.environ["NEARBY_TOKEN"], "protocol": 1}) + "\n").encode())
print(os.environ["NEARBY_SUBSERVICE"], os.environ["NEARBY_VERSION"], "connected", flush=True)
while s.recv(65536):
    pass
'`

// packScript packs a local plugin whose command is a shell script running
// script, with extra files beside it, signed with key, into outDir.
func packScript(t testing.TB, outDir, name, version, script string, extra map[string][]byte, key ed25519.PrivateKey) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name+"-"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	man := fmt.Sprintf(`{"name":%q,"version":%q,"description":"test plugin","command":["./run.sh"],"mode":"local","protocol":1}`, name, version)
	files := map[string][]byte{"nearby.json": []byte(man), "run.sh": []byte("#!/bin/sh\n" + script + "\n")}
	for k, v := range extra {
		files[k] = v
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, err := distrib.Pack(dir, outDir, key)
	if err != nil {
		t.Fatalf("pack %s %s: %v", name, version, err)
	}
	return p
}

// hostileArchives writes archives that must never be served or installed:
// path traversal, an absolute path into escapeDir, a symlink leaving the
// tree, more entries than allowed, and garbage. Each has a valid manifest
// where it has one at all, so only its hostile part can get it refused.
func hostileArchives(t testing.TB, dir, escapeDir string) []string {
	t.Helper()
	type entry struct {
		hdr  tar.Header
		data string
	}
	manifest := func(name string) entry {
		m := fmt.Sprintf(`{"name":%q,"version":"1.0.0","command":["./run.sh"],"mode":"local","protocol":1}`, name)
		return entry{tar.Header{Name: "nearby.json", Mode: 0o644, Typeflag: tar.TypeReg}, m}
	}
	file := func(name, data string) entry {
		return entry{tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeReg}, data}
	}
	many := []entry{manifest("evil-many")}
	for i := range 10001 {
		many = append(many, file(fmt.Sprintf("f%05d", i), ""))
	}
	archives := map[string][]entry{
		"evil-dotdot": {manifest("evil-dotdot"), file("run.sh", "#!/bin/sh\n"), file("../../../../escape-dotdot", "x")},
		"evil-abs":    {manifest("evil-abs"), file("run.sh", "#!/bin/sh\n"), file(filepath.Join(escapeDir, "escape-abs"), "x")},
		"evil-link": {manifest("evil-link"), file("run.sh", "#!/bin/sh\n"),
			{tar.Header{Name: "out", Linkname: escapeDir, Typeflag: tar.TypeSymlink, Mode: 0o777}, ""},
			file("out/escape-link", "x")},
		"evil-many": many,
	}
	var paths []string
	for name, entries := range archives {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		for _, e := range entries {
			h := e.hdr
			h.Size = int64(len(e.data))
			h.Format = tar.FormatPAX
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		gz.Close()
		p := filepath.Join(dir, name+"-1.0.0.tar.gz")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	p := filepath.Join(dir, "evil-junk-1.0.0.tar.gz")
	if err := os.WriteFile(p, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	return append(paths, p)
}
