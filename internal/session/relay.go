package session

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay bridges a session's stream to a local presenter process that
// speaks the protocol itself (as `nearby open` does over the control
// socket): frames pass through unchanged, so the presenter gets the host's
// window and end frames as they are, while the relay watches for the end
// and can close the session on the node's behalf. Its methods are safe for
// concurrent use.
type Relay struct {
	p          *Pending
	local      net.Conn
	lfr        *frameReader
	endTimeout time.Duration

	rmu       sync.Mutex // serialises writes to the host
	closeOnce sync.Once
	closeReq  chan struct{}
	override  atomic.Pointer[End] // what the local presenter is told instead

	bytesIn, bytesOut atomic.Uint64
}

// Relay returns a Relay between the pending session and local. Run starts
// it; the relay owns both connections.
func (p *Pending) Relay(local net.Conn) *Relay {
	return &Relay{p: p, local: local, lfr: newFrameReader(local), endTimeout: DefaultEndTimeout, closeReq: make(chan struct{})}
}

// Counts returns the bytes relayed to the program and from it.
func (r *Relay) Counts() (in, out uint64) { return r.bytesIn.Load(), r.bytesOut.Load() }

// CloseWith is Close, but the local presenter (and Run's result) gets e
// as the reason instead of the host's: the node closes the session for a
// reason of its own, such as its shutdown.
func (r *Relay) CloseWith(e End) {
	r.override.CompareAndSwap(nil, &e)
	r.Close()
}

// Close asks the host to end the session (CodeClosed); Run returns once it
// has, or 5 s later.
func (r *Relay) Close() {
	r.closeOnce.Do(func() {
		close(r.closeReq)
		r.rmu.Lock()
		r.p.c.SetWriteDeadline(time.Now().Add(r.endTimeout))
		r.p.c.Write(appendFrame(nil, frameClose, nil))
		r.rmu.Unlock()
		r.p.c.SetReadDeadline(time.Now().Add(r.endTimeout))
		// A local presenter that stopped reading cannot hold the relay.
		r.local.SetWriteDeadline(time.Now().Add(r.endTimeout))
	})
}

func (r *Relay) closeRequested() bool {
	select {
	case <-r.closeReq:
		return true
	default:
		return false
	}
}

// Run writes the opened frame to the local presenter, then relays until the
// session ends, and returns why. The local side goes away (its frames stop,
// or writing to it fails): the relay closes the session.
func (r *Relay) Run() End {
	remote, local := r.p.c, r.local
	localOK := true
	local.SetWriteDeadline(time.Now().Add(r.endTimeout))
	if _, err := local.Write(encodeJSON(frameOpened, r.p.Opened)); err != nil {
		localOK = false
		r.Close()
	}
	local.SetWriteDeadline(time.Time{})

	var wg sync.WaitGroup
	wg.Go(r.localLoop)

	var end End
	var frame []byte
	for {
		typ, body, err := r.p.fr.next()
		if err != nil {
			end = lostEnd(err)
			if r.closeRequested() {
				end = End{Code: CodeClosed, Reason: "closed by the presenter (the host did not confirm)"}
			}
			break
		}
		if typ == frameData || typ == frameWindow {
			if typ == frameData {
				r.bytesOut.Add(uint64(len(body)))
			}
			if localOK {
				frame = appendFrame(frame[:0], typ, body)
				if _, err := local.Write(frame); err != nil {
					localOK = false
					r.Close()
				}
			}
			continue
		}
		if typ != frameEnd {
			end = lostEnd(fmt.Errorf("%w: unexpected frame 0x%02x from the host", ErrProtocol, typ))
			break
		}
		e, err := decodeJSON[End](body)
		if err != nil {
			end = lostEnd(err)
			break
		}
		end = *e
		break
	}
	if o := r.override.Load(); o != nil && (end.Code == CodeClosed || end.Code == CodeLost) {
		end = *o
	}
	if localOK {
		// Tell the local presenter why, if it still listens.
		local.SetWriteDeadline(time.Now().Add(r.endTimeout))
		local.Write(encodeJSON(frameEnd, end))
	}
	remote.Close()
	remote.SetReadDeadline(time.Now())
	local.Close()
	wg.Wait()
	return end
}

// localLoop forwards the local presenter's frames to the host.
func (r *Relay) localLoop() {
	var frame []byte
	for {
		typ, body, err := r.lfr.next()
		if err != nil {
			r.Close()
			return
		}
		switch typ {
		case frameData, frameEOF:
			frame = appendFrame(frame[:0], typ, body)
			r.rmu.Lock()
			_, err := r.p.c.Write(frame)
			r.rmu.Unlock()
			if err != nil {
				r.Close()
				return
			}
			if typ == frameData {
				r.bytesIn.Add(uint64(len(body)))
			}
		default: // close, or anything else: the presenter is done
			r.Close()
			return
		}
	}
}
