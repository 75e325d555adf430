package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAcquireOneAtATime: when a claim is released while several wait for
// it (autoUpdate runs once per catalog event), each waiter still gets the
// claim, one at a time. The journey test found waiters that woke together
// getting a nil release, which crashed the node.
func TestAcquireOneAtATime(t *testing.T) {
	n := &Node{updating: make(map[string]chan struct{})}
	ctx := context.Background()
	first, err := n.acquire(ctx, "chat")
	if err != nil {
		t.Fatal(err)
	}
	var holders, got atomic.Int32
	var wg sync.WaitGroup
	waiting := make(chan struct{}, 4)
	for range 4 {
		wg.Go(func() {
			waiting <- struct{}{}
			release, err := n.acquire(ctx, "chat")
			if err != nil || release == nil {
				t.Errorf("acquire: %v (release %v)", err, release != nil)
				return
			}
			if h := holders.Add(1); h != 1 {
				t.Errorf("%d holders at once", h)
			}
			got.Add(1)
			time.Sleep(10 * time.Millisecond) // the other waiters woke too: they must wait again
			holders.Add(-1)
			release()
		})
	}
	for range 4 {
		<-waiting
	}
	time.Sleep(50 * time.Millisecond)     // let them block in acquire (if not, the test is merely weaker)
	other, err := n.acquire(ctx, "other") // names are independent
	if err != nil {
		t.Fatal(err)
	}
	other()
	first()
	wg.Wait()
	if got.Load() != 4 {
		t.Fatalf("%d of 4 waiters got the claim", got.Load())
	}

	held, _ := n.acquire(ctx, "chat")
	defer held()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.acquire(cctx, "chat"); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire with a cancelled context while held: %v", err)
	}
}
