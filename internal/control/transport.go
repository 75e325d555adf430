package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// SocketName is the control socket's file name inside the state directory.
const SocketName = "control.sock"

// MaxBody caps request bodies accepted by the server.
const MaxBody = 8 << 20

// ErrNoNode is returned by the client when no node answers on the socket.
var ErrNoNode = errors.New("control: no node is running for this state directory")

// Listen opens the control socket at path with mode 0600. A stale socket
// left by a crashed node is replaced; a socket that a live node answers on
// is an error, so two nodes never share one state directory.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control: a node is already running with state directory %s (stop it, or pick another with --state)", filepath.Dir(path))
	}
	os.Remove(path)
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	return ln, nil
}

// WriteJSON writes v as the JSON answer with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError writes an Error answer.
func WriteError(w http.ResponseWriter, status int, err error, hint string) {
	WriteJSON(w, status, Error{Error: err.Error(), Hint: hint})
}

// ReadJSON decodes a request body into v, rejecting unknown fields.
func ReadJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

// Stream writes NDJSON events to an HTTP answer, flushing after each.
type Stream struct {
	w   http.ResponseWriter
	enc *json.Encoder
}

// NewStream starts an NDJSON answer.
func NewStream(w http.ResponseWriter) *Stream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	s := &Stream{w: w, enc: json.NewEncoder(w)}
	s.flush()
	return s
}

// Send writes one event. It returns an error when the client went away.
func (s *Stream) Send(e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if err := s.enc.Encode(e); err != nil {
		return err
	}
	s.flush()
	return nil
}

func (s *Stream) flush() {
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Client talks to one node's control socket. It is safe for concurrent use.
type Client struct {
	// Socket is the path of the control socket.
	Socket string
	hc     *http.Client
}

// NewClient returns a client for the node whose state directory is dir.
func NewClient(stateDir string) *Client {
	sock := filepath.Join(stateDir, SocketName)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableCompression: true,
		MaxIdleConns:       2,
	}
	return &Client{Socket: sock, hc: &http.Client{Transport: tr}}
}

// APIError is an error answered by the node.
type APIError struct {
	Status int
	Body   Error
}

func (e *APIError) Error() string {
	if e.Body.Hint != "" {
		return e.Body.Error + "\n  hint: " + e.Body.Hint
	}
	return e.Body.Error
}

// Get calls GET path and decodes the JSON answer into v.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	return c.do(ctx, http.MethodGet, path, nil, v)
}

// Post calls POST path with body as JSON and decodes the answer into v.
func (c *Client) Post(ctx context.Context, path string, body, v any) error {
	return c.do(ctx, http.MethodPost, path, body, v)
}

// GetText calls GET path and returns the raw answer.
func (c *Client) GetText(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func (c *Client) do(ctx context.Context, method, path string, body, v any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if v == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("control: decode answer of %s: %w", path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://nearby"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if isNoNode(err) {
			return nil, fmt.Errorf("%w (socket %s); start one with `nearby up`, or pass --state/NEARBY_STATE", ErrNoNode, c.Socket)
		}
		return nil, fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		ae := &APIError{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &ae.Body) != nil || ae.Body.Error == "" {
			ae.Body.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
		}
		return nil, ae
	}
	return resp, nil
}

func isNoNode(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// Stream calls path (GET when body is nil, else POST) and hands every
// NDJSON event to fn until the stream ends, fn returns an error, or ctx is
// done. A final "error" event is returned as an *APIError.
func (c *Client) Stream(ctx context.Context, path string, body any, fn func(Event) error) error {
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), MaxBody)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("control: bad event line: %w", err)
		}
		if e.Type == EventError && e.Error != nil {
			fn(e)
			return &APIError{Status: 200, Body: *e.Error}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("control: event stream: %w", err)
	}
	return ctx.Err()
}

// Close closes idle connections to the node.
func (c *Client) Close() { c.hc.CloseIdleConnections() }
