package media

import (
	"mime"
	"net/http"
	"testing"
)

func TestDownloadHeaders(t *testing.T) {
	for _, c := range []struct {
		ctype, name, wantType, wantDisposition string
	}{
		{"image/png", "ascii", "image/png", "inline"},
		{"image/png", "name with spaces", "image/png", "inline"},
		{"image/png", "name;with;semicolons", "image/png", "inline"},
		{"image/png", "🐔", "image/png", "inline"},
		{"image/png", "../../etc/passwd", "image/png", "inline"},
		{"text/plain", "", "text/plain; charset=UTF-8", "inline"},
		{"Text/Plain; charset=utf-8", "a.txt", "Text/Plain; charset=utf-8", "inline"},
		{"text/html", "x.html", "text/html; charset=UTF-8", "attachment"},
		{"image/svg+xml", "x.svg", "image/svg+xml; charset=UTF-8", "attachment"},
		{"img/png", "x", "img/png", "attachment"},
		{"application/octet-stream", "a+b=c", "application/octet-stream", "attachment"},
	} {
		h := http.Header{}
		SetDownloadHeaders(h, c.ctype, c.name)
		if got := h.Get("Content-Type"); got != c.wantType {
			t.Errorf("%s: Content-Type %q, want %q", c.ctype, got, c.wantType)
		}
		disp, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
		if err != nil || disp != c.wantDisposition || params["filename"] != c.name {
			t.Errorf("%s %q: Content-Disposition %q parses to %q %v (%v)", c.ctype, c.name, h.Get("Content-Disposition"), disp, params, err)
		}
		if h.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no Content-Security-Policy", c.ctype)
		}
	}
}
