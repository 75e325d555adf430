package distrib

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// MaxIndexBytes caps the size of a peer's index.json.
	MaxIndexBytes = 8 << 20
	// DefaultStallTimeout is how long a download may go without receiving a
	// byte before Fetch moves to the next source.
	DefaultStallTimeout = 10 * time.Second

	copyBufSize = 256 << 10
)

// Source is one place that offers archives: a peer's dist HTTP API
// (Dist.Handler) at BaseURL, reached through Client.
type Source struct {
	// Node names the source (a node id) in Progress and errors.
	Node string
	// BaseURL is the URL of the handler's root, e.g. "http://peer".
	BaseURL string
	// Client performs the requests (http.DefaultClient when nil). The node
	// wiring passes one whose transport dials the peer over the mesh.
	Client *http.Client
}

func (s Source) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return http.DefaultClient
}

func (s Source) url(p string) string {
	return strings.TrimRight(s.BaseURL, "/") + p
}

// Progress reports a download's progress. Done may go back to 0 when a
// source does not support resuming or sent bad bytes.
type Progress struct {
	Name, Version string
	// Node is the source currently sending.
	Node string
	// Done and Total are bytes received and expected.
	Done, Total int64
}

// FetchOptions tunes Fetch. The zero value is usable.
type FetchOptions struct {
	// Progress, if set, is called from Fetch's goroutine as bytes arrive
	// (about every 1%) and when switching sources.
	Progress func(Progress)
	// Limits bound the archive's size (DefaultLimits when zero).
	Limits Limits
	// TempDir is where the download goes (os.TempDir() when empty).
	TempDir string
	// StallTimeout moves to the next source when a source sends nothing
	// for this long, including while waiting for its response headers
	// (DefaultStallTimeout when zero).
	StallTimeout time.Duration
}

// Fetch downloads the archive described by want from any of sources (each
// is expected to offer the same SHA-256) into a new temporary directory
// under opt.TempDir, and returns the archive's path there; its file name is
// want.File, and its signature, if any, is written to path+".sig". The
// caller removes the directory (os.RemoveAll(filepath.Dir(path))), e.g.
// after Store.Install.
//
// When a source fails mid-way (error, closed connection, or a stall of
// opt.StallTimeout), Fetch moves to the next and resumes with a Range
// request where that source supports it. A source whose bytes do not hash
// to want.SHA256 is dropped and the download starts over from another. The
// size and SHA-256 are verified before Fetch returns; a signature is
// verified against them, and must be by want.Signer if that is set.
func Fetch(ctx context.Context, want IndexEntry, sources []Source, opt FetchOptions) (path string, err error) {
	lim := opt.Limits.withDefaults()
	if err := checkEntry(want, lim); err != nil {
		return "", wrap(err, "fetch")
	}
	if len(sources) == 0 {
		return "", wrap(fmt.Errorf("%w: no sources given", ErrNoSource), "fetch %s", want.File)
	}
	stall := opt.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	dir, err := os.MkdirTemp(opt.TempDir, "nearby-fetch-")
	if err != nil {
		return "", wrap(err, "fetch")
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	path = filepath.Join(dir, want.File)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", wrap(err, "fetch")
	}
	defer f.Close()
	fe := &fetcher{want: want, f: f, h: sha256.New(), stall: stall, progress: opt.Progress}
	for range 8 {
		fe.bufs = append(fe.bufs, make([]byte, copyBufSize))
	}
	winner, err := fe.download(ctx, sources)
	if err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", wrap(err, "fetch")
	}
	sig, err := fe.signature(ctx, sources, winner)
	if err != nil {
		return "", err
	}
	if sig != nil {
		if err := os.WriteFile(path+SigExt, sig, 0o644); err != nil {
			return "", wrap(err, "fetch")
		}
	}
	return path, nil
}

// checkEntry checks an index entry received from a peer.
func checkEntry(e IndexEntry, lim Limits) error {
	if err := ValidName(e.Name); err != nil {
		return err
	}
	v, err := ParseVersion(e.Version)
	if err != nil {
		return err
	}
	if e.File != FileName(e.Name, v) {
		return fmt.Errorf("%w: entry file %q does not match %s %s", ErrBadName, e.File, e.Name, e.Version)
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != sha256.Size || strings.ToLower(e.SHA256) != e.SHA256 {
		return fmt.Errorf("%w: entry %s: sha256 %q is not 64 lowercase hex digits", ErrBadName, e.File, e.SHA256)
	}
	if e.Size < 0 {
		return fmt.Errorf("%w: entry %s: negative size", ErrBadName, e.File)
	}
	if e.Size > lim.MaxArchiveBytes {
		return fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrTooLarge, e.File, e.Size, lim.MaxArchiveBytes)
	}
	if e.Signer != "" {
		if _, err := ParseSignerID(e.Signer); err != nil {
			return fmt.Errorf("%w: entry %s: %v", ErrBadSignature, e.File, err)
		}
	}
	return nil
}

type fetcher struct {
	want     IndexEntry
	f        *os.File
	h        hash.Hash
	done     int64
	stall    time.Duration
	progress func(Progress)
	reported int64
	bufs     [][]byte // read buffers, cycled between reading and hashing
}

// errHard marks a source failure that retrying the same source won't fix.
type errHard struct{ error }

func (e errHard) Unwrap() error { return e.error }

// reset discards what was downloaded and reports Done 0.
func (fe *fetcher) reset(node string) error {
	fe.done, fe.reported = 0, 0
	fe.h.Reset()
	if err := fe.f.Truncate(0); err != nil {
		return err
	}
	if _, err := fe.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	fe.report(node, true)
	return nil
}

func (fe *fetcher) report(node string, force bool) {
	if fe.progress == nil {
		return
	}
	step := max(fe.want.Size/100, 64<<10)
	if force || fe.done-fe.reported >= step || fe.done == fe.want.Size {
		fe.reported = fe.done
		fe.progress(Progress{Name: fe.want.Name, Version: fe.want.Version, Node: node, Done: fe.done, Total: fe.want.Size})
	}
}

// download runs attempts over the sources until the file is complete and
// verified; it returns the index of the source that finished it.
func (fe *fetcher) download(ctx context.Context, sources []Source) (int, error) {
	dead := make([]bool, len(sources))
	fails := make([]int, len(sources))
	var reasons []error
	contributed := map[int]bool{}
	noResume := false
	next := 0
	for attempt := 0; attempt < 3*len(sources)+1; attempt++ {
		idx := -1
		for k := range sources {
			if j := (next + k) % len(sources); !dead[j] {
				idx = j
				break
			}
		}
		if idx < 0 {
			break
		}
		next = idx + 1
		if noResume && fe.done > 0 {
			if err := fe.reset(sources[idx].Node); err != nil {
				return 0, wrap(err, "fetch")
			}
			clear(contributed)
		}
		src := sources[idx]
		fe.report(src.Node, true)
		n, err := fe.attempt(ctx, src)
		if n > 0 {
			contributed[idx] = true
		}
		if ctx.Err() != nil {
			return 0, wrap(ctx.Err(), "fetch %s", fe.want.File)
		}
		if err == nil {
			if got := hex.EncodeToString(fe.h.Sum(nil)); got == fe.want.SHA256 {
				return idx, nil
			}
			err = fmt.Errorf("%w: got sha256 %s, want %s", ErrHashMismatch, hex.EncodeToString(fe.h.Sum(nil)), fe.want.SHA256)
			if len(contributed) == 1 {
				dead[idx] = true
			} else {
				noResume = true // unknown which source lied: each must now deliver it all
			}
			if rerr := fe.reset(src.Node); rerr != nil {
				return 0, wrap(rerr, "fetch")
			}
			clear(contributed)
		} else if _, hard := err.(errHard); hard || n == 0 {
			dead[idx] = true
		} else if fails[idx]++; fails[idx] >= 2 {
			dead[idx] = true // it helped, then failed twice: enough
		}
		reasons = append(reasons, wrap(err, "source %s", src.Node))
	}
	return 0, wrap(fmt.Errorf("%w: %w", ErrNoSource, errors.Join(reasons...)), "fetch %s", fe.want.File)
}

// attempt fetches the rest of the file from one source. It returns the
// bytes it added and nil once the file has want.Size bytes.
func (fe *fetcher) attempt(ctx context.Context, src Source) (int64, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(fe.stall, func() { cancel(ErrStalled) })
	defer timer.Stop()
	stalled := func(err error) error {
		if errors.Is(context.Cause(rctx), ErrStalled) {
			return fmt.Errorf("%w: nothing received for %v", ErrStalled, fe.stall)
		}
		return err
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, src.url("/files/"+url.PathEscape(fe.want.File)), nil)
	if err != nil {
		return 0, errHard{err}
	}
	etag := `"` + fe.want.SHA256 + `"`
	if fe.done > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", fe.done))
		req.Header.Set("If-Range", etag)
	}
	resp, err := src.client().Do(req)
	if err != nil {
		return 0, stalled(err)
	}
	defer resp.Body.Close()
	if et := resp.Header.Get("ETag"); et != "" && et != etag && resp.StatusCode/100 == 2 {
		return 0, errHard{fmt.Errorf("%w: source offers different bytes (ETag %s)", ErrHashMismatch, et)}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if fe.done > 0 { // no Range support, or the If-Range failed: start over
			if err := fe.reset(src.Node); err != nil {
				return 0, errHard{err}
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != fe.want.Size {
			return 0, errHard{fmt.Errorf("%w: source offers %d bytes, want %d", ErrHashMismatch, resp.ContentLength, fe.want.Size)}
		}
	case http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), fe.done, fe.want.Size); err != nil {
			return 0, errHard{err}
		}
	case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return 0, fmt.Errorf("source busy: %s", resp.Status)
	default:
		return 0, errHard{fmt.Errorf("%w: source answered %s", ErrNotFound, resp.Status)}
	}
	// Three stages overlap: this goroutine reads the network, one writes
	// the file, one hashes; buffers cycle through them in order.
	free := make(chan []byte, len(fe.bufs))
	for _, b := range fe.bufs {
		free <- b
	}
	writeQ := make(chan []byte, len(fe.bufs))
	hashQ := make(chan []byte, len(fe.bufs))
	var werr error
	werrSet := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(hashQ)
		for b := range writeQ {
			if werr == nil {
				if _, err := fe.f.Write(b); err != nil {
					werr = err
					close(werrSet)
				}
			}
			hashQ <- b
		}
	})
	wg.Go(func() {
		for b := range hashQ {
			fe.h.Write(b)
			free <- b[:cap(b)]
		}
	})
	stop := func() { // fe.f and fe.h are complete once it returns
		close(writeQ)
		wg.Wait()
	}
	var n int64
	for fe.done < fe.want.Size {
		var b []byte
		select {
		case b = <-free:
		case <-werrSet:
			stop()
			return n, errHard{werr}
		}
		b = b[:min(int64(len(b)), fe.want.Size-fe.done)]
		k, rerr := resp.Body.Read(b)
		if k > 0 {
			timer.Reset(fe.stall)
			writeQ <- b[:k]
			fe.done += int64(k)
			n += int64(k)
			fe.report(src.Node, false)
		} else {
			free <- b
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			stop()
			return n, stalled(rerr)
		}
	}
	stop()
	if werr != nil {
		return n, errHard{werr}
	}
	if fe.done < fe.want.Size {
		return n, fmt.Errorf("connection ended after %d of %d bytes", fe.done, fe.want.Size)
	}
	return n, nil
}

// checkContentRange checks a 206 response's "bytes START-END/TOTAL".
func checkContentRange(cr string, start, size int64) error {
	bad := fmt.Errorf("%w: bad Content-Range %q for bytes %d- of %d", ErrHashMismatch, cr, start, size)
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return bad
	}
	rng, total, ok := strings.Cut(rest, "/")
	if !ok {
		return bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad
	}
	s, err1 := strconv.ParseInt(a, 10, 64)
	e, err2 := strconv.ParseInt(b, 10, 64)
	t, err3 := strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || s != start || e != size-1 || t != size {
		return bad
	}
	return nil
}

