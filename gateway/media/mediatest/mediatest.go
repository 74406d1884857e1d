// Package mediatest makes the images media tests upload: small ones of every type
// thumbnails are made from, and a decompression bomb.
package mediatest

import (
	"bytes"
	"compress/zlib"
	_ "embed"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"slices"
)

// WebP is a 150 × 100 lossy WebP (from golang.org/x/image's test data: Go has no WebP
// encoder).
//
//go:embed blue-purple-pink.lossy.webp
var WebP []byte

// WebPWidth and WebPHeight are WebP's size.
const WebPWidth, WebPHeight = 150, 100

// Image is a w × h gradient, so scaled and cropped thumbnails differ.
func Image(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	return img
}

// PNG encodes a w × h image as PNG.
func PNG(w, h int) []byte {
	var b bytes.Buffer
	_ = png.Encode(&b, Image(w, h)) // writing to memory does not fail
	return b.Bytes()
}

// JPEG encodes a w × h image as JPEG.
func JPEG(w, h int) []byte {
	var b bytes.Buffer
	_ = jpeg.Encode(&b, Image(w, h), &jpeg.Options{Quality: 85})
	return b.Bytes()
}

// GIF encodes a two-frame w × h GIF.
func GIF(w, h int) []byte {
	pal := color.Palette{color.Black, color.White, color.RGBA{255, 0, 0, 255}}
	frames := []*image.Paletted{image.NewPaletted(image.Rect(0, 0, w, h), pal), image.NewPaletted(image.Rect(0, 0, w, h), pal)}
	for i := range frames[0].Pix {
		frames[0].Pix[i] = uint8(i % 3)
	}
	var b bytes.Buffer
	_ = gif.EncodeAll(&b, &gif.GIF{Image: frames, Delay: []int{10, 10}})
	return b.Bytes()
}

// Bomb is a valid grey PNG of w × h black pixels, written without holding them: a
// 10,000 × 10,000 bomb is about 100 KB that decodes to 100 MB.
func Bomb(w, h int) []byte {
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 0 // 8-bit greyscale
	chunk(&out, "IHDR", ihdr)
	var data bytes.Buffer
	z, _ := zlib.NewWriterLevel(&data, zlib.BestCompression)
	row := make([]byte, w+1) // filter byte 0, then the pixels
	for range h {
		_, _ = z.Write(row)
	}
	_ = z.Close()
	chunk(&out, "IDAT", data.Bytes())
	chunk(&out, "IEND", nil)
	return out.Bytes()
}

func chunk(w io.Writer, kind string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	_, _ = w.Write(n[:])
	crc := crc32.NewIEEE()
	_, _ = io.WriteString(crc, kind)
	_, _ = crc.Write(data)
	_, _ = io.WriteString(w, kind)
	_, _ = w.Write(data)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	_, _ = w.Write(n[:])
}

// WithOrientation returns a JPEG with an EXIF segment giving its orientation (1 to 8),
// right after the start of image.
func WithOrientation(jpg []byte, orientation uint16) []byte {
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, // big-endian header, first IFD at 8
		0, 1, // one entry
		0x01, 0x12, 0, 3, 0, 0, 0, 1, byte(orientation >> 8), byte(orientation), 0, 0, // Orientation, SHORT, 1
		0, 0, 0, 0} // no next IFD
	payload := append([]byte("Exif\x00\x00"), tiff...)
	n := len(payload) + 2
	segment := append([]byte{0xff, 0xe1, byte(n >> 8), byte(n)}, payload...)
	return slices.Concat(jpg[:2], segment, jpg[2:])
}

// Halves is a w × h JPEG whose left half is red and right half blue.
func Halves(w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 255, A: 255}
			if x >= w/2 {
				c = color.RGBA{B: 255, A: 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
