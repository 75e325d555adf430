package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/node"
	"github.com/nearbymesh/nearby/internal/session"
)

func init() {
	var version string
	var verbose bool
	register(&command{
		name: "open", args: "NAME@NODE", short: "open a session on a hosted plugin; stdin and stdout are bridged to it",
		long: `
A hosted plugin runs on its host node only. Opening it starts a program of
its own for you there (a session): what you type goes to its stdin, what it
prints comes back on stdout. The session ends when stdin ends and the
program exits, when you press Ctrl-C, or when the host ends it (the plugin
stops or restarts, its limits are hit, the host shuts down); then the
reason is printed on stderr, and the exit status is 1 unless the session
ended normally (closed by you, or the program exited with status 0).
NODE is a node name, a node id or an id prefix (8+ characters).

Examples:
  nearby open rev@gpu-box
  echo hello | nearby open rev@gpu-box
  nearby open calc@desk --version 1.2.0 -v
`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&version, "version", "", "require this `version` of the plugin")
			fs.BoolVar(&verbose, "v", false, "say on stderr when the session opens and ends")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("want one NAME@NODE")
			}
			name, nodeName, ok := strings.Cut(fs.Arg(0), "@")
			if !ok || name == "" || nodeName == "" {
				return usagef("want NAME@NODE, e.g. rev@gpu-box (`nearby ls` shows where each plugin is hosted)")
			}
			return openSession(ctx, env, control.OpenRequest{Node: nodeName, Plugin: name, Version: version}, verbose || isTerminal(env.Stderr))
		},
	})

	var nodeFlag string
	var raw bool
	register(&command{
		name: "sessions", args: "[close ID | send ID DATA]", short: "list hosted sessions, or close or write to one",
		long: `
Without arguments, lists the hosted plugins this node serves, the sessions
it hosts (every presenter's) and the sessions opened from it, then those
that ended recently, with why.

Only the node that opened a session (its presenter's node) can write to it
or close it. ID may be a prefix of 8+ characters for a session opened from
this node; for a session this node does not know, give the full id and its
host with --node (the host refuses unless you are its presenter).
send appends a newline to DATA unless --raw is given.

Examples:
  nearby sessions
  nearby sessions --json | jq '.sessions[] | select(.state=="open")'
  nearby sessions send 3f2a9c41 'status'
  nearby sessions close 3f2a9c41
`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&nodeFlag, "node", "", "the session's host `node`, for a session not opened here")
			fs.BoolVar(&raw, "raw", false, "send DATA as is, without a newline")
		},
		run: func(ctx context.Context, env *Env, fs *flag.FlagSet) error {
			args := fs.Args()
			switch {
			case len(args) == 0 || len(args) == 1 && args[0] == "list":
				return listSessions(ctx, env)
			case len(args) == 2 && args[0] == "close":
				return postResult(ctx, env, "/v1/sessions/close", control.SessionRequest{Session: args[1], Node: nodeFlag})
			case len(args) == 3 && args[0] == "send":
				data := args[2]
				if !raw {
					data += "\n"
				}
				return postResult(ctx, env, "/v1/sessions/send", control.SessionRequest{Session: args[1], Node: nodeFlag, Data: []byte(data)})
			}
			return usagef("want no arguments, `close ID` or `send ID DATA`")
		},
	})
}

func listSessions(ctx context.Context, env *Env) error {
	var out control.Sessions
	if err := env.Client().Get(ctx, "/v1/sessions", &out); err != nil {
		return err
	}
	if env.JSON {
		return env.PrintJSON(out)
	}
	if len(out.Hosted) > 0 {
		tw := env.Table()
		fmt.Fprintln(tw, "HOSTED HERE\tVERSION\tSESSIONS\tIDLE TIMEOUT\tOUTPUT BUFFER")
		for _, h := range out.Hosted {
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", h.Name, h.Version, h.Sessions, h.MaxSessions, h.IdleTimeout, human(int64(h.OutputBuffer)))
		}
		tw.Flush()
		fmt.Fprintln(env.Stdout)
	}
	if len(out.Sessions) == 0 {
		fmt.Fprintln(env.Stdout, "no sessions")
		return nil
	}
	tw := env.Table()
	fmt.Fprintln(tw, "ID\tPLUGIN\tROLE\tHOST\tPRESENTER\tSTATE\tSTARTED\tIN\tOUT\tPID\tEND")
	for _, s := range out.Sessions {
		end := "-"
		if s.EndCode != "" {
			end = s.EndCode + ": " + s.EndReason
		}
		pid := "-"
		if s.PID != 0 {
			pid = fmt.Sprint(s.PID)
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID[:min(8, len(s.ID))], s.Plugin, s.Version, s.Role,
			s.Host.Name, s.Presenter.Name, s.State, s.Started.Format(time.TimeOnly), human(int64(s.BytesIn)), human(int64(s.BytesOut)), pid, end)
	}
	return tw.Flush()
}

// OpenSession asks the node whose control socket is socket to open a
// session, and returns it once the host has started its program.
func OpenSession(ctx context.Context, socket string, req control.OpenRequest) (*session.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w (socket %s); start one with `nearby up`, or pass --state/NEARBY_STATE", control.ErrNoNode, socket)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://nearby/v1/open", bytes.NewReader(body))
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", node.UpgradeSession)
	if err := hr.Write(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("control: POST /v1/open: %w", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, hr)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("control: POST /v1/open: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer c.Close()
		ae := &control.APIError{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &ae.Body) != nil || ae.Body.Error == "" {
			ae.Body.Error = fmt.Sprintf("POST /v1/open: %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return nil, ae
	}
	p, err := session.ReadAnswer(ctx, &readerConn{Conn: c, r: br}, 0)
	if err != nil {
		return nil, err
	}
	return p.Conn(), nil
}

// readerConn reads through the buffer that read the HTTP answer.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// openSession bridges a session to stdin and stdout until it ends.
func openSession(ctx context.Context, env *Env, req control.OpenRequest, verbose bool) error {
	octx, cancel := context.WithTimeout(ctx, 35*time.Second)
	conn, err := OpenSession(octx, env.Client().Socket, req)
	cancel()
	if err != nil {
		return err
	}
	info := conn.Info()
	if verbose {
		fmt.Fprintf(env.Stderr, "nearby: session %s open: %s %s on %s (Ctrl-C closes it)\n", info.Session, info.Plugin, info.Version, info.Host.Name)
	}
	stopped := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopped()
	if env.Stdin != nil {
		go func() {
			if _, err := io.Copy(conn, env.Stdin); err == nil {
				conn.CloseWrite()
			}
		}()
	}
	if _, err := io.Copy(env.Stdout, readerFunc(conn.Read)); err != nil {
		conn.Close() // stdout is gone: nobody reads the program any more
	}
	<-conn.Done()
	end, _ := conn.End()
	if end.Normal() {
		if verbose {
			fmt.Fprintf(env.Stderr, "nearby: session %s ended: %s\n", info.Session[:8], end.Reason)
		}
		return nil
	}
	return &sessionEnded{end: end, id: info.Session}
}

// sessionEnded is the error of a session that ended abnormally.
type sessionEnded struct {
	end session.End
	id  string
}

func (e *sessionEnded) Error() string {
	return fmt.Sprintf("session %s ended: %s [%s]", e.id[:8], e.end.Reason, e.end.Code)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }
