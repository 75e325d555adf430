package node

import (
	"net/http"
	"os"
	"runtime"

	"github.com/nearbymesh/nearby/internal/control"
)

// RuntimeStats is the answer to GET /v1/debug/runtime: what the soak and
// scale tests watch for leaks. It is a debugging aid, not a stable
// contract.
type RuntimeStats struct {
	// Goroutines is runtime.NumGoroutine().
	Goroutines int `json:"goroutines"`
	// HeapAlloc is the bytes of live and not yet swept heap objects.
	HeapAlloc uint64 `json:"heap_alloc"`
	// HeapInuse is the bytes in in-use heap spans.
	HeapInuse uint64 `json:"heap_inuse"`
	// Sys is the bytes of memory obtained from the OS by the Go runtime.
	Sys uint64 `json:"sys"`
	// NumGC is the number of completed GC cycles.
	NumGC uint32 `json:"num_gc"`
	// FDs is the number of open file descriptors (-1 where /proc/self/fd
	// cannot be read).
	FDs int `json:"fds"`
	// Peers is the number of connected peers.
	Peers int `json:"peers"`
}

// handleDebugRuntime answers GET /v1/debug/runtime. With ?gc=1 it runs a
// garbage collection first, so that HeapAlloc counts live objects only.
func (n *Node) handleDebugRuntime(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := RuntimeStats{
		Goroutines: runtime.NumGoroutine(),
		HeapAlloc:  ms.HeapAlloc,
		HeapInuse:  ms.HeapInuse,
		Sys:        ms.Sys,
		NumGC:      ms.NumGC,
		FDs:        -1,
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		st.FDs = len(ents) - 1 // ReadDir's own descriptor
	}
	if n.mesh != nil {
		st.Peers = len(n.mesh.Peers())
	}
	control.WriteJSON(w, http.StatusOK, st)
}
