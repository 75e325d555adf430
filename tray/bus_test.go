package tray

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseBusAddresses(t *testing.T) {
	tests := []struct {
		in      string
		want    []BusAddress
		network string // of the first entry
		addr    string
	}{
		{"unix:path=/run/user/1000/bus", []BusAddress{{"unix", map[string]string{"path": "/run/user/1000/bus"}}}, "unix", "/run/user/1000/bus"},
		{"unix:abstract=/tmp/dbus-XyZ,guid=0123abcd", []BusAddress{{"unix", map[string]string{"abstract": "/tmp/dbus-XyZ", "guid": "0123abcd"}}}, "unix", "@/tmp/dbus-XyZ"},
		{"unix:path=/tmp/a%20b%2cc;tcp:host=127.0.0.1,port=4000", []BusAddress{
			{"unix", map[string]string{"path": "/tmp/a b,c"}},
			{"tcp", map[string]string{"host": "127.0.0.1", "port": "4000"}},
		}, "unix", "/tmp/a b,c"},
		{"tcp:host=::1,port=55", []BusAddress{{"tcp", map[string]string{"host": "::1", "port": "55"}}}, "tcp", "[::1]:55"},
		{"autolaunch:", []BusAddress{{"autolaunch", map[string]string{}}}, "", ""},
		{"unix:tmpdir=/tmp", []BusAddress{{"unix", map[string]string{"tmpdir": "/tmp"}}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBusAddresses(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			n, a, ok := got[0].Dial()
			if n != tt.network || a != tt.addr || ok != (tt.network != "") {
				t.Fatalf("Dial = %q %q %v, want %q %q", n, a, ok, tt.network, tt.addr)
			}
		})
	}
}

func TestParseBusAddressesBad(t *testing.T) {
	for _, in := range []string{"", ";", "nocolon", ":path=/x", "unix:path", "unix:=x", "unix:path=/a,path=/b", "unix:path=%zz", "unix:path=%4"} {
		t.Run(in, func(t *testing.T) {
			if _, err := ParseBusAddresses(in); !errors.Is(err, ErrBadBusAddress) {
				t.Fatalf("err %v, want ErrBadBusAddress", err)
			}
		})
	}
}

func TestBusAddressString(t *testing.T) {
	a := BusAddress{"unix", map[string]string{"path": "/tmp/a b", "guid": "x;y"}}
	if got, want := a.String(), "unix:guid=x%3by,path=/tmp/a%20b"; got != want {
		t.Fatalf("String %q, want %q", got, want)
	}
}

func TestCheckBus(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	abstract := fmt.Sprintf("nearby-tray-test-%d", len(dir))
	aln, err := net.Listen("unix", "@"+abstract+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer aln.Close()
	ctx := context.Background()

	for _, good := range []string{
		"unix:path=" + sock,
		"unix:abstract=" + abstract + t.Name(),
		"unix:path=" + filepath.Join(dir, "missing") + ";unix:path=" + sock, // the second answers
	} {
		if err := CheckBus(ctx, good); err != nil {
			t.Errorf("CheckBus(%q): %v", good, err)
		}
	}
	for _, bad := range []string{
		"unix:path=" + filepath.Join(dir, "missing"),
		"autolaunch:",
		"unix:tmpdir=" + dir,
		"garbage",
	} {
		err := CheckBus(ctx, bad)
		if !errors.Is(err, ErrNoSessionBus) {
			t.Errorf("CheckBus(%q) = %v, want ErrNoSessionBus", bad, err)
		}
	}
}

func TestSessionBus(t *testing.T) {
	t.Setenv(EnvSessionBus, "")
	_, err := SessionBus(context.Background())
	if !errors.Is(err, ErrNoSessionBus) || !strings.Contains(err.Error(), "not set") {
		t.Fatalf("unset: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "bus")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv(EnvSessionBus, "unix:path="+sock)
	if addr, err := SessionBus(context.Background()); err != nil || addr != "unix:path="+sock {
		t.Fatalf("SessionBus = %q, %v", addr, err)
	}
}

// FuzzParseBusAddresses: parsing never panics, and what parses formats
// back to text that parses to the same addresses.
func FuzzParseBusAddresses(f *testing.F) {
	for _, s := range []string{"unix:path=/run/user/1000/bus", "unix:abstract=/tmp/x,guid=ab", "tcp:host=h,port=1;unix:path=%2f", "autolaunch:", "x:a=%", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		as, err := ParseBusAddresses(s)
		if err != nil {
			return
		}
		var parts []string
		for _, a := range as {
			parts = append(parts, a.String())
			a.Dial()
		}
		again, err := ParseBusAddresses(strings.Join(parts, ";"))
		if err != nil {
			t.Fatalf("%q parsed, but its formatted form %q does not: %v", s, strings.Join(parts, ";"), err)
		}
		if !reflect.DeepEqual(as, again) {
			t.Fatalf("round trip of %q: %+v became %+v", s, as, again)
		}
	})
}
