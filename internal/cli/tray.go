package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/tray"
)

// TrayBinary is the name of the tray program (cmd/nearby-tray). It is a
// separate binary so that the node never links the tray's GUI libraries
// (cmd/nearby/deps_test.go checks) and a tray crash never touches the node.
const TrayBinary = "nearby-tray"

// Tray restarts after crashes: at most trayMaxRestarts in a row, the delay
// doubling from trayRestartDelay; a run that lasted trayStableRun resets
// the count.
const (
	trayMaxRestarts  = 5
	trayRestartDelay = time.Second
	trayStableRun    = time.Minute
	trayExitNoBus    = 3 // nearby-tray's exit status without a session bus
)

// ErrNoTrayBinary is returned when nearby-tray cannot be found.
var ErrNoTrayBinary = errors.New("cli: " + TrayBinary + " not found")

func init() {
	register(&command{
		name:  "tray",
		short: "show this node's menu in the desktop tray",
		long: `
Runs the tray icon (the ` + TrayBinary + ` program) for the node of the state
directory: the subservices of the whole mesh (pick one to run it here), the
running plugins with their own menu items, and the peers. It needs a desktop
session bus (DBUS_SESSION_BUS_ADDRESS). ` + "`nearby up`" + ` starts it by itself when
there is one, unless --no-tray; use this command after Quit, or for a node
started elsewhere. ` + TrayBinary + ` is looked for next to the nearby executable,
then in PATH.

Examples:
  nearby tray
  nearby tray --state ~/.local/state/nearby-2
`,
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() > 0 {
				return usagef("unexpected argument %q", fs.Arg(0))
			}
			bin, err := findTrayBinary()
			if err != nil {
				return err
			}
			if _, err := tray.SessionBus(ctx); err != nil {
				return err
			}
			argv := trayArgs(env.State, fs)
			env.Log.Debug("exec tray", "bin", bin, "args", argv[1:])
			if err := syscall.Exec(bin, argv, os.Environ()); err != nil {
				return fmt.Errorf("exec %s: %w", bin, err)
			}
			return nil
		},
	})
}

// trayArgs is the command line of nearby-tray for a state directory.
func trayArgs(state string, fs *flag.FlagSet) []string {
	argv := []string{TrayBinary, "--state", state}
	if f := fs.Lookup("log-level"); f != nil {
		argv = append(argv, "--log-level", f.Value.String())
	}
	return argv
}

// findTrayBinary looks for nearby-tray next to the running executable,
// then in PATH.
func findTrayBinary() (string, error) {
	exe, err := os.Executable()
	if err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		p := filepath.Join(filepath.Dir(exe), TrayBinary)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(TrayBinary); err == nil {
		return p, nil
	}
	where := "next to the nearby executable"
	if exe != "" {
		where = "in " + filepath.Dir(exe)
	}
	return "", fmt.Errorf("%w %s or in PATH; build it beside nearby with `go build -o %s ./cmd/%s`",
		ErrNoTrayBinary, where, filepath.Join(filepath.Dir(exe), TrayBinary), TrayBinary)
}

// StartTray returns the Ready callback of `nearby up`: it calls next (if
// set), then, unless noTray, starts the tray as a child process. Without a
// desktop session bus, or without the nearby-tray binary, it logs once and
// the node runs headless. The child talks only to the control socket; it
// gets SIGTERM when ctx is done and dies with the node (Pdeathsig); a crash
// is logged and the tray restarted with backoff (a few times in a row at
// most), and it never affects the node. A tray that exits cleanly (the user
// picked Quit) stays closed: `nearby tray` opens it again.
func StartTray(ctx context.Context, env *Env, noTray bool, next func(control.Status)) func(control.Status) {
	var once sync.Once
	return func(st control.Status) {
		if next != nil {
			next(st)
		}
		if noTray {
			return
		}
		// In a goroutine: the node calls Ready on its own path and must
		// not wait for a bus that is slow to answer.
		once.Do(func() {
			go func() {
				if _, err := tray.SessionBus(ctx); err != nil {
					env.Log.Info("no desktop session bus: running headless (no tray icon)", "why", err.Error())
					return
				}
				bin, err := findTrayBinary()
				if err != nil {
					env.Log.Warn("no tray icon", "err", err.Error())
					return
				}
				level := "info"
				if env.Log.Enabled(ctx, slog.LevelDebug) {
					level = "debug"
				}
				superviseTray(ctx, env.Log, bin, []string{"--state", st.StateDir, "--log-level", level})
			}()
		})
	}
}

// superviseTray runs the tray until ctx is done, restarting it after
// crashes. It keeps its OS thread for as long as it runs: Linux sends the
// parent-death signal when the *thread* that forked the child exits, not
// the process, and the runtime may retire an unlocked thread at any time.
// (Not unlocked: when this goroutine ends, its thread ends with it; every
// child it started has exited by then.)
func superviseTray(ctx context.Context, log *slog.Logger, bin string, args []string) {
	runtime.LockOSThread()
	delay := trayRestartDelay
	for restarts := 0; ctx.Err() == nil; restarts++ {
		start := time.Now()
		pid, err := runTray(ctx, bin, args)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			log.Info("tray closed; `nearby tray` opens it again", "pid", pid)
			return
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == trayExitNoBus {
			log.Info("tray: no desktop session bus any more; running headless", "pid", pid)
			return
		}
		if time.Since(start) > trayStableRun {
			restarts, delay = 0, trayRestartDelay
		}
		if restarts >= trayMaxRestarts {
			log.Warn("tray keeps failing; giving up (the node runs on; `nearby tray` retries)", "pid", pid, "err", err.Error())
			return
		}
		log.Warn("tray failed; restarting it (the node is not affected)", "pid", pid, "err", err.Error(), "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay *= 2
	}
}

// runTray runs the tray once and returns its pid and exit error; on
// cancel it sends SIGTERM, then SIGKILL after 5 s.
func runTray(ctx context.Context, bin string, args []string) (int, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return pid, err
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return pid, err
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			return pid, <-done
		}
	}
}
