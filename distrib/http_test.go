package distrib

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve runs h on a loopback httptest server until the test ends.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return do(t, http.MethodGet, url, hdr...)
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	priv := newKey(t)
	chat := goodArchive(t, dir, "chat", "1.0.0", priv)
	goodArchive(t, dir, "draw", "1.0.0", nil)
	writeArchive(t, dir, "bad-1.0.0.tar.gz", tarGz(t, goodEnts("bad", "2.0.0")))
	os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("not served"), 0o644)
	d, err := OpenDist(dir, DistConfig{})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, d.Handler())
	data, _ := os.ReadFile(chat)
	etag := `"` + hexSHA(data) + `"`

	resp, body := get(t, srv.URL+"/index.json")
	var ix Index
	if err := json.Unmarshal(body, &ix); err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("index: %d %v %s", resp.StatusCode, err, body)
	}
	if len(ix.Entries) != 2 || len(ix.Invalid) != 1 || ix.Entries[0].Signer != signerOf(priv) {
		t.Fatalf("index %+v", ix)
	}

	resp, body = get(t, srv.URL+"/files/chat-1.0.0.tar.gz")
	if resp.StatusCode != 200 || !bytes.Equal(body, data) || resp.Header.Get("ETag") != etag ||
		resp.Header.Get("Content-Type") != "application/gzip" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("file: %d %v", resp.StatusCode, resp.Header)
	}

	resp, body = get(t, srv.URL+"/files/chat-1.0.0.tar.gz", "Range", "bytes=10-19")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[10:20]) ||
		resp.Header.Get("Content-Range") != "bytes 10-19/"+itoa(len(data)) {
		t.Fatalf("range: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body = get(t, srv.URL+"/files/chat-1.0.0.tar.gz", "Range", "bytes=100-", "If-Range", etag)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:]) {
		t.Fatalf("resume: %d", resp.StatusCode)
	}
	resp, body = get(t, srv.URL+"/files/chat-1.0.0.tar.gz", "Range", "bytes=100-", "If-Range", `"other"`)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("If-Range mismatch: %d", resp.StatusCode)
	}
	resp, _ = get(t, srv.URL+"/files/chat-1.0.0.tar.gz", "Range", "bytes="+itoa(len(data)+5)+"-")
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past end: %d", resp.StatusCode)
	}
	resp, _ = get(t, srv.URL+"/files/chat-1.0.0.tar.gz", "If-None-Match", etag)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	resp, body = do(t, http.MethodHead, srv.URL+"/files/chat-1.0.0.tar.gz")
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD: %d %d", resp.StatusCode, resp.ContentLength)
	}

	resp, body = get(t, srv.URL+"/files/chat-1.0.0.tar.gz.sig")
	if sig, _ := os.ReadFile(chat + SigExt); resp.StatusCode != 200 || !bytes.Equal(body, sig) {
		t.Fatalf("sig: %d %q", resp.StatusCode, body)
	}

	for _, p := range []string{
		"/files/draw-1.0.0.tar.gz.sig", // unsigned
		"/files/bad-1.0.0.tar.gz",      // invalid: never served
		"/files/bad-1.0.0.tar.gz.sig",
		"/files/secret.txt",
		"/files/none-1.0.0.tar.gz",
		"/files/",
		"/files/..%2fsecret.txt",
		"/files/sub/chat-1.0.0.tar.gz",
		"/",
		"/secret.txt",
		"/index.json/x",
	} {
		if resp, _ := get(t, srv.URL+p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if resp, _ := do(t, m, srv.URL+"/files/chat-1.0.0.tar.gz"); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", m, resp.StatusCode)
		}
	}

	// Changed on disk after indexing (no watcher here): 503, not new bytes.
	os.WriteFile(chat, []byte("replaced"), 0o644)
	if resp, body := get(t, srv.URL+"/files/chat-1.0.0.tar.gz"); resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), "replaced") {
		t.Fatalf("changed file: %d", resp.StatusCode)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
