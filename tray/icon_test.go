package tray

import (
	"bytes"
	"image/png"
	"testing"
)

func TestIcon(t *testing.T) {
	img, err := png.Decode(bytes.NewReader(Icon()))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != IconSize || b.Dy() != IconSize {
		t.Fatalf("icon is %v, want %dx%d", b, IconSize, IconSize)
	}
	if _, _, _, a := img.At(0, 0).RGBA(); a != 0 {
		t.Errorf("corner alpha %d, want transparent", a)
	}
	// The top node is white, the disc between nodes blue.
	if r, g, b, a := img.At(IconSize/2, IconSize/4).RGBA(); r>>8 < 0xf0 || g>>8 < 0xf0 || b>>8 < 0xf0 || a>>8 != 0xff {
		t.Errorf("top node pixel %x %x %x %x, want opaque white", r>>8, g>>8, b>>8, a>>8)
	}
	if r, _, b, a := img.At(IconSize/2, IconSize/2+2).RGBA(); b <= r || a>>8 != 0xff {
		t.Errorf("centre pixel r=%x b=%x a=%x, want opaque blue", r>>8, b>>8, a>>8)
	}
	if !bytes.Equal(Icon(), Icon()) {
		t.Error("Icon is not stable")
	}
}
