package media

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseOpenGraph(t *testing.T) {
	for _, c := range []struct {
		name, page, ctype string
		want              map[string]any
	}{
		{"og tags", `<html><head><title>Ignored</title>
			<meta property="og:title" content="The Rock" /><meta property="og:type" content="video.movie">
			<meta name="og:url" content="http://www.imdb.com/title/tt0117500/"><meta property="og:image" content="test.png">
			</head><body>x</body></html>`, "text/html",
			map[string]any{"og:title": "The Rock", "og:type": "video.movie", "og:url": "http://www.imdb.com/title/tt0117500/", "og:image": "test.png"}},
		{"title and description", `<title> A page </title><meta name="Description" content="About it">`, "text/html",
			map[string]any{"og:title": "A page", "og:description": "About it"}},
		{"too long", `<meta property="og:` + strings.Repeat("x", 60) + `" content="a"><meta property="og:title" content="` +
			strings.Repeat("y", 1001) + `">`, "text/html", map[string]any{}},
		{"latin-1", "<title>caf\xe9</title>", "text/html; charset=iso-8859-1", map[string]any{"og:title": "café"}},
		{"not html", "\x00\x01binary", "text/html", map[string]any{}},
	} {
		if got := ParseOpenGraph([]byte(c.page), c.ctype); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzParseOpenGraph(f *testing.F) {
	f.Add([]byte(`<meta property="og:title" content="x"><title>t</title>`), "text/html; charset=utf-8")
	f.Add([]byte("<title>caf\xe9"), "text/html; charset=windows-1252")
	f.Fuzz(func(t *testing.T, page []byte, ctype string) {
		for k, v := range ParseOpenGraph(page, ctype) {
			if len(k) > maxPropertyName || len(v.(string)) > maxPropertyValue {
				t.Fatalf("kept %q (%d bytes)", k, len(v.(string)))
			}
		}
	})
}
