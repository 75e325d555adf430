package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/netlab"
)

// busConfig is a private system bus that lets avahi-daemon own its name.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
`

const avahiConfig = `[server]
use-ipv4=yes
use-ipv6=yes
allow-interfaces=lan0
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
`

// avahiBrowse runs a private dbus-daemon and avahi-daemon on host, then
// `avahi-browse -rpt service` until ok accepts its output (or 15 s pass),
// and returns that output.
func avahiBrowse(t *testing.T, host *netlab.Host, service string, ok func(string) bool) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus.sock")
	busConf := filepath.Join(dir, "bus.conf")
	avahiConf := filepath.Join(dir, "avahi.conf")
	os.WriteFile(busConf, []byte(fmt.Sprintf(busConfig, sock)), 0o644)
	os.WriteFile(avahiConf, []byte(avahiConfig), 0o644)

	bus := exec.Command("dbus-daemon", "--config-file="+busConf, "--nofork", "--nopidfile")
	bus.Stderr = os.Stderr
	if err := bus.Start(); err != nil {
		t.Fatalf("dbus-daemon: %v", err)
	}
	t.Cleanup(func() { bus.Process.Kill(); bus.Wait() })
	waitFor(t, 5*time.Second, "private system bus", func() error {
		_, err := os.Stat(sock)
		return err
	})
	busAddr := "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + sock

	script := "mount -t tmpfs tmpfs /run && mkdir -p /run/avahi-daemon && exec avahi-daemon --no-chroot --no-rlimits --no-drop-root -f " + avahiConf
	cmd := host.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(cmd.Env, busAddr)
	avahi, err := host.StartCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { avahi.Stop(3 * time.Second) })

	var out string
	waitFor(t, 15*time.Second, "avahi-browse to list the node", func() error {
		select {
		case <-avahi.Exited():
			t.Fatalf("avahi-daemon exited: %v\n%s", avahi.Wait(), avahi.Stderr())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b := exec.CommandContext(ctx, "avahi-browse", "-rpt", service)
		b.Env = append(os.Environ(), busAddr)
		o, err := b.Output()
		out = string(o)
		if err != nil {
			return fmt.Errorf("avahi-browse: %v: %s", err, out)
		}
		if !ok(out) {
			return fmt.Errorf("not listed yet:\n%s", out)
		}
		return nil
	})
	return out
}
