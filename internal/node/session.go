package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nearbymesh/nearby/distrib"
	"github.com/nearbymesh/nearby/internal/control"
	"github.com/nearbymesh/nearby/internal/session"
	"github.com/nearbymesh/nearby/internal/supervisor"
	"github.com/nearbymesh/nearby/mesh"
)

// UpgradeSession is the Upgrade token of POST /v1/open.
const UpgradeSession = "nearby-session"

// Timeouts of the session wiring.
const (
	sessionOpenTimeout = 30 * time.Second // POST /v1/open and plugin opens, end to end
	sessionCtlTimeout  = 10 * time.Second
	sessionStopWait    = 10 * time.Second // shutdown: presenters told, programs gone
)

// sessions is the node's part in hosted sessions: the Host runs the
// programs of sessions others open here, the Registry tracks those opened
// from here (by `nearby open` or by plugins).
type sessions struct {
	host     *session.Host
	reg      *session.Registry
	wg       sync.WaitGroup // relays and local streams
	stopping atomic.Bool    // the node is shutting down
}

// initSessions builds the session host and registry; run calls it before
// the mesh exists (the mesh's handlers point here).
func (n *Node) initSessions() error {
	self := session.Peer{ID: string(n.id.ID), Name: n.cfg.Name}
	h, err := session.NewHost(session.Config{
		Self:      self,
		LogDir:    filepath.Join(n.cfg.StateDir, "logs"),
		NotServed: n.notServed,
		OnChange:  n.sessionChanged,
		Logger:    n.log,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.sess = &sessions{host: h, reg: session.NewRegistry(0, n.sessionChanged)}
	return nil
}

// serveSession is the mesh handler of the "session" service.
func (n *Node) serveSession(from mesh.NodeID, c net.Conn) {
	n.sess.host.HandleStream(n.peerOf(from), c)
}

// serveSessionCtl is the mesh handler of the "session-ctl" service.
func (n *Node) serveSessionCtl(from mesh.NodeID, c net.Conn) {
	n.sess.host.HandleCtl(n.peerOf(from), c)
}

// sessionsPeerDown ends the sessions a departed node presented here.
func (n *Node) sessionsPeerDown(id mesh.NodeID, name string) {
	n.sess.host.PeerDown(string(id), name)
}

// sessionsFirst returns the context the mesh runs under: it ends once ctx
// has and every session has been ended, so that presenters hear why (a
// bye would race the end frames) and hosts hear our closes.
func (n *Node) sessionsFirst(ctx context.Context) context.Context {
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() {
		defer cancel()
		n.sess.stopping.Store(true)
		var wg sync.WaitGroup
		wg.Go(func() { n.sess.reg.CloseAll(sessionStopWait) })
		wg.Go(n.sess.host.Close)
		wg.Wait()
		done := make(chan struct{})
		go func() { n.sess.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(sessionStopWait):
			n.log.Warn("sessions still closing at shutdown")
		}
	})
	return mctx
}

func (n *Node) sessionChanged(in session.Info) {
	s := sessionOf(in)
	n.hub.publish(control.Event{Type: control.EventSession, Session: &s})
}

func sessionOf(in session.Info) control.Session {
	s := control.Session{
		ID: in.ID, Plugin: in.Plugin, Version: in.Version, Role: in.Role,
		Host:      control.Node{ID: in.Host.ID, Name: in.Host.Name},
		Presenter: control.Node{ID: in.Presenter.ID, Name: in.Presenter.Name},
		Owner:     in.Owner, State: in.State, Started: in.Started, LastActive: in.LastActive,
		PID: in.PID, BytesIn: in.BytesIn, BytesOut: in.BytesOut,
	}
	if in.End != nil {
		t := in.Ended
		s.Ended, s.EndCode, s.EndReason, s.Exit = &t, in.End.Code, in.End.Reason, in.End.Exit
	}
	return s
}

// sessionRoutes adds the session endpoints to the control API.
func (n *Node) sessionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/sessions", n.handleSessions)
	mux.HandleFunc("POST /v1/open", n.handleOpen)
	mux.HandleFunc("POST /v1/sessions/send", n.handleSessionCtl)
	mux.HandleFunc("POST /v1/sessions/close", n.handleSessionCtl)
}

