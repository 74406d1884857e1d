// Package media is the media repository's processing of content: thumbnails of
// uploaded images, the headers a download is served with, and URL previews.
package media

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // the first frame of a GIF
	"image/jpeg"
	"image/png"
	"io"
	"strings"

	"github.com/rwcarlsen/goexif/exif"
	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/math/f64"
	_ "golang.org/x/image/webp"
)

// Thumbnail methods, as clients ask for them.
const (
	Crop  = "crop"
	Scale = "scale"
)

// Size is a thumbnail size: a box of Width × Height, which Scale fits the image in
// (never larger than the image) and Crop fills, cutting what overflows at the centre.
type Size struct {
	Width, Height int
	Method        string
}

// Name is the thumbnail's file name in the media store, by its size and type.
func (s Size) Name(contentType string) string {
	ext := "png"
	if contentType == "image/jpeg" {
		ext = "jpeg"
	}
	return fmt.Sprintf("%dx%d-%s.%s", s.Width, s.Height, s.Method, ext)
}

// DefaultSizes are Synapse's default thumbnail_sizes.
var DefaultSizes = []Size{{32, 32, Crop}, {96, 96, Crop}, {320, 240, Scale}, {640, 480, Scale}, {800, 600, Scale}}

// DefaultMaxPixels is Synapse's default max_image_pixels.
const DefaultMaxPixels = 32_000_000

var (
	// ErrNotImage is returned for content that is not an image this package thumbnails.
	ErrNotImage = errors.New("media: not an image that can be thumbnailed")
	// ErrTooManyPixels is returned for an image larger than the configured bound,
	// before its pixels are decoded.
	ErrTooManyPixels = errors.New("media: image has too many pixels to thumbnail")
)

// ThumbnailType is the type of the thumbnails of content of contentType, or "" when
// it has none: JPEG and WebP give JPEG, PNG and GIF give PNG (which keeps transparency),
// as in Synapse.
func ThumbnailType(contentType string) string {
	switch strings.ToLower(strings.TrimSpace(strings.Split(contentType, ";")[0])) {
	case "image/jpeg", "image/jpg", "image/webp":
		return "image/jpeg"
	case "image/png", "image/gif":
		return "image/png"
	}
	return ""
}

// Source is an image decoded for thumbnailing.
type Source struct {
	img image.Image
	// w and h are the image's own size as shown (its EXIF orientation applied), which
	// scaled thumbnails keep the aspect of when img is a reduced copy (Reduce).
	w, h int
	// orientation is the EXIF orientation (1 to 8) img is still stored in; 1 once it
	// is applied.
	orientation int
	Type        string // the thumbnails' content type
}

// Decode decodes an image of contentType from r, refusing (before decoding its
// pixels) one of more than maxPixels pixels, so a small file declaring a huge image
// costs no memory.
func Decode(r io.ReadSeeker, contentType string, maxPixels int64) (*Source, error) {
	out := ThumbnailType(contentType)
	if out == "" {
		return nil, ErrNotImage
	}
	cfg, _, err := image.DecodeConfig(r)
	if err != nil {
		return nil, ErrNotImage
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, ErrNotImage
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, ErrTooManyPixels
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, ErrNotImage
	}
	src := &Source{img: img, w: cfg.Width, h: cfg.Height, orientation: 1, Type: out}
	if contentType == "image/jpeg" {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		// The EXIF segment comes first in a JPEG, before any pixel data.
		src.orientation = orientation(io.LimitReader(r, maxEXIFScan))
		if src.orientation >= 5 {
			src.w, src.h = src.h, src.w // turned a quarter
		}
	}
	return src, nil
}

// maxEXIFScan bounds how far into a JPEG its EXIF segment is looked for.
const maxEXIFScan = 256 << 10

// orientation reads a JPEG's EXIF orientation: how its pixels are turned or mirrored
// from how it is shown, 1 to 8 (1, as stored, when it has none or it cannot be read).
func orientation(r io.Reader) (o int) {
	// Whatever the EXIF parser does with a malformed segment, the thumbnail is made.
	defer func() {
		if recover() != nil {
			o = 1
		}
	}()
	x, err := exif.Decode(r)
	if err != nil {
		return 1
	}
	tag, err := x.Get(exif.Orientation)
	if err != nil {
		return 1
	}
	v, err := tag.Int(0)
	if err != nil || v < 1 || v > 8 {
		return 1
	}
	return v
}

// orient applies the source's EXIF orientation to its pixels, once.
func (src *Source) orient() {
	if src.orientation <= 1 {
		return
	}
	b := src.img.Bounds()
	w, h := float64(b.Dx()), float64(b.Dy())
	// Where each orientation sends a point (x, y) of the stored image, measured from
	// its corner: dx = a·x + b·y + c, dy = d·x + e·y + f.
	m := map[int]f64.Aff3{
		2: {-1, 0, w, 0, 1, 0},  // mirrored left to right
		3: {-1, 0, w, 0, -1, h}, // upside down
		4: {1, 0, 0, 0, -1, h},  // mirrored top to bottom
		5: {0, 1, 0, 1, 0, 0},   // mirrored along the diagonal
		6: {0, -1, h, 1, 0, 0},  // a quarter turn clockwise
		7: {0, -1, h, -1, 0, w}, // mirrored along the other diagonal
		8: {0, 1, 0, -1, 0, w},  // a quarter turn anticlockwise
	}[src.orientation]
	dw, dh := b.Dx(), b.Dy()
	if src.orientation >= 5 {
		dw, dh = dh, dw
	}
	// The corner of the bounds first, so the matrix applies to points from (0, 0).
	m[2] -= m[0]*float64(b.Min.X) + m[1]*float64(b.Min.Y)
	m[5] -= m[3]*float64(b.Min.X) + m[4]*float64(b.Min.Y)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	xdraw.NearestNeighbor.Transform(dst, m, src.img, b, xdraw.Src, nil)
	src.img, src.orientation = dst, 1
}

