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
// writer goroutine. Frames are copied into one buffer, so that queueing one
// allocates nothing (once the buffers have grown) and the writer writes a
// whole batch with one Write. Producers never block.
type outQueue struct {
	mu       sync.Mutex
	buf      []byte   // queued frames, back to back
	n        int      // frames in buf
	free     [][]byte // buffers the writer handed back, for reuse (at most 2)
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

// push appends a copy of b, one frame, unless the queue is closed or full.
// One frame is always accepted into an empty queue, whatever its size.
func (q *outQueue) push(b []byte) pushResult { return q.pushN(b, 1, 1) }

// pushN appends a copy of b, n frames, all or none: unless the queue is
// closed, or full for all of them (an empty queue always takes them). A
// refusal counts lost frames as dropped: n, or more for a batch frame,
// which counts as the messages it carries.
func (q *outQueue) pushN(b []byte, n, lost int) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return pushClosed
	}
	if q.n > 0 && (q.n+n > q.maxItems || len(q.buf)+len(b) > q.maxBytes) {
		q.drops += uint64(lost)
		q.signal()
		return pushFull
	}
	if q.buf == nil && len(q.free) > 0 {
		q.buf = q.free[len(q.free)-1]
		q.free = q.free[:len(q.free)-1]
	}
	q.buf = append(q.buf, b...)
	q.n += n
	q.signal()
	return pushOK
}

// pushFront puts b first, ignoring the caps (used once, for welcome).
func (q *outQueue) pushFront(b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.buf = append(append(make([]byte, 0, len(b)+len(q.buf)), b...), q.buf...)
	q.n++
	q.signal()
}

// len returns the number of queued frames and their bytes.
func (q *outQueue) len() (int, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n, len(q.buf)
}

// spareCap is the largest buffer the queue keeps for reuse.
const spareCap = 1 << 20

// wait blocks until there are frames or drops to report, and returns all
// queued frames as one buffer, the number of frames dropped since the last
// call, and false once the queue is closed. done is the buffer the last
// call returned, handed back for reuse (nil the first time).
func (q *outQueue) wait(done []byte) ([]byte, uint64, bool) {
	for {
		q.mu.Lock()
		if done != nil && cap(done) <= spareCap && len(q.free) < 2 {
			q.free = append(q.free, done[:0])
		}
		done = nil
		if q.closed {
			q.mu.Unlock()
			return nil, 0, false
		}
		if q.n > 0 || q.drops > 0 {
			batch, drops := q.buf, q.drops
			q.buf, q.n, q.drops = nil, 0, 0
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
	q.buf, q.n, q.free = nil, 0, nil
	q.signal()
}
