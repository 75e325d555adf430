package control

import "time"

// Node names a node of the mesh.
type Node struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Status is the answer to GET /v1/status.
type Status struct {
	Node      Node      `json:"node"`
	MeshID    string    `json:"mesh_id"`
	Listen    string    `json:"listen"`
	StateDir  string    `json:"state_dir"`
	DistDir   string    `json:"dist_dir"`
	Peers     int       `json:"peers"`
	Plugins   int       `json:"plugins_running"`
	Started   time.Time `json:"started"`
	Version   string    `json:"version"`
	Discovery bool      `json:"discovery"`
	DistHTTP  string    `json:"dist_http,omitempty"`
}

// Peer is one connected peer, as in GET /v1/peers.
type Peer struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Addr        string    `json:"addr"`
	Dialed      bool      `json:"dialed"`
	Since       time.Time `json:"since"`
	RTTMillis   float64   `json:"rtt_ms"`
	Subservices int       `json:"subservices"`
	Sent        uint64    `json:"sent"`
	Received    uint64    `json:"received"`
	Dropped     uint64    `json:"dropped"`
}

// Offer is one node offering one version of a subservice.
type Offer struct {
	Node     string `json:"node"`
	NodeName string `json:"node_name"`
	Version  string `json:"version"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Signer   string `json:"signer,omitempty"`
	Local    bool   `json:"local,omitempty"`
}

// Subservice is one subservice known on the mesh, as in GET /v1/ls.
type Subservice struct {
	Name        string `json:"name"`
	Newest      string `json:"newest"`
	Mode        string `json:"mode"`
	Label       string `json:"label,omitempty"`
	Description string `json:"description,omitempty"`
	// Local is the newest version in this node's own dist folder, if any.
	Local string `json:"local,omitempty"`
	// Installed is the version installed on this node, if any.
	Installed string `json:"installed,omitempty"`
	// Running is the version running on this node, if any.
	Running string `json:"running,omitempty"`
	// UpdateAvailable is true when Installed is set and Newest is newer.
	UpdateAvailable bool    `json:"update_available"`
	Offers          []Offer `json:"offers"`
}

// Invalid is an archive in the dist folder that is not served, and why.
type Invalid struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// Listing is the answer to GET /v1/ls.
type Listing struct {
	Subservices []Subservice `json:"subservices"`
	Invalid     []Invalid    `json:"invalid"`
}

// Plugin is one supervised plugin, as in GET /v1/ps.
type Plugin struct {
	Name     string     `json:"name"`
	Version  string     `json:"version"`
	State    string     `json:"state"`
	PID      int        `json:"pid,omitempty"`
	Restarts int        `json:"restarts"`
	Since    time.Time  `json:"since"`
	LastExit string     `json:"last_exit,omitempty"`
	Dropped  uint64     `json:"dropped"`
	Menu     []MenuItem `json:"menu,omitempty"`
}

// MenuItem is an item a plugin put under its tray entry.
type MenuItem struct {
	ID      string `json:"id"`
	Label   string `json:"label"`
	Enabled bool   `json:"enabled"`
	Checked bool   `json:"checked"`
}

// SendRequest is the body of POST /v1/send and /v1/broadcast.
type SendRequest struct {
	To         string `json:"to,omitempty"`
	Subservice string `json:"subservice"`
	Data       []byte `json:"data"`
}

// FetchRequest is the body of POST /v1/fetch and /v1/run.
type FetchRequest struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Pre     bool   `json:"pre,omitempty"`
	// Downgrade allows installing a lower version than the installed one.
	Downgrade bool `json:"downgrade,omitempty"`
}

// NameRequest names one plugin.
type NameRequest struct {
	Name string `json:"name"`
}

// PublishRequest asks the node to publish an archive into its dist folder.
type PublishRequest struct {
	Path string `json:"path"`
}

// Result is the outcome of an action.
type Result struct {
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Node    string `json:"node,omitempty"`
	Count   int    `json:"count,omitempty"`
	// Pinned is set when this action pinned a publisher key for the first time.
	Pinned string `json:"pinned,omitempty"`
}

// Error is the body of every non-2xx answer, and of "error" stream events.
type Error struct {
	Error string `json:"error"`
	// Hint says what to do next, when we know.
	Hint string `json:"hint,omitempty"`
}

// Progress reports a download.
type Progress struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Node    string `json:"node"`
	Done    int64  `json:"done"`
	Total   int64  `json:"total"`
}

// Event types carried by GET /v1/events and by action streams.
const (
	EventPeerUp   = "peer-up"
	EventPeerDown = "peer-down"
	EventRejected = "rejected" // a connection refused: wrong mesh key, identity or version
	EventCatalog  = "catalog"
	EventPlugin   = "plugin"
	EventProgress = "progress"
	EventInstall  = "install"
	EventDist     = "dist"
	EventMessage  = "message"
	EventResult   = "result"
	// EventUpdateFailed reports, on /v1/events, that an automatic update
	// of a running plugin failed (the running version stays). Unlike
	// EventError it does not end a stream.
	EventUpdateFailed = "update-failed"
	EventError        = "error"
	EventHello        = "hello"
	// EventSession: a hosted session opened or ended (Session set).
	EventSession = "session"
)

// Event is one line of an event stream.
type Event struct {
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	Peer     *Node     `json:"peer,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Plugin   *Plugin   `json:"plugin,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Error    *Error    `json:"error,omitempty"`
	Message  string    `json:"message,omitempty"`
	Session  *Session  `json:"session,omitempty"`
}

