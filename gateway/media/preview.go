package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"
)

// DefaultMaxSpiderSize is Synapse's default max_spider_size.
const DefaultMaxSpiderSize = 10 << 20

// previewTTL is how long a URL's preview is served from memory, as Synapse caches.
const previewTTL = time.Hour

// maxCachedPreviews bounds the previews kept in memory.
const maxCachedPreviews = 10_000

// Bounds of an OpenGraph property kept in a preview, as Synapse's.
const (
	maxPropertyName  = 50
	maxPropertyValue = 1000
)

// PreviewTimeout bounds each request of a preview.
const PreviewTimeout = 10 * time.Second

// maxRedirects is how many redirects a preview follows.
const maxRedirects = 5

// FollowRedirects is the redirect policy of a preview's client: up to five, each to an
// address the client's dialer checks again.
func FollowRedirects(_ *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrPreviewFetch, maxRedirects)
	}
	return nil
}

// ErrPreviewFetch is returned when a URL or its image cannot be fetched (a network
// error, a status other than 200, a body over MaxSize): the client is told 502.
var ErrPreviewFetch = errors.New("media: the URL could not be fetched")

// Previewer fetches URLs and reads their OpenGraph properties (url_preview_enabled).
type Previewer struct {
	// Client reaches the URLs; it must refuse the blocked IP ranges
	// (url_preview_ip_range_blacklist) on the address it dials.
	Client *http.Client
	// MaxSize (max_spider_size) bounds what is read of a page or an image.
	MaxSize int64
	// UserAgent names the server to the sites it fetches.
	UserAgent string

	mu    sync.Mutex
	cache map[string]cachedPreview
}

type cachedPreview struct {
	props map[string]any
	at    time.Time
}

// StoreImage stores an image a preview shows and returns its mxc URI.
type StoreImage func(ctx context.Context, data []byte, contentType, name string) (string, error)

// Preview returns the OpenGraph properties of the page at u, with its image (og:image)
// fetched and stored by store, and its size as matrix:image:size; an image URL is its
// own preview. Previews are kept an hour.
func (p *Previewer) Preview(ctx context.Context, u *url.URL, store StoreImage) (map[string]any, error) {
	key := u.String()
	p.mu.Lock()
	if c, ok := p.cache[key]; ok && time.Since(c.at) < previewTTL {
		p.mu.Unlock()
		return c.props, nil
	}
	p.mu.Unlock()
	body, ctype, err := p.fetch(ctx, u)
	if err != nil {
		return nil, err
	}
	props := map[string]any{}
	var img *url.URL
	switch mt := mediaType(ctype); {
	case strings.HasPrefix(mt, "image/"):
		img = u
	case mt == "text/html" || mt == "application/xhtml+xml":
		props = ParseOpenGraph(body, ctype)
		if s, ok := props["og:image"].(string); ok {
			delete(props, "og:image")
			img, _ = u.Parse(s)
		}
	}
	if img != nil {
		data := body
		itype := ctype
		if img != u {
			data, itype, err = p.fetch(ctx, img)
		}
		if err == nil {
			if err := p.addImage(ctx, props, data, itype, store); err != nil {
				return nil, err
			}
		}
	}
	p.mu.Lock()
	if p.cache == nil || len(p.cache) >= maxCachedPreviews {
		p.cache = map[string]cachedPreview{}
	}
	p.cache[key] = cachedPreview{props: props, at: time.Now()}
	p.mu.Unlock()
	return props, nil
}

// addImage stores a preview's image and describes it.
func (p *Previewer) addImage(ctx context.Context, props map[string]any, data []byte, ctype string, store StoreImage) error {
	mxc, err := store(ctx, data, ctype, "")
	if err != nil {
		return err
	}
	props["og:image"] = mxc
	props["og:image:type"] = mediaType(ctype)
	props["matrix:image:size"] = len(data)
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(data)); err == nil {
		props["og:image:width"], props["og:image:height"] = cfg.Width, cfg.Height
	}
	return nil
}

// fetch reads u's body, up to MaxSize, and its media type.
func (p *Previewer) fetch(ctx context.Context, u *url.URL) ([]byte, string, error) {
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, "", fmt.Errorf("%w: scheme %q", ErrPreviewFetch, u.Scheme)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrPreviewFetch, err)
	}
	req.Header.Set("User-Agent", p.UserAgent)
	req.Header.Set("Accept-Language", "en")
	res, err := p.Client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrPreviewFetch, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("%w: status %d", ErrPreviewFetch, res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, p.MaxSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrPreviewFetch, err)
	}
	if int64(len(body)) > p.MaxSize {
		return nil, "", fmt.Errorf("%w: over max_spider_size", ErrPreviewFetch)
	}
	ctype := res.Header.Get("Content-Type")
	if ctype == "" {
		ctype = http.DetectContentType(body)
	}
	return body, ctype, nil
}

// ParseOpenGraph reads the OpenGraph properties of an HTML page served as ctype (its
// charset is honoured): every <meta property="og:…"> (or name="og:…"), and, when the
// page has none, og:title from <title> and og:description from the description meta.
// Names over 50 characters and values over 1,000 are left out.
func ParseOpenGraph(body []byte, ctype string) map[string]any {
	props := map[string]any{}
	r, err := charset.NewReader(bytes.NewReader(body), ctype)
	if err != nil {
		r = bytes.NewReader(body)
	}
	var title, description string
	inTitle := false
	z := html.NewTokenizer(r)
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := props["og:title"]; !ok && title != "" {
				props["og:title"] = clip(strings.TrimSpace(title))
			}
			if _, ok := props["og:description"]; !ok && description != "" {
				props["og:description"] = clip(description)
			}
			return props
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = title == ""
			case "meta":
				var key, content string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property", "name":
						if key == "" || strings.HasPrefix(string(v), "og:") {
							key = string(v)
						}
					case "content":
						content = string(v)
					}
				}
				switch {
				case strings.HasPrefix(key, "og:") && len(key) <= maxPropertyName && len(content) <= maxPropertyValue:
					props[key] = content
				case strings.EqualFold(key, "description"):
					description = content
				}
			}
		case html.TextToken:
			if inTitle {
				title += string(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
}

func clip(s string) string {
	if len(s) > maxPropertyValue {
		return s[:maxPropertyValue]
	}
	return s
}

// mediaType is the media type of a Content-Type header, lowercased, without parameters.
func mediaType(ctype string) string {
	t, _, err := mime.ParseMediaType(ctype)
	if err != nil {
		return ""
	}
	return t
}
