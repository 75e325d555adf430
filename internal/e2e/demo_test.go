package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nearbymesh/nearby/internal/netlab"
)

// TestDemoTour runs `nearby demo --tour-only` as a newcomer would (from the
// source tree, as root) and checks every step of the tour happened.
func TestDemoTour(t *testing.T) {
	netlab.Require(t)
	requirePython(t)
	bin := netlab.BuildNearby(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo", "--tour-only", "--no-tray", "--examples", repoRoot(t)+"/examples")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nearby demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"every node found the 2 others",
		"chat-go    newest 1.0.0  on h2@1.0.0",
		"run on h3: installed chat-go 1.0.0 from h2",
		`h2 got your "hello #1 from h1"`,
		`h3 got your "hello #1 from h1"`,
		"restarted into 1.1.0",
		"tour done",
		"removing the virtual LAN",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
