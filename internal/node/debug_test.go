package node

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"testing"
)

func debugRuntime(t *testing.T, n *Node, query string) RuntimeStats {
	t.Helper()
	w := httptest.NewRecorder()
	n.handleDebugRuntime(w, httptest.NewRequest("GET", "/v1/debug/runtime"+query, nil))
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var st RuntimeStats
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDebugRuntime: the counts follow what the process holds.
func TestDebugRuntime(t *testing.T) {
	n := &Node{}
	before := debugRuntime(t, n, "?gc=1")
	if before.Goroutines < 1 || before.HeapAlloc == 0 || before.Sys == 0 || before.NumGC == 0 || before.FDs < 3 {
		t.Fatalf("implausible stats %+v", before)
	}
	var files []*os.File
	for range 3 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	stop := make(chan struct{})
	started := make(chan struct{})
	go func() { close(started); <-stop }()
	<-started
	after := debugRuntime(t, n, "")
	close(stop)
	for _, f := range files {
		f.Close()
	}
	if after.FDs != before.FDs+3 {
		t.Errorf("fds %d -> %d after opening 3 files", before.FDs, after.FDs)
	}
	if after.Goroutines < before.Goroutines+1 {
		t.Errorf("goroutines %d -> %d after starting one", before.Goroutines, after.Goroutines)
	}
}
