package discovery

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestEncodeLayout(t *testing.T) {
	r := testRecord(1)
	r.Proto = 0 // means ProtocolVersion
	txt, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"v=1", "id=" + testID(1), "n=node 1", "m=" + testMesh, "d=" + fmt.Sprintf("%064x", 1),
		"s=chat@1.2.0", "s=files@0.1.0",
	}
	if !slices.Equal(txt, want) {
		t.Fatalf("Encode = %q\nwant     %q", txt, want)
	}
	got, err := DecodeRecord(txt)
	if err != nil {
		t.Fatal(err)
	}
	r.Proto = ProtocolVersion
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
}

func TestEncodeKeepsMore(t *testing.T) {
	r := testRecord(2)
	r.More = 7
	txt, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if txt[len(txt)-1] != "more=7" {
		t.Fatalf("last string %q, want more=7", txt[len(txt)-1])
	}
	got, err := DecodeRecord(txt)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func manySubs(n int) []Sub {
	subs := make([]Sub, n)
	for i := range subs {
		subs[i] = Sub{Name: fmt.Sprintf("plugin%03d", i), Version: fmt.Sprintf("1.%d.0", i)}
	}
	return subs
}

func TestEncodeDropsWhatDoesNotFit(t *testing.T) {
	for _, limit := range []int{MaxTXTBytes, 1000, 400, 260} {
		for _, more := range []int{0, 5} {
			r := testRecord(3)
			r.Subservices = manySubs(150)
			r.More = more
			txt, err := r.EncodeLimit(limit)
			if err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if n := txtSize(txt); n > limit {
				t.Errorf("limit %d: TXT is %d bytes", limit, n)
			}
			for _, s := range txt {
				if len(s) > MaxTXTString {
					t.Errorf("string of %d bytes", len(s))
				}
			}
			got, err := DecodeRecord(txt)
			if err != nil {
				t.Fatal(err)
			}
			k := len(got.Subservices)
			if k == 150 || !slices.Equal(got.Subservices, r.Subservices[:k]) {
				t.Errorf("limit %d: %d subservices, not a strict prefix", limit, k)
			}
			if got.More != more+150-k {
				t.Errorf("limit %d: more=%d, want %d", limit, got.More, more+150-k)
			}
			// Nothing else would have fit: one more s= overflows.
			if k < 150 && txtSize(txt)+1+len("s="+r.Subservices[k].String()) <= limit {
				t.Errorf("limit %d: subservice %d would still fit", limit, k)
			}
		}
	}
}

func TestEncodeLimitTooSmall(t *testing.T) {
	r := testRecord(1)
	if _, err := r.EncodeLimit(100); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("EncodeLimit(100) = %v, want ErrBadRecord", err)
	}
	// The fixed keys fit but more= does not.
	r.Subservices = manySubs(3)
	fixed := 0
	for _, s := range []string{"v=1", "id=" + r.NodeID, "n=" + r.Name, "m=" + r.MeshID, "d=" + r.Digest} {
		fixed += 1 + len(s)
	}
	if _, err := r.EncodeLimit(fixed + 3); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("EncodeLimit(fixed+3) = %v, want ErrBadRecord", err)
	}
}

