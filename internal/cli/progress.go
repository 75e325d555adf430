package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// PrintJSONLine writes v as one compact JSON line to stdout.
func (e *Env) PrintJSONLine(v any) error {
	return json.NewEncoder(e.Stdout).Encode(v)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// streamAction runs a fetch/run action and shows its progress: a bar on a
// terminal, nothing otherwise (or every event as a JSON line with --json).
func streamAction(ctx context.Context, env *Env, path string, req any) error {
	bar := newBar(env.Stderr)
	var res *control.Result
	err := env.Client().Stream(ctx, path, req, func(e control.Event) error {
		if env.JSON {
			if e.Type == control.EventError {
				return nil // reported by report()
			}
			return env.PrintJSONLine(e)
		}
		switch e.Type {
		case control.EventProgress:
			bar.update(e.Progress)
		case control.EventMessage:
			bar.clear()
			fmt.Fprintln(env.Stderr, e.Message)
		case control.EventResult:
			res = e.Result
		}
		return nil
	})
	bar.clear()
	if err != nil {
		return err
	}
	if res != nil && !env.JSON {
		if res.Pinned != "" {
			fmt.Fprintf(env.Stderr, "pinned publisher key %s for %s (first install); later versions must carry the same signature\n", res.Pinned, res.Name)
		}
		fmt.Fprintln(env.Stdout, res.Message)
	}
	return nil
}

// bar draws a one-line progress bar on a terminal.
type bar struct {
	w     io.Writer
	on    bool
	last  time.Time
	drawn bool
}

func newBar(w io.Writer) *bar { return &bar{w: w, on: isTerminal(w)} }

func (b *bar) update(p *control.Progress) {
	if !b.on || p == nil || (time.Since(b.last) < 100*time.Millisecond && p.Done != p.Total) {
		return
	}
	b.last = time.Now()
	const width = 30
	frac := 0.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r%s %s [%s%s] %3.0f%% %s/%s from %s ", p.Name, p.Version,
		strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, human(p.Done), human(p.Total), p.Node)
	b.drawn = true
}

func (b *bar) clear() {
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
		b.drawn = false
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