// TrustRequest pins (or unpins) the publisher key of a plugin name.
type TrustRequest struct {
	Name   string `json:"name"`
	Signer string `json:"signer,omitempty"`
	Remove bool   `json:"remove,omitempty"`
}

// How a node was discovered.
const (
	ViaMDNS = "mdns"
	ViaPeer = "peer"
)

// Discovered is a node seen over mDNS or learned from a peer, as in GET
// /v1/discovered. Discovery only gives hints: liveness is the mesh's
// business (see /v1/peers).
type Discovered struct {
	ID string `json:"id"`
	// Via says how we learned of the node: ViaMDNS, or ViaPeer when a peer
	// told us (peer exchange) and mDNS has not shown it yet.
	Via         string    `json:"via"`
	Name        string    `json:"name"`
	Instance    string    `json:"instance"`
	Addrs       []string  `json:"addrs"`
	Port        int       `json:"port"`
	Subservices int       `json:"subservices"`
	More        int       `json:"more,omitempty"`
	FirstSeen   time.Time `json:"first_seen"`
	// FirstMDNS is the first mDNS sighting (zero while Via is ViaPeer).
	FirstMDNS time.Time `json:"first_mdns,omitzero"`
	LastSeen  time.Time `json:"last_seen"`
	// Hops, for a node learned from a peer (ViaPeer), is how many peers
	// the news went through: 1 when the peer that told us saw it itself.
	Hops int `json:"hops,omitempty"`
}

// ClickRequest is a click on a menu item a plugin put in the tray.
type ClickRequest struct {
	Plugin string `json:"plugin"`
	Item   string `json:"item"`
}

// PeerClock is how far a peer's clock is from ours, as in GET /v1/clock
// (from the Date header of the peer's dist server, so to about a second).
type PeerClock struct {
	ID            string  `json:"id"`
	Name          string  `json:"name"`
	OffsetSeconds float64 `json:"offset_s"`
	Error         string  `json:"error,omitempty"`
}

// Session is one hosted session, as in GET /v1/sessions: on the host of its
// program (Role "host") or on the node it was opened from (Role
// "presenter").
type Session struct {
	// ID is the session id: 32 hex digits, random.
	ID        string `json:"id"`
	Plugin    string `json:"plugin"`
	Version   string `json:"version"`
	Role      string `json:"role"`
	Host      Node   `json:"host"`
	Presenter Node   `json:"presenter"`
	// Owner is, on the presenter's node, what holds the session: "cli" or
	// "plugin NAME".
	Owner string `json:"owner,omitempty"`
	// State is "starting", "open", "ending" or "ended".
	State      string    `json:"state"`
	Started    time.Time `json:"started"`
	LastActive time.Time `json:"last_active"`
	// PID is the session's program (on the host only).
	PID int `json:"pid,omitempty"`
	// BytesIn went to the program, BytesOut came from it.
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	// Ended, EndCode and EndReason say when and why it ended; Exit is how
	// its program exited, when known.
	Ended     *time.Time `json:"ended,omitempty"`
	EndCode   string     `json:"end_code,omitempty"`
	EndReason string     `json:"end_reason,omitempty"`
	Exit      string     `json:"exit,omitempty"`
}

// HostedPlugin is a hosted plugin this node runs sessions of.
type HostedPlugin struct {
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Since    time.Time `json:"since"`
	Sessions int       `json:"sessions"`
	// The limits in force (the manifest's, else the node's defaults).
	MaxSessions  int    `json:"max_sessions"`
	IdleTimeout  string `json:"idle_timeout"`
	OutputBuffer int    `json:"output_buffer"`
}

// Sessions is the answer to GET /v1/sessions: the hosted plugins this node
// serves, the sessions it hosts and those opened from it (live first, then
// recently ended).
type Sessions struct {
	Hosted   []HostedPlugin `json:"hosted"`
	Sessions []Session      `json:"sessions"`
}

// OpenRequest is the body of POST /v1/open.
type OpenRequest struct {
	// Node is the host: a node id, an id prefix (8+ characters) or a name.
	Node    string `json:"node"`
	Plugin  string `json:"plugin"`
	Version string `json:"version,omitempty"`
}

// SessionRequest is the body of POST /v1/sessions/send and
// /v1/sessions/close. Session is a session id (or, for a session opened
// from this node, a prefix of 8+ characters); Node, needed only for a
// session this node does not know, is its host.
type SessionRequest struct {
	Session string `json:"session"`
	Node    string `json:"node,omitempty"`
	Data    []byte `json:"data,omitempty"`
}
