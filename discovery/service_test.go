package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/nearbymesh/nearby/internal/netsafe"
)

// These tests multicast: they run only inside scripts/isolated.sh (a network
// namespace holding only lo), which netsafe enforces.

const testMesh = "0123456789abcdef"

func testID(i int) string { return fmt.Sprintf("%032x", 0xabc000+i) }

func testRecord(i int) Record {
	return Record{
		Proto:  ProtocolVersion,
		NodeID: testID(i),
		Name:   fmt.Sprintf("node %d", i),
		MeshID: testMesh,
		Digest: fmt.Sprintf("%064x", i),
		Subservices: []Sub{
			{Name: "chat", Version: "1.2.0"},
			{Name: "files", Version: fmt.Sprintf("0.%d.0", i)},
		},
	}
}

// logBuffer collects debug logs for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type running struct {
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

// stop cancels Run and waits for it (bounded); it returns Run's error.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // let a second stop see it too
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel")
		return nil
	}
}

func start(t testing.TB, cfg Config) *running {
	t.Helper()
	if cfg.Port == 0 {
		cfg.Port = 7000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitHint reads r's hints until one satisfies ok, or fails after d.
func waitHint(t testing.TB, r *running, d time.Duration, ok func(Hint) bool) Hint {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case h := <-r.svc.Hints():
			if ok(h) {
				return h
			}
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned early: %v", err)
		case <-deadline:
			t.Fatalf("no matching hint within %v (stats %+v)", d, r.svc.Stats())
		}
	}
}

func fromNode(id string) func(Hint) bool {
	return func(h Hint) bool { return h.Record.NodeID == id }
}

func TestServicesFindEachOther(t *testing.T) {
	const n = 3
	rs := make([]*running, n)
	for i := range rs {
		rs[i] = start(t, Config{Port: 7000 + i, Record: testRecord(i), MeshID: testMesh})
	}
	for i, r := range rs {
		for j := range rs {
			if i == j {
				continue
			}
			h := waitHint(t, r, 10*time.Second, fromNode(testID(j)))
			want := testRecord(j)
			if h.Port != 7000+j || h.Record.Name != want.Name || h.Record.Digest != want.Digest ||
				len(h.Record.Subservices) != 2 || h.Record.Subservices[1] != want.Subservices[1] {
				t.Errorf("node %d sees node %d as %+v", i, j, h)
			}
			if h.Instance != InstanceName(want.Name, want.NodeID) || h.Host != h.Instance+".local." {
				t.Errorf("instance %q host %q", h.Instance, h.Host)
			}
			if len(h.Addrs) == 0 || !h.Addrs[0].IsLoopback() {
				t.Errorf("addrs %v, want loopback (the namespace holds only lo)", h.Addrs)
			}
			if aps := h.AddrPorts(); len(aps) != len(h.Addrs) || aps[0].Port() != uint16(7000+j) {
				t.Errorf("AddrPorts %v", aps)
			}
		}
	}
	for i, r := range rs {
		if err := r.stop(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Run %d returned %v, want context.Canceled", i, err)
		}
	}
}

