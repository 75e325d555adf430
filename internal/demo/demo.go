// Package demo runs `nearby demo`: three hosts on a virtual LAN (network
// namespaces, internal/netlab), each running a real node, with the example
// plugins published on different hosts, and a guided tour of discovery,
// fetching, broadcast and auto-update. Nothing runs in the caller's network
// namespace: every node lives in a namespace the demo creates and removes.
package demo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/netlab"
	"github.com/nearbymesh/nearby/mesh"
)

// Config configures a demo run.
type Config struct {
	// Examples is the examples/ folder of the source tree.
	Examples string
	// Dir holds the hosts' state directories and logs; default a new
	// directory under the temporary directory, removed at the end unless
	// Keep is set.
	Dir  string
	Keep bool
	// TourOnly ends the demo after the tour instead of waiting for ctx.
	TourOnly bool
	// Tray starts a tray icon for h3 when a session bus is present.
	Tray bool
	// Out receives the narration.
	Out io.Writer
}

// host is one demo host and its node.
type host struct {
	h     *netlab.Host
	state string
	dist  string
	proc  *netlab.Proc
	c     *control.Client
}

// Run runs the demo until ctx is done (or the tour ends with TourOnly).
func Run(ctx context.Context, cfg Config) (err error) {
	out := cfg.Out
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := netlab.Available(); err != nil {
		return fmt.Errorf("demo: %w (the demo builds a virtual LAN of network namespaces: run it as root, e.g. sudo ./bin/nearby demo)", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Examples, "chat-py", "nearby.json")); err != nil {
		return fmt.Errorf("demo: example plugins not found in %s (run from the source tree or pass --examples DIR): %w", cfg.Examples, err)
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "nearby-demo-"); err != nil {
			return err
		}
		if !cfg.Keep {
			defer os.RemoveAll(cfg.Dir)
		}
	}
	say("== Nearby demo: 3 hosts on a virtual LAN (network namespaces; nothing touches your network)")
	lan, err := netlab.Create(3, netlab.WithLogDir(filepath.Join(cfg.Dir, "logs")))
	if err != nil {
		return fmt.Errorf("demo: build the virtual LAN: %w", err)
	}
	defer func() {
		say("== stopping the nodes and removing the virtual LAN")
		lan.Close()
	}()
	key, err := mesh.NewKey()
	if err != nil {
		return err
	}
	var hosts []*host
	for _, h := range lan.Hosts() {
		st := filepath.Join(cfg.Dir, h.Name)
		hs := &host{h: h, state: st, dist: filepath.Join(st, "dist"), c: control.NewClient(st)}
		if err := os.MkdirAll(hs.dist, 0o700); err != nil {
			return err
		}
		cmd := h.Command(exe, "up", "--state", st, "--name", h.Name, "--listen", ":7946", "--no-tray")
		cmd.Env = append(cmd.Env, "NEARBY_MESH_KEY="+key.String(), "NEARBY_CONFIG=/nonexistent")
		if hs.proc, err = h.StartCommand(cmd); err != nil {
			return err
		}
		hosts = append(hosts, hs)
		say("   %s: %s  node started (state %s)", h.Name, h.IPv4, st)
	}
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	t0 := time.Now()
	if err := wait(ctx, 20*time.Second, func() error { return fullMesh(ctx, hosts) }); err != nil {
		return fmt.Errorf("demo: the nodes did not connect: %w (logs in %s)", err, lan.LogDir())
	}
	say("== discovery: every node found the 2 others over mDNS and connected (TLS 1.3 + yamux) in %v", time.Since(t0).Round(time.Millisecond))

	_, priv, err := ed25519.GenerateKey(rand.Reader) // the demo's publisher key
	if err != nil {
		return err
	}
	staging := filepath.Join(cfg.Dir, "staging")
	pyArchive, err := pack(filepath.Join(cfg.Examples, "chat-py"), staging, "", priv)
	if err != nil {
		return err
	}
	goDir, goErr := buildChatGo(ctx, cfg.Examples, staging)
	var goV1 string
	if goErr == nil {
		goV1, err = pack(goDir, staging, "", priv)
		if err != nil {
			return err
		}
	} else {
		say("   (chat-go not built: %v; the tour goes on with the Python chat only)", goErr)
	}
	say("== publish: chat-py 1.0.0 dropped into h1's dist folder%s", map[bool]string{true: ", chat-go 1.0.0 into h2's", false: ""}[goV1 != ""])
	if err := publish(pyArchive, h1.dist); err != nil {
		return err
	}
	if goV1 != "" {
		if err := publish(goV1, h2.dist); err != nil {
			return err
		}
	}
	t0 = time.Now()
	if err := wait(ctx, 10*time.Second, func() error {
		if goV1 != "" {
			if err := listed(ctx, h3, "chat-go", "1.0.0"); err != nil {
				return err
			}
		}
		return listed(ctx, h3, "chat-py", "1.0.0")
	}); err != nil {
		return err
	}
	say("   h3 lists them after %v:", time.Since(t0).Round(time.Millisecond))
	if err := printLs(ctx, out, h3); err != nil {
		return err
	}

	chat := "chat-py"
	runners := []*host{h1, h2, h3}
	if goV1 != "" {
		chat = "chat-go"
		runners = []*host{h2, h3}
	}
	for _, hs := range runners {
		name := chat
		if hs == h1 {
			name = "chat-py"
		}
		res, err := run(ctx, hs, name)
		if err != nil {
			return fmt.Errorf("demo: run %s on %s: %w", name, hs.h.Name, err)
		}
		say("== run on %s: %s", hs.h.Name, res.Message)
	}
	if goV1 != "" {
		res, err := run(ctx, h1, "chat-py")
		if err != nil {
			return fmt.Errorf("demo: run chat-py on h1: %w", err)
		}
		say("== run on h1: %s", res.Message)
	}
	say("== broadcast: chat-py on h1 greets every node; the Go chats answer it directly")
	if err := wait(ctx, 15*time.Second, func() error {
		log, err := hs1Log(ctx, h1, "chat-py")
		if err != nil {
			return err
		}
		if goV1 != "" && (!strings.Contains(log, "h2 got your") || !strings.Contains(log, "h3 got your")) {
			return errors.New("no replies yet")
		}
		return nil
	}); err != nil {
		return err
	}
	log, _ := hs1Log(ctx, h1, "chat-py")
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		say("   h1 chat-py| %s", l)
	}

	if goV1 != "" {
		v2, err := pack(goDir, staging, "1.1.0", priv)
		if err != nil {
			return err
		}
		say("== auto-update: chat-go 1.1.0 dropped into h1's dist; h2 and h3 run 1.0.0")
		if err := publish(v2, h1.dist); err != nil {
			return err
		}
		t0 = time.Now()
		if err := wait(ctx, 20*time.Second, func() error {
			for _, hs := range []*host{h2, h3} {
				if err := running(ctx, hs, "chat-go", "1.1.0"); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		say("   h2 and h3 fetched, verified, installed and restarted into 1.1.0 after %v", time.Since(t0).Round(time.Millisecond))
	}

	var tray *exec.Cmd
	if cfg.Tray && os.Getenv("DBUS_SESSION_BUS_ADDRESS") != "" {
		tray = exec.CommandContext(ctx, exe, "tray", "--state", h3.state)
		tray.Stdout, tray.Stderr = io.Discard, io.Discard
		if err := tray.Start(); err == nil {
			say("== tray: an icon for h3 is in your panel")
			defer func() { tray.Process.Kill(); tray.Wait() }()
		}
	}

	say("\n== try it (in another terminal, as root):")
	for _, hs := range hosts {
		say("   %s peers --state %s     # or ls, ps, logs chat-py, run NAME, events", exe, hs.state)
	}
	say("   drop archives into %s/dist to publish on h1", h1.state)
	if cfg.TourOnly {
		say("== tour done")
		return nil
	}
	say("== Ctrl-C ends the demo")
	<-ctx.Done()
	return nil
}

func wait(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func fullMesh(ctx context.Context, hosts []*host) error {
	for _, hs := range hosts {
		var ps []control.Peer
		if err := hs.c.Get(ctx, "/v1/peers", &ps); err != nil {
			return err
		}
		if len(ps) != len(hosts)-1 {
			return fmt.Errorf("%s has %d peers", hs.h.Name, len(ps))
		}
	}
	return nil
}

func listed(ctx context.Context, hs *host, name, version string) error {
	var l control.Listing
	if err := hs.c.Get(ctx, "/v1/ls", &l); err != nil {
		return err
	}
	for _, s := range l.Subservices {
		if s.Name == name && s.Newest == version {
			return nil
		}
	}
	return fmt.Errorf("%s does not list %s %s yet", hs.h.Name, name, version)
}

func printLs(ctx context.Context, out io.Writer, hs *host) error {
	var l control.Listing
	if err := hs.c.Get(ctx, "/v1/ls", &l); err != nil {
		return err
	}
	for _, s := range l.Subservices {
		var where []string
		for _, o := range s.Offers {
			where = append(where, o.NodeName+"@"+o.Version)
		}
		fmt.Fprintf(out, "     %-10s newest %-6s on %s\n", s.Name, s.Newest, strings.Join(where, " "))
	}
	return nil
}

func run(ctx context.Context, hs *host, name string) (control.Result, error) {
	var res control.Result
	err := hs.c.Stream(ctx, "/v1/run", control.FetchRequest{Name: name}, func(e control.Event) error {
		if e.Type == control.EventResult && e.Result != nil {
			res = *e.Result
		}
		return nil
	})
	return res, err
}

func running(ctx context.Context, hs *host, name, version string) error {
	var ps []control.Plugin
	if err := hs.c.Get(ctx, "/v1/ps", &ps); err != nil {
		return err
	}
	for _, p := range ps {
		if p.Name == name && p.Version == version && p.State == "running" {
			return nil
		}
	}
	return fmt.Errorf("%s does not run %s %s yet", hs.h.Name, name, version)
}

func hs1Log(ctx context.Context, hs *host, name string) (string, error) {
	b, err := hs.c.GetText(ctx, "/v1/logs/"+name)
	return string(b), err
}

// buildChatGo copies examples/chat-go and builds its binary with the Go
// toolchain (the demo runs from a source tree).
func buildChatGo(ctx context.Context, examples, staging string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no Go toolchain in PATH")
	}
	dir := filepath.Join(staging, "chat-go-src")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(examples, "chat-go"))); err != nil {
		return "", err
	}
	os.Remove(filepath.Join(dir, "chat-go"))
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", filepath.Join(dir, "chat-go"), ".")
	cmd.Dir = filepath.Join(examples, "chat-go")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return dir, nil
}

// pack packs dir (with its manifest's version replaced by version, if set).
func pack(dir, outDir, version string, priv ed25519.PrivateKey) (string, error) {
	if version != "" {
		src := dir
		dir = filepath.Join(outDir, filepath.Base(src)+"-"+version)
		os.RemoveAll(dir)
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
			return "", err
		}
		mf := filepath.Join(dir, distrib.ManifestFile)
		b, err := os.ReadFile(mf)
		if err != nil {
			return "", err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return "", err
		}
		m["version"] = version
		b, _ = json.MarshalIndent(m, "", "  ")
		if err := os.WriteFile(mf, b, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	return distrib.Pack(dir, outDir, priv)
}

func publish(archive, dist string) error {
	_, err := distrib.Publish(archive, dist)
	return err
}
