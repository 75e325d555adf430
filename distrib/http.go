package distrib

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Handler returns the folder's read-only HTTP API:
//
//	GET /index.json       the Index as JSON
//	GET /files/FILE       an indexed archive, via http.ServeContent (Range,
//	                      If-Range, conditional requests; ETag is the quoted
//	                      SHA-256 of the archive)
//	GET /files/FILE.sig   its signature (404 if it is unsigned)
//
// HEAD is allowed wherever GET is; every other method gets 405 and every
// other path 404. Only archives in the index are served: an invalid
// archive, a file changed since it was indexed (503, retry), or anything
// else in the folder never is.
func (d *Dist) Handler() http.Handler {
	return http.HandlerFunc(d.serveHTTP)
}

func (d *Dist) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p != "/index.json" && !strings.HasPrefix(p, "/files/") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: use GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	if p == "/index.json" {
		b, err := json.Marshal(d.Index())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
		return
	}
	file := strings.TrimPrefix(p, "/files/")
	if archive, ok := strings.CutSuffix(file, SigExt); ok {
		sig, ok := d.signature(archive)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(sig))
		return
	}
	f, e, err := d.Open(file)
	if err != nil {
		if errors.Is(err, ErrChanged) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("ETag", `"`+e.SHA256+`"`)
	http.ServeContent(w, r, "", fi.ModTime(), f)
}