func (n *Node) handleSessions(w http.ResponseWriter, r *http.Request) {
	out := control.Sessions{Hosted: []control.HostedPlugin{}, Sessions: []control.Session{}}
	for _, s := range n.sess.host.Served() {
		out.Hosted = append(out.Hosted, control.HostedPlugin{Name: s.Name, Version: s.Version, Since: s.Since, Sessions: s.Sessions,
			MaxSessions: s.Limits.MaxSessions, IdleTimeout: s.Limits.IdleTimeout.String(), OutputBuffer: s.Limits.OutputBuffer})
	}
	for _, in := range n.sess.host.Sessions() {
		out.Sessions = append(out.Sessions, sessionOf(in))
	}
	for _, in := range n.sess.reg.List() {
		out.Sessions = append(out.Sessions, sessionOf(in))
	}
	control.WriteJSON(w, 200, out)
}

// isSelf reports whether s names this node.
func (n *Node) isSelf(s string) bool {
	id := string(n.id.ID)
	return s == id || s == n.cfg.Name || (len(s) >= 8 && strings.HasPrefix(id, s))
}

// sessionStream opens a stream to service on node (a name, id or id
// prefix). For this node itself it is an in-process pipe to our own host.
func (n *Node) sessionStream(ctx context.Context, node, service string) (net.Conn, session.Peer, error) {
	self := session.Peer{ID: string(n.id.ID), Name: n.cfg.Name}
	if n.isSelf(node) {
		a, b := net.Pipe()
		n.sess.wg.Go(func() {
			if service == session.CtlService {
				n.sess.host.HandleCtl(self, b)
			} else {
				n.sess.host.HandleStream(self, b)
			}
		})
		return a, self, nil
	}
	id, err := n.resolvePeer(node)
	if err != nil {
		return nil, session.Peer{}, noPeerError{err}
	}
	p := n.peerOf(id)
	c, err := n.mesh.OpenStream(ctx, id, service)
	if errors.Is(err, mesh.ErrUnknownService) {
		return nil, p, fmt.Errorf("node %s does not run sessions (an older nearby?): %w", p.Name, err)
	}
	return c, p, err
}

// noPeerError is a node name that names no connected peer; it is also
// supervisor.ErrNoPeer, so that plugins get the no-peer code.
type noPeerError struct{ err error }

func (e noPeerError) Error() string   { return e.err.Error() }
func (e noPeerError) Unwrap() []error { return []error{e.err, supervisor.ErrNoPeer} }

// openSession opens a session of plugin on node and returns it pending.
func (n *Node) openSession(ctx context.Context, node, plugin, version string) (*session.Pending, error) {
	c, host, err := n.sessionStream(ctx, node, session.Service)
	if err != nil {
		return nil, err
	}
	p, err := session.Handshake(ctx, c, session.Request{Plugin: plugin, Version: version}, sessionOpenTimeout)
	if err != nil {
		var re *session.RefusedError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, fmt.Errorf("open %s on %s: %w", plugin, host.Name, err)
	}
	return p, nil
}

// refusalStatus maps a host's refusal to an HTTP status.
func refusalStatus(err error) int {
	var re *session.RefusedError
	if !errors.As(err, &re) {
		return http.StatusBadGateway
	}
	switch re.Code {
	case session.RefuseNotHosted:
		return http.StatusNotFound
	case session.RefuseLimit, session.RefuseBusy:
		return http.StatusTooManyRequests
	case session.RefuseShutdown:
		return http.StatusServiceUnavailable
	case session.RefuseNotPresenter:
		return http.StatusForbidden
	case session.RefuseBadRequest:
		return http.StatusBadRequest
	}
	return http.StatusConflict
}

// handleOpen opens a session for `nearby open`: on success the connection
// is upgraded and relayed, frame for frame, to the host's stream.
func (n *Node) handleOpen(w http.ResponseWriter, r *http.Request) {
	var req control.OpenRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	if err := distrib.ValidName(req.Plugin); err != nil {
		control.WriteError(w, 400, err, "open NAME@NODE, e.g. rev@gpu-box")
		return
	}
	if req.Node == "" {
		control.WriteError(w, 400, errors.New("no node: a hosted plugin is opened on its host"), "open NAME@NODE; `nearby ls` shows where each plugin is")
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), UpgradeSession) {
		control.WriteError(w, 400, errors.New("POST /v1/open upgrades the connection to a session stream"), "send Connection: Upgrade and Upgrade: "+UpgradeSession)
		return
	}
	n.sess.wg.Add(1)
	defer n.sess.wg.Done()
	ctx, cancel := context.WithTimeout(r.Context(), sessionOpenTimeout)
	p, err := n.openSession(ctx, req.Node, req.Plugin, req.Version)
	cancel()
	if err != nil {
		status, hint := refusalStatus(err), ""
		var re *session.RefusedError
		if errors.As(err, &re) {
			hint = re.Hint
			err = errors.New(re.Refusal.Error)
		} else if strings.Contains(err.Error(), "no connected peer") {
			status, hint = http.StatusNotFound, "`nearby peers` lists the connected nodes"
		}
		control.WriteError(w, status, err, hint)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.Abandon()
		control.WriteError(w, 500, err, "")
		return
	}
	conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + UpgradeSession + "\r\n\r\n"); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		p.Abandon()
		conn.Close()
		return
	}
	var local net.Conn = conn
	if brw.Reader.Buffered() > 0 {
		local = &bufferedConn{Conn: conn, r: brw.Reader}
	}
	relay := p.Relay(local)
	ran := make(chan struct{})
	in := session.Info{ID: p.Opened.Session, Plugin: p.Opened.Plugin, Version: p.Opened.Version, Host: p.Opened.Host,
		Presenter: session.Peer{ID: string(n.id.ID), Name: n.cfg.Name}, Owner: "cli", Started: time.Now()}
	ended := n.sess.reg.Add(in, func() {
		if n.sess.stopping.Load() {
			relay.CloseWith(session.End{Code: session.CodeShutdown, Reason: fmt.Sprintf("the presenter's node %s is shutting down", n.cfg.Name)})
		} else {
			relay.Close()
		}
		<-ran
	}, relay.Counts)
	end := relay.Run()
	close(ran)
	ended(end)
}

