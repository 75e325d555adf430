package supervisor

import "sync"

// pushResult says what outQueue.push did with a frame.
type pushResult int

const (
	pushOK     pushResult = iota
	pushFull              // dropped: the queue is at its frame or byte cap
	pushClosed            // dropped: the queue is closed
)

// outQueue is a plugin's bounded queue of encoded frames, drained by one
// writer goroutine. Producers never block.
type outQueue struct {
	mu       sync.Mutex
	items    [][]byte
	bytes    int
	maxItems int
	maxBytes int
	drops    uint64 // dropped since the writer last looked
	closed   bool
	notify   chan struct{} // 1 slot: the writer has something to do
}

func newOutQueue(maxItems, maxBytes int) *outQueue {
	return &outQueue{maxItems: maxItems, maxBytes: maxBytes, notify: make(chan struct{}, 1)}
}

func (q *outQueue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// push appends b unless the queue is closed or full. One frame is always
// accepted into an empty queue, whatever its size.
func (q *outQueue) push(b []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return pushClosed
	}
	if len(q.items) > 0 && (len(q.items) >= q.maxItems || q.bytes+len(b) > q.maxBytes) {
		q.drops++
		q.signal()
		return pushFull
	}
	q.items = append(q.items, b)
	q.bytes += len(b)
	q.signal()
	return pushOK
}

// pushFront puts b first, ignoring the caps (used once, for welcome).
func (q *outQueue) pushFront(b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append([][]byte{b}, q.items...)
	q.bytes += len(b)
	q.signal()
}

// len returns the number of queued frames and their bytes.
func (q *outQueue) len() (int, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), q.bytes
}

// wait blocks until there are frames or drops to report, and returns all
// queued frames (reusing spare's array), the number of frames dropped since
// the last call, and false once the queue is closed.
func (q *outQueue) wait(spare [][]byte) ([][]byte, uint64, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, 0, false
		}
		if len(q.items) > 0 || q.drops > 0 {
			batch, drops := q.items, q.drops
			q.items, q.bytes, q.drops = spare[:0], 0, 0
			q.mu.Unlock()
			return batch, drops, true
		}
		q.mu.Unlock()
		<-q.notify
	}
}

// close drops what is queued and wakes the writer.
func (q *outQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.items, q.bytes = nil, 0
	q.signal()
}
