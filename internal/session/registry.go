package session

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Registry is a presenter node's table of the sessions opened from it, by
// the CLI or by plugins. Its methods are safe for concurrent use.
type Registry struct {
	history  int
	onChange func(Info)

	mu     sync.Mutex
	live   map[string]*regEntry
	ended  []Info
	closed bool
}

type regEntry struct {
	info   Info
	close  func()
	counts func() (in, out uint64)
}

// NewRegistry returns an empty registry that remembers the last history
// ended sessions (DefaultHistory if <= 0). onChange, if set, is called with
// a session's Info when it is added and when it ends; it must not block.
func NewRegistry(history int, onChange func(Info)) *Registry {
	if history <= 0 {
		history = DefaultHistory
	}
	return &Registry{history: history, onChange: onChange, live: make(map[string]*regEntry)}
}

// Add records an open session (in.Role is set to RolePresenter). close
// ends it; counts reports its bytes. Call the returned func once, with the
// End, when the session has ended. After CloseAll, Add closes the session
// at once.
func (r *Registry) Add(in Info, close func(), counts func() (in, out uint64)) (ended func(End)) {
	in.Role = RolePresenter
	in.State = StateOpen
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		go close()
	} else {
		r.live[in.ID] = &regEntry{info: in, close: close, counts: counts}
		r.mu.Unlock()
	}
	if r.onChange != nil {
		r.onChange(in)
	}
	var once sync.Once
	return func(e End) {
		once.Do(func() { r.finish(in.ID, e) })
	}
}

func (r *Registry) finish(id string, e End) {
	r.mu.Lock()
	ent := r.live[id]
	if ent == nil {
		r.mu.Unlock()
		return
	}
	delete(r.live, id)
	in := ent.snapshot()
	in.State, in.End, in.Ended = StateEnded, &e, time.Now()
	r.ended = append(r.ended, in)
	if len(r.ended) > r.history {
		r.ended = slices.Delete(r.ended, 0, len(r.ended)-r.history)
	}
	r.mu.Unlock()
	if r.onChange != nil {
		r.onChange(in)
	}
}

func (e *regEntry) snapshot() Info {
	in := e.info
	if e.counts != nil {
		in.BytesIn, in.BytesOut = e.counts()
	}
	return in
}

// List returns the open sessions, then the recently ended ones, each group
// oldest first.
func (r *Registry) List() []Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Info, 0, len(r.live)+len(r.ended))
	for _, e := range r.live {
		out = append(out, e.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return append(out, r.ended...)
}

// Find returns the open session whose id is id or starts with id (at least
// 8 characters, and only one may match).
func (r *Registry) Find(id string) (Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.live[id]; e != nil {
		return e.snapshot(), nil
	}
	if len(id) < 8 {
		return Info{}, fmt.Errorf("no open session %q from this node (give at least 8 characters of its id)", id)
	}
	var found []*regEntry
	for k, e := range r.live {
		if strings.HasPrefix(k, id) {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		return Info{}, fmt.Errorf("no open session %q from this node", id)
	case 1:
		return found[0].snapshot(), nil
	}
	return Info{}, fmt.Errorf("%q matches %d sessions; give more of the id", id, len(found))
}

// Close closes the open session id (exact id).
func (r *Registry) Close(id string) error {
	r.mu.Lock()
	e := r.live[id]
	r.mu.Unlock()
	if e == nil {
		return fmt.Errorf("no open session %s from this node", short(id))
	}
	e.close()
	return nil
}

// CloseAll closes every open session, and every session added later, and
// waits (at most timeout) until they have ended.
func (r *Registry) CloseAll(timeout time.Duration) {
	r.mu.Lock()
	r.closed = true
	var closers []func()
	for _, e := range r.live {
		closers = append(closers, e.close)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range closers {
		wg.Go(c)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
