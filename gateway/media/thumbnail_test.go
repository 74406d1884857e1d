package media

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"runtime"
	"testing"

	"github.com/ganglionhq/ganglion/gateway/media/mediatest"
)

func TestThumbnailEveryType(t *testing.T) {
	cases := []struct {
		name, ctype, out string
		data             []byte
		w, h             int
	}{
		{"png", "image/png", "png", mediatest.PNG(1000, 673), 1000, 673},
		{"jpeg", "image/jpeg", "jpeg", mediatest.JPEG(640, 960), 640, 960},
		{"gif", "image/gif", "png", mediatest.GIF(300, 200), 300, 200},
		{"webp", "image/webp", "jpeg", mediatest.WebP, mediatest.WebPWidth, mediatest.WebPHeight},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, err := Decode(bytes.NewReader(c.data), c.ctype, DefaultMaxPixels)
			if err != nil {
				t.Fatal(err)
			}
			src.Reduce(DefaultSizes)
			for _, s := range DefaultSizes {
				data, err := src.Thumbnail(s)
				if err != nil {
					t.Fatal(err)
				}
				got, format, err := image.DecodeConfig(bytes.NewReader(data))
				if err != nil || format != c.out {
					t.Fatalf("%v: format %q, err %v; want %s", s, format, err, c.out)
				}
				ww, wh := s.Width, s.Height
				if s.Method == Scale {
					ww, wh = fit(c.w, c.h, s.Width, s.Height)
				}
				if got.Width != ww || got.Height != wh {
					t.Errorf("%v of %dx%d: %dx%d, want %dx%d", s, c.w, c.h, got.Width, got.Height, ww, wh)
				}
			}
		})
	}
}

func TestFit(t *testing.T) {
	for _, c := range []struct{ w, h, bw, bh, ww, wh int }{
		{1000, 673, 32, 32, 32, 21},    // wide: the width binds
		{640, 960, 320, 240, 160, 240}, // tall: the height binds
		{100, 50, 800, 600, 100, 50},   // never larger than the image
		{10000, 1, 32, 32, 32, 1},      // at least one pixel
	} {
		if w, h := fit(c.w, c.h, c.bw, c.bh); w != c.ww || h != c.wh {
			t.Errorf("fit(%d×%d in %d×%d) = %d×%d, want %d×%d", c.w, c.h, c.bw, c.bh, w, h, c.ww, c.wh)
		}
	}
}

func TestChoose(t *testing.T) {
	for _, c := range []struct {
		w, h   int
		method string
		want   Size
		ok     bool
	}{
		{32, 32, Crop, Size{32, 32, Crop}, true},
		{50, 50, Crop, Size{96, 96, Crop}, true},
		{500, 500, Crop, Size{96, 96, Crop}, true}, // none covers: the closest of the rest
		{32, 32, Scale, Size{320, 240, Scale}, true},
		{700, 500, Scale, Size{800, 600, Scale}, true}, // reaching the request wins over a closer area
		{600, 400, Scale, Size{640, 480, Scale}, true},
		{2000, 2000, Scale, Size{800, 600, Scale}, true},
		{32, 32, "stretch", Size{}, false},
	} {
		got, ok := Choose(DefaultSizes, c.w, c.h, c.method)
		if got != c.want || ok != c.ok {
			t.Errorf("Choose(%d×%d %s) = %v %v, want %v %v", c.w, c.h, c.method, got, ok, c.want, c.ok)
		}
	}
}

func TestNotThumbnailed(t *testing.T) {
	for _, c := range []struct {
		ctype string
		data  []byte
		want  error
	}{
		{"text/plain", []byte("hello"), ErrNotImage},
		{"image/png", []byte("not a png"), ErrNotImage},
		{"image/svg+xml", []byte("<svg/>"), ErrNotImage},
		{"image/png", mediatest.PNG(200, 200), ErrTooManyPixels}, // over a bound of 1,000 pixels
	} {
		if _, err := Decode(bytes.NewReader(c.data), c.ctype, 1000); !errors.Is(err, c.want) {
			t.Errorf("%s %q: %v, want %v", c.ctype, c.data[:min(len(c.data), 8)], err, c.want)
		}
	}
}