func TestEncodeRejectsBadRecords(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen+1)
	for _, tt := range []struct {
		name string
		edit func(*Record)
		want error
	}{
		{"proto 2", func(r *Record) { r.Proto = 2 }, ErrProtoVersion},
		{"short node id", func(r *Record) { r.NodeID = "abc" }, ErrBadRecord},
		{"uppercase node id", func(r *Record) { r.NodeID = strings.ToUpper(r.NodeID) }, ErrBadRecord},
		{"empty name", func(r *Record) { r.Name = "" }, ErrBadRecord},
		{"long name", func(r *Record) { r.Name = long }, ErrBadRecord},
		{"control in name", func(r *Record) { r.Name = "a\nb" }, ErrBadRecord},
		{"invalid utf8 name", func(r *Record) { r.Name = "a\xffb" }, ErrBadRecord},
		{"bad mesh id", func(r *Record) { r.MeshID = "0123456789abcdeg" }, ErrBadRecord},
		{"space in digest", func(r *Record) { r.Digest = "ab cd" }, ErrBadRecord},
		{"long digest", func(r *Record) { r.Digest = strings.Repeat("a", MaxDigestLen+1) }, ErrBadRecord},
		{"uppercase sub", func(r *Record) { r.Subservices[0].Name = "Chat" }, ErrBadRecord},
		{"sub starts with digit", func(r *Record) { r.Subservices[0].Name = "1chat" }, ErrBadRecord},
		{"sub segment starts with digit", func(r *Record) { r.Subservices[0].Name = "chat-2" }, ErrBadRecord},
		{"sub double dash", func(r *Record) { r.Subservices[0].Name = "chat--x" }, ErrBadRecord},
		{"sub at sign", func(r *Record) { r.Subservices[0].Name = "chat@x" }, ErrBadRecord},
		{"version not strict", func(r *Record) { r.Subservices[0].Version = "1.2" }, ErrBadRecord},
		{"version with v", func(r *Record) { r.Subservices[0].Version = "v1.2.0" }, ErrBadRecord},
		{"negative more", func(r *Record) { r.More = -1 }, ErrBadRecord},
		{"huge more", func(r *Record) { r.More = MaxMore }, ErrBadRecord},
		{"overflowing more", func(r *Record) { r.More = math.MaxInt }, ErrBadRecord},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := testRecord(1)
			tt.edit(&r)
			if _, err := r.Encode(); !errors.Is(err, tt.want) {
				t.Fatalf("Encode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeRecord(t *testing.T) {
	good, err := testRecord(1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	with := func(extra ...string) []string { return append(slices.Clone(good), extra...) }
	without := func(key string) []string {
		return slices.DeleteFunc(slices.Clone(good), func(s string) bool { return strings.HasPrefix(s, key+"=") })
	}
	replace := func(key, val string) []string {
		out := slices.Clone(good)
		for i, s := range out {
			if strings.HasPrefix(s, key+"=") {
				out[i] = key + "=" + val
			}
		}
		return out
	}
	for _, tt := range []struct {
		name string
		txt  []string
		want error // nil: decodes to testRecord(1)
	}{
		{"good", good, nil},
		{"unknown keys ignored", with("path=/", "x", "txtvers=1"), nil},
		{"empty strings ignored", with("", ""), nil},
		{"keys are case-insensitive", append([]string{"V=1"}, good[1:]...), nil},
		{"order does not matter", append(slices.Clone(good[5:]), good[:5]...), nil},
		{"nil", nil, ErrBadRecord},
		{"foreign", []string{"path=/", "model=printer"}, ErrBadRecord},
		{"missing v", without("v"), ErrBadRecord},
		{"missing id", without("id"), ErrBadRecord},
		{"missing n", without("n"), ErrBadRecord},
		{"missing m", without("m"), ErrBadRecord},
		{"missing d", without("d"), ErrBadRecord},
		{"duplicate v", with("v=1"), ErrBadRecord},
		{"duplicate id", with("id=" + testID(2)), ErrBadRecord},
		{"duplicate n", with("N=other"), ErrBadRecord},
		{"duplicate more", with("more=1", "more=2"), ErrBadRecord},
		{"v without value", append([]string{"v"}, good[1:]...), ErrBadRecord},
		{"v zero", replace("v", "0"), ErrBadRecord},
		{"v garbage", replace("v", "one"), ErrBadRecord},
		{"v negative", replace("v", "-1"), ErrBadRecord},
		{"v huge", replace("v", "99999999999999999999"), ErrBadRecord},
		{"v 2", replace("v", "2"), ErrProtoVersion},
		{"v 2 with garbage", []string{"v=2", "id=zz"}, ErrProtoVersion},
		{"id garbage", replace("id", "not-an-id"), ErrBadRecord},
		{"n without value", append(without("n"), "n"), ErrBadRecord},
		{"n control", replace("n", "a\x00b"), ErrBadRecord},
		{"m garbage", replace("m", "xyz"), ErrBadRecord},
		{"d garbage", replace("d", "a b"), ErrBadRecord},
		{"s without version", with("s=chat"), ErrBadRecord},
		{"s bad version", with("s=chat@latest"), ErrBadRecord},
		{"s bad name", with("s=Chat@1.0.0"), ErrBadRecord},
		{"s two ats", with("s=chat@1.0.0@x"), ErrBadRecord},
		{"s without value", with("s"), ErrBadRecord},
		{"more garbage", with("more=x"), ErrBadRecord},
		{"more negative", with("more=-1"), ErrBadRecord},
		{"more huge", with("more=9999999"), ErrBadRecord},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := DecodeRecord(tt.txt)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if want := testRecord(1); !reflect.DeepEqual(r, want) {
					t.Fatalf("got %+v, want %+v", r, want)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeRecord = %+v, %v; want %v", r, err, tt.want)
			}
			if errors.Is(err, ErrProtoVersion) && r.Proto != 2 {
				t.Fatalf("Proto = %d, want 2 with ErrProtoVersion", r.Proto)
			}
		})
	}
}

func TestInstanceName(t *testing.T) {
	id := testID(7)
	for _, tt := range []struct{ name, id, want string }{
		{"alice", id, "alice-" + id[:8]},
		{"Alice's MacBook Pro", id, "alice-s-macbook-pro-" + id[:8]},
		{"lab.example.com", id, "lab-example-com-" + id[:8]},
		{"  --Café__42--  ", id, "caf-42-" + id[:8]},
		{"", id, "nearby-" + id[:8]},
		{"日本", id, "nearby-" + id[:8]},
		{"alice", id[:8], "alice-" + id[:8]},
		{"alice", "", "alice"},
		{strings.Repeat("ab-", 40), id, strings.TrimRight(strings.Repeat("ab-", 40)[:54], "-") + "-" + id[:8]},
	} {
		got := InstanceName(tt.name, tt.id)
		if got != tt.want {
			t.Errorf("InstanceName(%q, %q) = %q, want %q", tt.name, tt.id, got, tt.want)
		}
	}
	// Whatever the input, the result is a valid instance name.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("aZ09 .-_'é日\x00\n")
	for range 2000 {
		b := make([]rune, rng.IntN(90))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		got := InstanceName(string(b), id)
		if err := checkInstance(got); err != nil || strings.Contains(got, ".") || strings.Contains(got, "--") ||
			!strings.HasSuffix(got, "-"+id[:8]) || strings.HasPrefix(got, "-") {
			t.Fatalf("InstanceName(%q) = %q: %v", string(b), got, err)
		}
	}
}

func ipnet(s string) net.Addr {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func TestPickAddrs(t *testing.T) {
	lo := []net.Addr{ipnet("127.0.0.1/8"), ipnet("::1/128")}
	lan := []net.Addr{ipnet("fe80::1/64"), ipnet("10.1.0.5/16"), ipnet("fd00::5/64"), ipnet("10.1.0.5/16")}
	ll := []net.Addr{ipnet("fe80::2/64")}
	mapped := []net.Addr{&net.IPNet{IP: net.ParseIP("10.2.0.1"), Mask: net.CIDRMask(96+16, 128)}}
	var many []net.Addr
	for i := range 12 {
		many = append(many, ipnet(fmt.Sprintf("fd00::%d/64", i+1)))
	}
	for _, tt := range []struct {
		name string
		sets [][]net.Addr
		want string
	}{
		{"lo only", [][]net.Addr{lo}, "[127.0.0.1 ::1]"},
		{"lan beats lo, v4 first, no duplicates", [][]net.Addr{lo, lan}, "[10.1.0.5 fd00::5]"},
		{"link-local only when nothing else", [][]net.Addr{lo, ll}, "[fe80::2]"},
		{"mapped v4 is unmapped", [][]net.Addr{mapped}, "[10.2.0.1]"},
		{"capped", [][]net.Addr{many}, fmt.Sprint(func() []netip.Addr {
			var a []netip.Addr
			for i := range MaxAdvertisedAddrs {
				a = append(a, netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1)))
			}
			return a
		}())},
		{"nothing", nil, "[]"},
	} {
		if got := fmt.Sprint(pickAddrs(tt.sets)); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestTxtBudget(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}
	short := txtBudget("a-12345678", "a-12345678", addrs)
	long := txtBudget(strings.Repeat("a", 63), strings.Repeat("a", 63), addrs)
	if short != MaxTXTBytes && short <= long {
		t.Errorf("budget short %d, long %d", short, long)
	}
	// Worst case: longest names and MaxAdvertisedAddrs IPv6 addresses still
	// leave room for the fixed keys at their largest.
	var v6 []netip.Addr
	for i := range MaxAdvertisedAddrs {
		v6 = append(v6, netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1)))
	}
	worst := txtBudget(strings.Repeat("a", 63), strings.Repeat("a", 63), v6)
	r := testRecord(1)
	r.Name = strings.Repeat("n", MaxNameLen)
	r.Digest = strings.Repeat("d", MaxDigestLen)
	r.Subservices = manySubs(150)
	if _, err := r.EncodeLimit(worst); err != nil {
		t.Fatalf("worst-case budget %d: %v", worst, err)
	}
	t.Logf("TXT budget: short names, 2 addrs %d; 63-byte names, 2 addrs %d; 63-byte names, %d IPv6 %d", short, long, MaxAdvertisedAddrs, worst)
}