// rawRegister advertises a plain grandcat service of our type on lo, as
// foreign software (or a broken node) would.
func rawRegister(t testing.TB, instance string, port int, txt []string) {
	t.Helper()
	if err := netsafe.CheckIfRequired(); err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	s, err := zeroconf.RegisterProxy(instance, ServiceType, Domain, port, instance, []string{"127.0.0.1"}, txt, []net.Interface{*lo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
}

func mustEncode(t testing.TB, r Record) []string {
	t.Helper()
	txt, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return txt
}

func TestLateJoinerIsFound(t *testing.T) {
	a := start(t, Config{Port: 7100, Record: testRecord(0)})
	// a has registered and is browsing before b exists.
	waitStats(t, a.svc, func(s Stats) bool { return s.Registrations == 1 && s.Browses >= 1 })
	b := start(t, Config{Port: 7101, Record: testRecord(1)})
	waitHint(t, a, 10*time.Second, fromNode(testID(1)))
	waitHint(t, b, 10*time.Second, fromNode(testID(0)))
}

// waitStats polls s.Stats until ok (bounded).
func waitStats(t testing.TB, s *Service, ok func(Stats) bool) Stats {
	t.Helper()
	for range 200 {
		if st := s.Stats(); ok(st) {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stats never matched: %+v", s.Stats())
	return Stats{}
}

func TestUpdateIsSeen(t *testing.T) {
	rec := testRecord(0)
	a := start(t, Config{Port: 7200, Record: rec, BrowseInterval: 500 * time.Millisecond})
	b := start(t, Config{Port: 7201, Record: testRecord(1), BrowseInterval: 500 * time.Millisecond})
	waitHint(t, b, 10*time.Second, fromNode(rec.NodeID))

	// One grandcat browse, started before the update, reports a twice: the
	// goodbye of the re-registration makes it forget the old record.
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := startBrowse(context.Background(), []net.Interface{*lo})
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	collect := func(e *zeroconf.ServiceEntry) {
		if r, err := DecodeRecord(e.Text); err == nil && r.NodeID == rec.NodeID {
			digests = append(digests, r.Digest)
		}
	}
	for len(digests) == 0 {
		select {
		case e := <-raw.entries:
			collect(e)
		case <-time.After(10 * time.Second):
			t.Fatal("raw browse does not see a")
		}
	}

	rec.Digest = "updated"
	rec.Subservices = append(rec.Subservices, Sub{Name: "extra", Version: "2.0.0"})
	if err := a.svc.Update(rec); err != nil {
		t.Fatal(err)
	}
	for !slices.Contains(digests, "updated") {
		select {
		case e := <-raw.entries:
			collect(e)
		case <-time.After(10 * time.Second):
			t.Fatalf("the running browse did not report the update; saw digests %q", digests)
		}
	}
	raw.stop(slog.New(slog.DiscardHandler), func(*zeroconf.ServiceEntry) {})
	h := waitHint(t, b, 10*time.Second, func(h Hint) bool { return h.Record.NodeID == rec.NodeID && h.Record.Digest == "updated" })
	if !reflect.DeepEqual(h.Record, rec) {
		t.Fatalf("updated record seen as %+v, want %+v", h.Record, rec)
	}
	// A browse started afterwards sees it too.
	hs, err := Browse(context.Background(), BrowseConfig{Timeout: time.Second, Self: testID(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].Record.Digest != "updated" {
		t.Fatalf("later Browse: %+v", hs)
	}
	if n := a.svc.Stats().Registrations; n != 2 {
		t.Fatalf("%d registrations, want 2", n)
	}

	// A burst of updates is coalesced: far fewer registrations than
	// updates, and the last one wins. An update that changes nothing on the
	// wire does not re-register.
	if err := a.svc.Update(rec); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		rec.Digest = fmt.Sprintf("burst%d", i)
		if err := a.svc.Update(rec); err != nil {
			t.Fatal(err)
		}
	}
	waitHint(t, b, 10*time.Second, func(h Hint) bool { return h.Record.Digest == "burst19" })
	if n := a.svc.Stats().Registrations; n > 4 {
		t.Fatalf("%d registrations for 21 updates, want at most 4", n)
	}
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// ours lists the goroutines running code of this package or of zeroconf,
// other than the test itself.
func ours() []string {
	buf := make([]byte, 4<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if (strings.Contains(g, "grandcat/zeroconf") || strings.Contains(g, "nearby/discovery.")) && !strings.Contains(g, "discovery.TestRunStopsCleanly") && !strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return out
}

func TestRunStopsCleanly(t *testing.T) {
	fds := countFDs(t)
	a := start(t, Config{Port: 7300, Record: testRecord(0)})
	b := start(t, Config{Port: 7301, Record: testRecord(1)})
	waitHint(t, a, 10*time.Second, fromNode(testID(1)))
	waitHint(t, b, 10*time.Second, fromNode(testID(0)))
	if len(ours()) == 0 || countFDs(t) <= fds {
		t.Fatal("running services show no goroutines or sockets: the checks below would prove nothing")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.svc.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	for _, r := range []*running{a, b} {
		if err := r.stop(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	}
	// grandcat closes a browse's sockets just after closing its entries
	// channel, and its announcement goroutine outlives Shutdown by up to
	// ~3.5 s; everything else is gone when Run returns.
	var (
		left []string
		f    int
	)
	for range 100 {
		if left, f = ours(), countFDs(t); len(left) == 0 && f <= fds {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("10 s after Run returned: %d fds, %d before", f, fds)
	t.Fatalf("goroutines left 10 s after Run returned:\n%s", strings.Join(left, "\n\n"))
}

func TestHintsNeverBlockRun(t *testing.T) {
	a := start(t, Config{Port: 7400, Record: testRecord(0), HintBuffer: 1, BrowseInterval: 200 * time.Millisecond})
	for i := 1; i <= 3; i++ {
		start(t, Config{Port: 7400 + i, Record: testRecord(i)})
	}
	st := waitStats(t, a.svc, func(s Stats) bool { return s.Dropped >= 3 })
	if n := len(a.svc.Hints()); n != 1 {
		t.Fatalf("%d hints buffered, want 1", n)
	}
	t.Logf("stats with nobody reading: %+v", st)
	// The newest sightings are kept: the buffered hint is a fresh one.
	if h := <-a.svc.Hints(); time.Since(h.Seen) > 5*time.Second {
		t.Fatalf("kept a stale hint from %v", h.Seen)
	}
	if err := a.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestForeignRecordsAreIgnored(t *testing.T) {
	var logs logBuffer
	obs := start(t, Config{Port: 7500, Record: testRecord(0), MeshID: testMesh, Logger: logs.logger(), BrowseInterval: 300 * time.Millisecond})

	v2 := mustEncode(t, testRecord(51))
	v2[0] = "v=2"
	otherMesh := testRecord(52)
	otherMesh.MeshID = "fedcba9876543210"
	foreign := map[string][]string{
		"foreign-http":     {"path=/", "txtvers=1"},
		"foreign-missing":  {"v=1", "id=" + testID(50)},
		"foreign-garbage":  {"v=1", "id=zz", "n=\xff\x00", "m=", "d= ", "s=@"},
		"foreign-version":  v2,
		"foreign-mesh":     mustEncode(t, otherMesh),
		"foreign-empty":    nil,
		"foreign-dup":      append(mustEncode(t, testRecord(53)), "id="+testID(53)),
		"foreign-badsub":   append(mustEncode(t, testRecord(55)), "s=chat@latest"),
		"foreign-longname": append(mustEncode(t, testRecord(56))[:2], "n="+strings.Repeat("x", 200), "m="+testMesh, "d="),
	}
	for name, txt := range foreign {
		rawRegister(t, name, 7600, txt)
	}
	// A valid record registered by plain grandcat is a hint like any other.
	rawRegister(t, "plain-good", 7601, mustEncode(t, testRecord(54)))

	h := waitHint(t, obs, 10*time.Second, fromNode(testID(54)))
	if h.Instance != "plain-good" || h.Port != 7601 || !reflect.DeepEqual(h.Record, testRecord(54)) {
		t.Fatalf("plain-good seen as %+v", h)
	}
	for name := range foreign {
		for i := 0; !strings.Contains(logs.String(), "instance="+name); i++ {
			if i == 200 {
				t.Fatalf("no debug log for %s; logs:\n%s", name, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, want := range []string{"record is not ours", "unsupported protocol version", "another mesh", "bad record"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if st := obs.svc.Stats(); st.Ignored < uint64(len(foreign)) {
		t.Errorf("Ignored = %d, want >= %d", st.Ignored, len(foreign))
	}
	for {
		select {
		case h := <-obs.svc.Hints():
			if h.Record.NodeID != testID(54) {
				t.Fatalf("hint for a foreign record: %+v", h)
			}
		default:
			if err := obs.stop(t); !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
			return
		}
	}
}

func TestManySubservices(t *testing.T) {
	snf := sniff(t)
	rec := testRecord(0)
	rec.Subservices = manySubs(150)
	a := start(t, Config{Port: 7700, Record: rec})
	b := start(t, Config{Port: 7701, Record: testRecord(1)})
	h := waitHint(t, b, 10*time.Second, fromNode(rec.NodeID))
	k := len(h.Record.Subservices)
	if h.Record.More == 0 || k+h.Record.More != 150 || !slices.Equal(h.Record.Subservices, rec.Subservices[:k]) {
		t.Fatalf("seen %d subservices and more=%d", k, h.Record.More)
	}
	if hs, err := Browse(context.Background(), BrowseConfig{Timeout: time.Second, Self: testID(1)}); err != nil || len(hs) != 1 || hs[0].Record.More != h.Record.More {
		t.Fatalf("Browse: %+v, %v", hs, err)
	}

	// Every message a sends fits one frame with IPv6 and UDP headers:
	// announcements, answers to browses, and the (uncompressed) goodbye.
	instance := InstanceName(rec.Name, rec.NodeID)
	fits := func(p packet) {
		t.Helper()
		if p.size+48 > FrameBytes {
			t.Fatalf("message of %d bytes does not fit a %d-byte frame with IPv6", p.size, FrameBytes)
		}
		if len(p.txt) != len(mustEncode(t, h.Record)) || p.txtSize > MaxTXTBytes {
			t.Fatalf("TXT on the wire: %d strings, %d bytes", len(p.txt), p.txtSize)
		}
	}
	announce := snf.wait(t, 10*time.Second, func(p packet) bool { return p.from(instance) && p.ttl > 0 && p.meta })
	fits(announce)
	answer := snf.wait(t, 10*time.Second, func(p packet) bool { return p.from(instance) && p.ttl > 0 && !p.meta })
	fits(answer)
	a.stop(t)
	bye := snf.wait(t, 10*time.Second, func(p packet) bool { return p.from(instance) && p.ttl == 0 })
	fits(bye)
	t.Logf("UDP payloads: announcement %d, browse answer %d, goodbye %d; TXT %d bytes, %d listed, more=%d",
		announce.size, answer.size, bye.size, txtSize(mustEncode(t, h.Record)), k, h.Record.More)
}

func TestGoodbye(t *testing.T) {
	snf := sniff(t)
	rec := testRecord(80)
	a := start(t, Config{Port: 7800, Record: rec})
	instance := InstanceName(rec.Name, rec.NodeID)
	snf.wait(t, 10*time.Second, func(p packet) bool { return p.from(instance) && p.ttl > 0 })
	if err := a.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	p := snf.wait(t, 10*time.Second, func(p packet) bool { return p.from(instance) && p.ttl == 0 })
	if !p.ptr {
		t.Fatalf("goodbye without the PTR record: %+v", p)
	}
}

func TestBrowse(t *testing.T) {
	rawRegister(t, "foreign-http", 7900, []string{"path=/"})
	a := start(t, Config{Port: 7901, Record: testRecord(0)})
	b := start(t, Config{Port: 7902, Record: testRecord(1)})
	waitHint(t, a, 10*time.Second, fromNode(testID(1)))
	waitHint(t, b, 10*time.Second, fromNode(testID(0)))

	ctx := context.Background()
	hs, err := Browse(ctx, BrowseConfig{Timeout: time.Second, MeshID: testMesh})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Record.NodeID != testID(0) || hs[1].Record.NodeID != testID(1) || hs[1].Port != 7902 {
		t.Fatalf("Browse = %+v", hs)
	}
	if hs, _ := Browse(ctx, BrowseConfig{Timeout: time.Second, Self: testID(0)}); len(hs) != 1 || hs[0].Record.NodeID != testID(1) {
		t.Fatalf("Browse without self = %+v", hs)
	}
	if hs, _ := Browse(ctx, BrowseConfig{Timeout: time.Second, MeshID: "fedcba9876543210"}); len(hs) != 0 {
		t.Fatalf("Browse of another mesh = %+v", hs)
	}
	// The context ends a browse early, keeping what was seen.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if hs, err := Browse(cctx, BrowseConfig{Timeout: time.Hour}); err != nil || len(hs) != 2 {
		t.Fatalf("Browse until ctx deadline = %+v, %v", hs, err)
	}
}

func TestBadConfig(t *testing.T) {
	good := Config{Port: 1, Record: testRecord(0)}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want error
	}{
		{"no port", func(c *Config) { c.Port = 0 }, ErrBadConfig},
		{"port too big", func(c *Config) { c.Port = 65536 }, ErrBadConfig},
		{"no record", func(c *Config) { c.Record = Record{} }, ErrBadRecord},
		{"record of another version", func(c *Config) { c.Record.Proto = 2 }, ErrProtoVersion},
		{"instance with dot", func(c *Config) { c.Instance = "a.b" }, ErrBadConfig},
		{"instance too long", func(c *Config) { c.Instance = strings.Repeat("a", 64) }, ErrBadConfig},
		{"bad mesh id", func(c *Config) { c.MeshID = "xyz" }, ErrBadConfig},
		{"browse interval too short", func(c *Config) { c.BrowseInterval = time.Millisecond }, ErrBadConfig},
		{"browse interval too long", func(c *Config) { c.BrowseInterval = 24 * time.Hour }, ErrBadConfig},
		{"negative update interval", func(c *Config) { c.UpdateInterval = -time.Second }, ErrBadConfig},
		{"negative hint buffer", func(c *Config) { c.HintBuffer = -1 }, ErrBadConfig},
		{"empty interface list", func(c *Config) { c.Interfaces = []net.Interface{} }, ErrBadConfig},
		{"unknown interface", func(c *Config) { c.Interfaces = []net.Interface{{Index: 9999, Name: "nope0"}} }, ErrBadConfig},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			if _, err := New(cfg); !errors.Is(err, tt.want) {
				t.Fatalf("New = %v, want %v", err, tt.want)
			}
		})
	}
	svc, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if svc.cfg.Instance != InstanceName("node 0", testID(0)) {
		t.Fatalf("default instance %q", svc.cfg.Instance)
	}
	other := testRecord(1)
	if err := svc.Update(other); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("Update with another node id = %v", err)
	}
	bad := testRecord(0)
	bad.Name = ""
	if err := svc.Update(bad); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("Update with an invalid record = %v", err)
	}

	ctx := context.Background()
	for _, bc := range []BrowseConfig{
		{Timeout: -1},
		{MeshID: "XYZ"},
		{Interfaces: []net.Interface{{Index: 9999, Name: "nope0"}}},
	} {
		if _, err := Browse(ctx, bc); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Browse(%+v) = %v, want ErrBadConfig", bc, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Browse(cctx, BrowseConfig{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Browse with a cancelled context = %v", err)
	}
}

// TestRefusesWithForeignInterface adds a dummy interface to the test
// namespace, which makes netsafe refuse: Run and Browse must not multicast.
func TestRefusesWithForeignInterface(t *testing.T) {
	if os.Getenv("NEARBY_ISOLATED") != "1" {
		t.Skip("needs scripts/isolated.sh (adds an interface to the namespace)")
	}
	if out, err := exec.Command("ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth10").CombinedOutput(); err != nil {
		t.Fatalf("cannot add a veth pair: %v: %s", err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "link", "del", "eth9").CombinedOutput(); err != nil {
			t.Errorf("remove eth9: %v: %s", err, out)
		}
	}()
	svc, err := New(Config{Port: 1, Record: testRecord(0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Run(ctx); err == nil || !strings.Contains(err.Error(), "refusing to multicast") {
		t.Fatalf("Run = %v, want the netsafe refusal", err)
	}
	if _, err := Browse(ctx, BrowseConfig{}); err == nil || !strings.Contains(err.Error(), "refusing to multicast") {
		t.Fatalf("Browse = %v, want the netsafe refusal", err)
	}
	if st := svc.Stats(); st.Registrations != 0 || st.Browses != 0 {
		t.Fatalf("stats %+v after refusal", st)
	}
}

func TestUpdateBeforeRun(t *testing.T) {
	obs := start(t, Config{Port: 7950, Record: testRecord(0)})
	rec := testRecord(1)
	svc, err := New(Config{Port: 7951, Record: rec, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rec.Digest = "before-run"
	if err := svc.Update(rec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}()
	h := waitHint(t, obs, 10*time.Second, fromNode(rec.NodeID))
	if h.Record.Digest != "before-run" || svc.Stats().Registrations != 1 {
		t.Fatalf("first sighting has digest %q after %d registrations", h.Record.Digest, svc.Stats().Registrations)
	}
}

func TestFilter(t *testing.T) {
	txt := mustEncode(t, testRecord(1))
	entry := func(edit func(e *zeroconf.ServiceEntry)) *zeroconf.ServiceEntry {
		e := zeroconf.NewServiceEntry("node-1-x", ServiceType, Domain)
		e.HostName, e.Port, e.Text = "node-1-x.local.", 7000, txt
		e.AddrIPv4 = []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("10.0.0.1").To4()}
		e.AddrIPv6 = []net.IP{net.ParseIP("fe80::1"), net.ParseIP("::ffff:10.0.0.1"), net.ParseIP("fd00::1")}
		if edit != nil {
			edit(e)
		}
		return e
	}
	var ignored atomic.Uint64
	f := filter{log: slog.New(slog.DiscardHandler), mesh: testMesh, zone: "lan0", ignored: &ignored}
	h, ok := f.hint(entry(nil), time.Unix(1, 0))
	if !ok || fmt.Sprint(h.Addrs) != "[10.0.0.1 fe80::1%lan0 fd00::1]" || h.Port != 7000 || h.Host != "node-1-x.local." || !h.Seen.Equal(time.Unix(1, 0)) {
		t.Fatalf("hint %+v, %v", h, ok)
	}
	if fmt.Sprint(h.AddrPorts()) != "[10.0.0.1:7000 [fe80::1%lan0]:7000 [fd00::1]:7000]" {
		t.Fatalf("AddrPorts %v", h.AddrPorts())
	}
	f.zone = ""
	if h, _ := f.hint(entry(nil), time.Now()); h.Addrs[1].Zone() != "" {
		t.Fatalf("zone %q without a single interface", h.Addrs[1].Zone())
	}
	for _, tt := range []struct {
		name string
		edit func(*zeroconf.ServiceEntry)
		f    filter
	}{
		{"no text", func(e *zeroconf.ServiceEntry) { e.Text = nil }, f},
		{"no address", func(e *zeroconf.ServiceEntry) { e.AddrIPv4, e.AddrIPv6 = nil, []net.IP{net.IPv6unspecified} }, f},
		{"port 0", func(e *zeroconf.ServiceEntry) { e.Port = 0 }, f},
		{"port too big", func(e *zeroconf.ServiceEntry) { e.Port = 70000 }, f},
		{"other mesh", nil, filter{log: f.log, mesh: "fedcba9876543210", ignored: &ignored}},
		{"self", nil, filter{log: f.log, self: testID(1), ignored: &ignored}},
	} {
		if h, ok := tt.f.hint(entry(tt.edit), time.Now()); ok {
			t.Errorf("%s: accepted %+v", tt.name, h)
		}
	}
	if n := ignored.Load(); n != 5 { // the own record is skipped silently
		t.Errorf("ignored %d, want 5", n)
	}
}