// TestBombRefusedWithoutMemory decodes nothing of a 10,000 × 10,000 PNG (100 MB of
// pixels in about 100 KB): the allocations of refusing it stay under 1 MB.
func TestBombRefusedWithoutMemory(t *testing.T) {
	bomb := mediatest.Bomb(10_000, 10_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Decode(bytes.NewReader(bomb), "image/png", DefaultMaxPixels)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooManyPixels) {
		t.Fatalf("bomb: %v, want ErrTooManyPixels", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("refusing the bomb allocated %d bytes", grew)
	}
	// Within the bound it decodes: the bomb is a real image.
	if _, err := Decode(bytes.NewReader(mediatest.Bomb(100, 100)), "image/png", DefaultMaxPixels); err != nil {
		t.Fatalf("a small image made the same way: %v", err)
	}
}

func FuzzThumbnail(f *testing.F) {
	f.Add(mediatest.PNG(3, 2), "image/png")
	f.Add(mediatest.JPEG(4, 4), "image/jpeg")
	f.Add(mediatest.WithOrientation(mediatest.JPEG(4, 2), 6), "image/jpeg")
	f.Add(mediatest.GIF(2, 5), "image/gif")
	f.Add(mediatest.WebP, "image/webp")
	f.Fuzz(func(t *testing.T, data []byte, ctype string) {
		src, err := Decode(bytes.NewReader(data), ctype, 1<<16)
		if err != nil {
			return
		}
		for _, s := range []Size{{8, 8, Crop}, {5, 3, Scale}} {
			if _, err := src.Thumbnail(s); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// BenchmarkThumbnail12MP decodes a 12-megapixel JPEG and makes the default sizes, as
// an upload of a phone's photo does.
func BenchmarkThumbnail12MP(b *testing.B) {
	data := mediatest.JPEG(4000, 3000)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		src, err := Decode(bytes.NewReader(data), "image/jpeg", DefaultMaxPixels)
		if err != nil {
			b.Fatal(err)
		}
		src.Reduce(DefaultSizes)
		for _, s := range DefaultSizes {
			if _, err := src.Thumbnail(s); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A JPEG's EXIF orientation is applied: a photo stored on its side is thumbnailed as
// shown, with the shown aspect, whether the source is reduced first or not.
func TestThumbnailOrientation(t *testing.T) {
	red := func(c color.Color) bool { r, _, b, _ := c.RGBA(); return r > 0xc000 && b < 0x4000 }
	blue := func(c color.Color) bool { r, _, b, _ := c.RGBA(); return b > 0xc000 && r < 0x4000 }
	for _, c := range []struct {
		orientation uint16
		// w, h is the thumbnail's size; the colour tests say where red and blue are.
		w, h                 int
		topLeft, bottomRight func(color.Color) bool
	}{
		{1, 64, 32, red, blue},
		{3, 64, 32, blue, red}, // upside down: the right half shows on the left
		{6, 32, 64, red, blue}, // a quarter turn clockwise: the left half on top
		{8, 32, 64, blue, red}, // anticlockwise: the right half on top
		{2, 64, 32, blue, red}, // mirrored left to right
		{5, 32, 64, red, blue}, // transposed: the left half on top
	} {
		for _, reduced := range []bool{false, true} {
			data := mediatest.WithOrientation(mediatest.Halves(640, 320), c.orientation)
			src, err := Decode(bytes.NewReader(data), "image/jpeg", 1<<24)
			if err != nil {
				t.Fatal(err)
			}
			box := Size{Width: 64, Height: 64, Method: Scale}
			if reduced {
				src.Reduce([]Size{box})
			}
			out, err := src.Thumbnail(box)
			if err != nil {
				t.Fatal(err)
			}
			img, err := jpeg.Decode(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			b := img.Bounds()
			if b.Dx() != c.w || b.Dy() != c.h || !c.topLeft(img.At(2, 2)) || !c.bottomRight(img.At(b.Dx()-3, b.Dy()-3)) {
				t.Errorf("orientation %d (reduced %v): %dx%d, top left %v, bottom right %v", c.orientation, reduced,
					b.Dx(), b.Dy(), img.At(2, 2), img.At(b.Dx()-3, b.Dy()-3))
			}
		}
	}
}
