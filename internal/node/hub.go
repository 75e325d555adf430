package node

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nearbymesh/nearby/internal/control"
)

// hub fans node events out to control API subscribers. A subscriber that
// does not keep up loses events (counted); it never blocks the node.
type hub struct {
	mu      sync.Mutex
	subs    map[chan control.Event]struct{}
	dropped atomic.Uint64
}

func newHub() *hub { return &hub{subs: make(map[chan control.Event]struct{})} }

func (h *hub) subscribe(buf int) (<-chan control.Event, func()) {
	ch := make(chan control.Event, buf)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, ch)
			h.mu.Unlock()
		})
	}
}

func (h *hub) publish(e control.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
			h.dropped.Add(1)
		}
	}
}
