package tray

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"sync"
)

// IconSize is the width and height of Icon in pixels.
const IconSize = 32

var (
	iconOnce sync.Once
	iconPNG  []byte
)

// Icon returns the tray icon as PNG: three linked nodes on a blue disc.
// It is drawn in code, so the repository holds no binary asset.
func Icon() []byte {
	iconOnce.Do(func() {
		var b bytes.Buffer
		if err := png.Encode(&b, drawIcon(IconSize)); err != nil {
			panic("tray: encode icon: " + err.Error()) // cannot happen for an RGBA image
		}
		iconPNG = b.Bytes()
	})
	return iconPNG
}

func drawIcon(n int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, n, n))
	s := float64(n)
	c := s / 2
	bg := color.NRGBA{0x1f, 0x6f, 0xd1, 0xff}
	fg := color.NRGBA{0xff, 0xff, 0xff, 0xff}
	nodes := [3][2]float64{{c, s * 0.25}, {s * 0.27, s * 0.7}, {s * 0.73, s * 0.7}}
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			px, py := float64(x)+0.5, float64(y)+0.5
			// Anti-aliased disc: coverage from the distance to the edge.
			a := clamp(c - math.Hypot(px-c, py-c) + 0.5)
			if a <= 0 {
				continue
			}
			col := bg
			ink := 0.0
			for i, p := range nodes {
				ink = max(ink, clamp(s*0.11-math.Hypot(px-p[0], py-p[1])+0.5))
				q := nodes[(i+1)%3]
				ink = max(ink, clamp(s*0.035-segDist(px, py, p, q)+0.5))
			}
			col = mix(col, fg, ink)
			col.A = uint8(a * 255)
			img.SetNRGBA(x, y, col)
		}
	}
	return img
}

func clamp(v float64) float64 { return min(1, max(0, v)) }

func mix(a, b color.NRGBA, t float64) color.NRGBA {
	f := func(x, y uint8) uint8 { return uint8(float64(x)*(1-t) + float64(y)*t) }
	return color.NRGBA{f(a.R, b.R), f(a.G, b.G), f(a.B, b.B), 0xff}
}

// segDist is the distance from (x, y) to the segment p-q.
func segDist(x, y float64, p, q [2]float64) float64 {
	dx, dy := q[0]-p[0], q[1]-p[1]
	t := clamp(((x-p[0])*dx + (y-p[1])*dy) / (dx*dx + dy*dy))
	return math.Hypot(x-(p[0]+t*dx), y-(p[1]+t*dy))
}