// Reduce scales the source, once, down to the largest scale any of sizes takes it
// to, when that halves it or more, so that making each of them scales a small image
// instead of the whole source: for a 12-megapixel photo and Synapse's default sizes,
// one large scaling and five small ones instead of five large ones.
func (src *Source) Reduce(sizes []Size) {
	b := src.img.Bounds()
	w, h := src.w, src.h
	ratio := 0.0
	for _, s := range sizes {
		r := min(float64(s.Width)/float64(w), float64(s.Height)/float64(h))
		if s.Method == Crop {
			r = max(float64(s.Width)/float64(w), float64(s.Height)/float64(h))
		}
		ratio = max(ratio, r)
	}
	if ratio > 0.5 {
		return
	}
	// The stored pixels are scaled, then turned as shown: turning the small copy costs
	// less than turning the source.
	rw, rh := max(1, int(float64(b.Dx())*ratio+0.999)), max(1, int(float64(b.Dy())*ratio+0.999))
	dst := image.NewRGBA(image.Rect(0, 0, rw, rh))
	xdraw.BiLinear.Scale(dst, dst.Bounds(), src.img, b, xdraw.Src, nil)
	src.img = dst
	src.orient()
}

// Thumbnail makes the thumbnail of size s and encodes it in src.Type.
func (src *Source) Thumbnail(s Size) ([]byte, error) {
	src.orient()
	b := src.img.Bounds()
	w, h := b.Dx(), b.Dy()
	var dst *image.RGBA
	if s.Method == Crop {
		// Scale so the box is covered, then keep the box's middle: the part of the
		// source that maps onto it is a centred rectangle of the box's aspect.
		cw, ch := w, w*s.Height/s.Width
		if ch > h {
			cw, ch = h*s.Width/s.Height, h
		}
		cw, ch = max(cw, 1), max(ch, 1)
		x0, y0 := b.Min.X+(w-cw)/2, b.Min.Y+(h-ch)/2
		dst = image.NewRGBA(image.Rect(0, 0, s.Width, s.Height))
		xdraw.BiLinear.Scale(dst, dst.Bounds(), src.img, image.Rect(x0, y0, x0+cw, y0+ch), xdraw.Src, nil)
	} else {
		tw, th := fit(src.w, src.h, s.Width, s.Height)
		dst = image.NewRGBA(image.Rect(0, 0, tw, th))
		xdraw.BiLinear.Scale(dst, dst.Bounds(), src.img, b, xdraw.Src, nil)
	}
	var buf bytes.Buffer
	var err error
	if src.Type == "image/jpeg" {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 80})
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, dst)
	}
	if err != nil {
		return nil, fmt.Errorf("media: encode thumbnail: %w", err)
	}
	return buf.Bytes(), nil
}

// fit is the largest size of w × h's aspect within bw × bh and within w × h itself
// (scaling never makes an image larger), at least 1 × 1.
func fit(w, h, bw, bh int) (int, int) {
	bw, bh = min(bw, w), min(bh, h)
	if w*bh > h*bw {
		return bw, max(1, h*bw/w)
	}
	return max(1, w*bh/h), bh
}

// Choose picks, of the configured sizes, the one to serve for a request of w × h with
// method, as Synapse picks among pre-made thumbnails: of the sizes with that method,
// those reaching the requested width or height are preferred; for Crop the closest
// aspect wins, then one covering the request, then the closest area; for Scale the
// closest area. ok is false when no size has the method.
func Choose(sizes []Size, w, h int, method string) (Size, bool) {
	type scored struct {
		s   Size
		key [3]int64
	}
	var preferred, fallback []scored
	for _, s := range sizes {
		if s.Method != method {
			continue
		}
		tw, th, dw, dh := int64(s.Width), int64(s.Height), int64(w), int64(h)
		area := abs((dw - tw) * (dh - th))
		k := [3]int64{area, 0, 0}
		if method == Crop {
			covers := int64(1)
			if tw >= dw && th >= dh {
				covers = 0
			}
			k = [3]int64{abs(dw*th - dh*tw), covers, area}
		}
		if tw >= dw || th >= dh {
			preferred = append(preferred, scored{s, k})
		} else {
			fallback = append(fallback, scored{s, k})
		}
	}
	list := preferred
	if len(list) == 0 {
		list = fallback
	}
	if len(list) == 0 {
		return Size{}, false
	}
	best := list[0]
	for _, c := range list[1:] {
		if less(c.key, best.key) {
			best = c
		}
	}
	return best.s, true
}

func less(a, b [3]int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