// bufferedConn reads what the HTTP server buffered before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// handleSessionCtl writes to or closes a session. Only its presenter's
// node may: for a session opened from here the request goes to its host
// (which checks it), for one that is not ours it goes to the node named in
// the request, which refuses it unless we present it.
func (n *Node) handleSessionCtl(w http.ResponseWriter, r *http.Request) {
	var req control.SessionRequest
	if err := control.ReadJSON(r, &req); err != nil {
		control.WriteError(w, 400, err, "")
		return
	}
	op := session.CtlWrite
	if strings.HasSuffix(r.URL.Path, "/close") {
		op = session.CtlClose
	}
	if req.Session == "" {
		control.WriteError(w, 400, errors.New("no session id"), "`nearby sessions` lists them")
		return
	}
	if op == session.CtlWrite && len(req.Data) == 0 {
		control.WriteError(w, 400, errors.New("nothing to send"), "")
		return
	}
	if len(req.Data) > session.MaxFrame/2 {
		control.WriteError(w, 400, fmt.Errorf("%d bytes in one write, at most %d", len(req.Data), session.MaxFrame/2), "send less at a time, or use `nearby open`")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), sessionCtlTimeout)
	defer cancel()
	var hostName, node, id string
	if in, err := n.sess.reg.Find(req.Session); err == nil {
		id, hostName, node = in.ID, in.Host.Name, in.Host.ID
		if op == session.CtlClose {
			n.sess.reg.Close(id) // through our own stream; returns once ended
			control.WriteJSON(w, 200, control.Result{OK: true, Message: fmt.Sprintf("closed session %s (%s on %s)", id[:8], in.Plugin, hostName)})
			return
		}
	} else if hs, ok := n.sess.host.Session(req.Session); ok && hs.Presenter.ID != string(n.id.ID) {
		control.WriteError(w, 403, fmt.Errorf("session %s is presented by node %s: only that node can write to it or close it", hs.ID[:8], hs.Presenter.Name),
			fmt.Sprintf("`nearby stop %s` here ends all of its sessions", hs.Plugin))
		return
	} else if req.Node != "" {
		if !session.ValidID(req.Session) {
			control.WriteError(w, 400, fmt.Errorf("%q is not a session id (32 hex digits)", req.Session), "")
			return
		}
		id, node, hostName = req.Session, req.Node, req.Node
	} else {
		control.WriteError(w, 404, err, "`nearby sessions` lists the sessions opened from this node; for another, pass --node HOST")
		return
	}
	c, host, err := n.sessionStream(ctx, node, session.CtlService)
	if err != nil {
		control.WriteError(w, 502, err, "")
		return
	}
	if host.Name != "" {
		hostName = host.Name
	}
	if err := session.Control(ctx, c, session.CtlRequest{Op: op, Session: id, Data: req.Data}, sessionCtlTimeout); err != nil {
		var re *session.RefusedError
		if errors.As(err, &re) {
			control.WriteError(w, refusalStatus(err), fmt.Errorf("%s refused: %s", hostName, re.Refusal.Error), re.Hint)
			return
		}
		control.WriteError(w, 502, err, "")
		return
	}
	msg := fmt.Sprintf("sent %d bytes to session %s on %s", len(req.Data), id[:8], hostName)
	if op == session.CtlClose {
		msg = fmt.Sprintf("closed session %s on %s", id[:8], hostName)
	}
	control.WriteJSON(w, 200, control.Result{OK: true, Count: len(req.Data), Message: msg})
}