// signature fetches and verifies the .sig of the downloaded archive,
// asking the source that delivered it first. It returns nil for an
// unsigned archive.
func (fe *fetcher) signature(ctx context.Context, sources []Source, first int) ([]byte, error) {
	sum := fe.h.Sum(nil)
	var reasons []error
	for k := range sources {
		src := sources[(first+k)%len(sources)]
		b, err := fetchSmall(ctx, src, "/files/"+url.PathEscape(fe.want.File+SigExt), MaxSigBytes, fe.stall)
		if err == nil && b != nil {
			var sig *Signature
			if sig, err = ParseSignature(b); err == nil {
				if err = sig.Verify(sum); err == nil {
					id := SignerID(sig.Signer)
					if fe.want.Signer == "" || id == fe.want.Signer {
						return b, nil
					}
					err = fmt.Errorf("%w: signed by %s, but the index said %s", ErrUntrustedSigner, id, fe.want.Signer)
				}
			}
		}
		if err != nil {
			reasons = append(reasons, wrap(err, "source %s", src.Node))
		}
		if fe.want.Signer == "" {
			return nil, nil // unsigned per the index; a bad extra .sig is dropped
		}
	}
	return nil, wrap(fmt.Errorf("%w: the index says it is signed by %s, but no source served a valid signature: %w",
		ErrBadSignature, fe.want.Signer, errors.Join(reasons...)), "fetch %s", fe.want.File)
}

// fetchSmall GETs a small resource; (nil, nil) on 404.
func fetchSmall(ctx context.Context, src Source, p string, limit int64, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.url(p), nil)
	if err != nil {
		return nil, err
	}
	resp, err := src.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	default:
		return nil, fmt.Errorf("GET %s: %s", p, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: GET %s: more than %d bytes", ErrTooLarge, p, limit)
	}
	return b, nil
}

// FetchIndex gets a source's index. Entries that fail the naming, hash or
// signer checks are moved to Invalid, as are duplicates.
func FetchIndex(ctx context.Context, s Source) (Index, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultStallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url("/index.json"), nil)
	if err != nil {
		return Index{}, wrap(err, "fetch index from %s", s.Node)
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return Index{}, wrap(err, "fetch index from %s", s.Node)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Index{}, fmt.Errorf("distrib: fetch index from %s: %s", s.Node, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxIndexBytes+1))
	if err != nil {
		return Index{}, wrap(err, "fetch index from %s", s.Node)
	}
	ix, err := DecodeIndex(b)
	if err != nil {
		return Index{}, wrap(err, "fetch index from %s", s.Node)
	}
	return ix, nil
}

// DecodeIndex parses an index.json received from a peer (at most
// MaxIndexBytes). Unknown fields are ignored, for newer peers; entries that
// fail the naming, hash or signer checks, and duplicates, are moved to
// Invalid with the reason. The result is sorted like Dist.Index.
func DecodeIndex(b []byte) (Index, error) {
	if len(b) > MaxIndexBytes {
		return Index{}, fmt.Errorf("%w: index is more than %d bytes", ErrTooLarge, MaxIndexBytes)
	}
	var raw Index
	if err := json.Unmarshal(b, &raw); err != nil {
		return Index{}, wrap(err, "bad index")
	}
	lim := DefaultLimits()
	ix := Index{Entries: []IndexEntry{}}
	seen := map[string]bool{}
	for _, e := range raw.Entries {
		err := checkEntry(e, lim)
		if err == nil && (!ValidMode(e.Mode) || checkText(e.Description, maxDescription, true) != nil || checkText(e.Label, maxLabel, false) != nil) {
			err = fmt.Errorf("%w: entry %s: bad mode, description or label", ErrBadManifest, e.File)
		}
		if err == nil && seen[e.File] {
			err = fmt.Errorf("duplicate entry %s", e.File)
		}
		if err != nil {
			ix.Invalid = append(ix.Invalid, Invalid{File: clip(e.File, 255), Error: clip(err.Error(), 1024)})
			continue
		}
		seen[e.File] = true
		ix.Entries = append(ix.Entries, e)
	}
	for _, iv := range raw.Invalid {
		ix.Invalid = append(ix.Invalid, Invalid{File: clip(iv.File, 255), Error: clip(iv.Error, 1024)})
	}
	sortIndex(&ix)
	return ix, nil
}

// ValidMode reports whether m is ModeLocal or ModeHosted.
func ValidMode(m string) bool { return m == ModeLocal || m == ModeHosted }

func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}
