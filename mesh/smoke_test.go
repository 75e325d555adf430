package mesh

import "testing"

func TestSmoke(t *testing.T) {
	checkGoroutines(t)
	a, b := startNode(t, nil), startNode(t, nil)
	connect(t, a, b)
	if err := a.Send(b.ID(), "chat", []byte("hi"), 0); err != nil {
		t.Fatal(err)
	}
	msg := b.waitMsg()
	if string(msg.Payload) != "hi" || msg.From != a.ID() {
		t.Fatalf("got %+v", msg)
	}
	t.Log(a.Peers(), b.Peers())
}