// notServed explains a refused open of a plugin this node does not serve.
func (n *Node) notServed(plugin string) session.Refusal {
	self := n.cfg.Name
	var hosts []string
	here := false
	for _, o := range n.offers() {
		if o.entry.Name != plugin || o.entry.Mode != distrib.ModeHosted {
			continue
		}
		if o.local {
			here = true
		} else if !containsStr(hosts, o.nodeName) {
			hosts = append(hosts, o.nodeName)
		}
	}
	switch {
	case here:
		return session.Refusal{Error: fmt.Sprintf("%s is hosted on %s but not running", plugin, self),
			Hint: fmt.Sprintf("on %s, `nearby run %s` starts it", self, plugin)}
	case len(hosts) > 0:
		sort.Strings(hosts)
		return session.Refusal{Error: fmt.Sprintf("%s does not host %s; %s does", self, plugin, strings.Join(hosts, ", ")),
			Hint: fmt.Sprintf("`nearby open %s@%s`", plugin, hosts[0])}
	}
	return session.Refusal{Error: fmt.Sprintf("%s does not host %s", self, plugin), Hint: "`nearby ls` shows which plugins exist and where"}
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// hostedFetch answers fetch and run of a hosted plugin. On its host the
// plugin is installed from this node's own dist folder (never from a peer)
// and, for run, served; elsewhere the request is refused with the way to
// open it. It reports whether it answered (false: not a hosted plugin).
func (n *Node) hostedFetch(w http.ResponseWriter, req control.FetchRequest, run bool) bool {
	var local []distrib.IndexEntry
	var hosts []string
	other := false
	for _, o := range n.offers() {
		switch {
		case o.entry.Name != req.Name:
		case o.entry.Mode != distrib.ModeHosted:
			other = true
		case o.local:
			local = append(local, o.entry)
		case !containsStr(hosts, o.nodeName):
			hosts = append(hosts, o.nodeName)
		}
	}
	if len(local) == 0 {
		if len(hosts) == 0 || other {
			return false
		}
		sort.Strings(hosts)
		control.WriteError(w, http.StatusConflict,
			fmt.Errorf("%s is hosted on %s: use `nearby open %s@%s`", req.Name, strings.Join(hosts, ", "), req.Name, hosts[0]),
			"a hosted plugin runs on its host only; everyone who opens it gets a session of their own there")
		return true
	}
	e, ok := distrib.Newest(local, req.Name, req.Version, req.Pre)
	if !ok {
		control.WriteError(w, 404, fmt.Errorf("no version of hosted plugin %s matching %q in this node's dist folder", req.Name, req.Version), "")
		return true
	}
	s := control.NewStream(w)
	inst, fetched, err := n.installHosted(e, req.Downgrade)
	if err != nil {
		s.Send(control.Event{Type: control.EventError, Error: &control.Error{Error: err.Error(), Hint: fetchHint(err)}})
		return true
	}
	res := control.Result{OK: true, Name: inst.Name, Version: inst.Version, Node: n.cfg.Name}
	res.Message = fmt.Sprintf("%s %s is installed (hosted here)", inst.Name, inst.Version)
	if fetched {
		res.Message = fmt.Sprintf("installed hosted plugin %s %s from this node's dist folder", inst.Name, inst.Version)
		if inst.NewPin {
			res.Pinned = inst.Signer
		}
	}
	if run {
		ended, err := n.serveHosted(inst)
		if err != nil {
			s.Send(control.Event{Type: control.EventError, Error: &control.Error{Error: err.Error(), Hint: "`nearby logs " + req.Name + "` shows its sessions' output"}})
			return true
		}
		res.Message += fmt.Sprintf("; serving sessions: others open it with `nearby open %s@%s`", inst.Name, n.cfg.Name)
		n.rememberRun(inst.Name, true)
		if ended > 0 {
			res.Message += fmt.Sprintf(" (%d sessions of the previous version ended)", ended)
		}
	}
	s.Send(control.Event{Type: control.EventResult, Result: &res})
	return true
}

// installHosted installs a hosted archive from our dist folder, unless it
// is the current version already.
func (n *Node) installHosted(e distrib.IndexEntry, downgrade bool) (inst *distrib.Installed, fetched bool, err error) {
	if cur, ok := n.store.Current(e.Name); ok && cur.SHA256 == e.SHA256 {
		return cur, false, nil
	}
	done, wait := n.claim(e.Name)
	if wait != nil {
		<-wait
		if done, wait = n.claim(e.Name); wait != nil {
			return nil, false, fmt.Errorf("%s: another install is in progress", e.Name)
		}
	}
	defer done()
	inst, err = n.store.Install(filepath.Join(n.cfg.DistDir, e.File), distrib.InstallOptions{
		AllowDowngrade: downgrade, Trust: n.trust, Origin: distrib.OriginLocal,
	})
	if err != nil {
		return nil, false, fmt.Errorf("install %s %s: %w", e.Name, e.Version, err)
	}
	n.log.Info("installed hosted plugin", "plugin", inst.Name, "version", inst.Version)
	return inst, true, nil
}

// serveHosted serves the sessions of an installed hosted plugin; sessions
// of another version end.
func (n *Node) serveHosted(inst *distrib.Installed) (ended int, err error) {
	argv := inst.Manifest.Argv(runtime.GOOS)
	if len(argv) == 0 {
		return 0, fmt.Errorf("%s %s: the manifest has no command for %s", inst.Name, inst.Version, runtime.GOOS)
	}
	spec := session.Spec{Name: inst.Name, Version: inst.Version, Dir: inst.Dir, Argv: argv}
	if l := inst.Manifest.Sessions; l != nil {
		spec.Limits = session.Limits{MaxSessions: l.MaxSessions, IdleTimeout: l.Idle(), OutputBuffer: l.OutputBuffer}
	}
	ended, err = n.sess.host.Serve(spec)
	if err == nil {
		n.log.Info("serving hosted plugin", "plugin", inst.Name, "version", inst.Version, "sessions_ended", ended)
		n.hub.publish(control.Event{Type: control.EventMessage, Message: fmt.Sprintf("serving hosted plugin %s %s", inst.Name, inst.Version)})
	}
	return ended, err
}

// hostedStop answers `nearby stop` for a hosted plugin served here.
func (n *Node) hostedStop(w http.ResponseWriter, name string) bool {
	ended, err := n.sess.host.Stop(name)
	if errors.Is(err, session.ErrNotServed) {
		return false
	}
	if err != nil {
		control.WriteError(w, 500, err, "")
		return true
	}
	n.log.Info("stopped hosted plugin", "plugin", name, "sessions_ended", ended)
	n.forgetRun(name)
	control.WriteJSON(w, 200, control.Result{OK: true, Name: name, Count: ended,
		Message: fmt.Sprintf("stopped %s; %d sessions ended", name, ended)})
	return true
}

// hostedRunning returns the version of a hosted plugin served here.
func (n *Node) hostedRunning(name string) (string, bool) { return n.sess.host.Serving(name) }

// updateHosted restarts every served hosted plugin into a newer version
// that appeared in our dist folder; its old sessions end, new ones get the
// new version at once.
func (n *Node) updateHosted() {
	for _, srv := range n.sess.host.Served() {
		var local []distrib.IndexEntry
		for _, e := range n.dist.Index().Entries {
			if e.Name == srv.Name && e.Mode == distrib.ModeHosted {
				local = append(local, e)
			}
		}
		e, ok := distrib.Newest(local, srv.Name, "", false)
		if !ok || distrib.Compare(e.Version, srv.Version) <= 0 {
			continue
		}
		inst, _, err := n.installHosted(e, false)
		if err == nil {
			_, err = n.serveHosted(inst)
		}
		if err != nil {
			n.log.Warn("hosted plugin not updated; the running version stays", "plugin", srv.Name, "running", srv.Version, "err", err)
			n.hub.publish(control.Event{Type: control.EventUpdateFailed, Message: fmt.Sprintf("update of hosted %s failed: %v", srv.Name, err)})
		}
	}
}

// sessionOpener opens sessions for plugins (supervisor.SessionOpener).
type sessionOpener struct{ n *Node }

// OpenSession opens a session on plugin at node to for the local plugin
// owner and records it in the registry until it ends.
func (o sessionOpener) OpenSession(ctx context.Context, owner, to, plugin, version string) (*session.Conn, error) {
	n := o.n
	p, err := n.openSession(ctx, to, plugin, version)
	if err != nil {
		return nil, err
	}
	conn := p.Conn()
	in := session.Info{ID: p.Opened.Session, Plugin: p.Opened.Plugin, Version: p.Opened.Version, Host: p.Opened.Host,
		Presenter: session.Peer{ID: string(n.id.ID), Name: n.cfg.Name}, Owner: "plugin " + owner, Started: time.Now()}
	ended := n.sess.reg.Add(in, func() { conn.Close() }, conn.Counts)
	n.sess.wg.Go(func() {
		<-conn.Done()
		e, _ := conn.End()
		ended(e)
	})
	return conn, nil
}
