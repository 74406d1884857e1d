package media

import (
	"mime"
	"net/http"
	"slices"
	"strings"
)

// inlineTypes are the types a browser may show in place (Synapse's list); any other
// download is an attachment. SVG is not one: it can carry script.
var inlineTypes = []string{
	"text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
	"image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
	"video/mp4", "video/webm", "video/ogg", "video/quicktime",
	"audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
	"audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
}

// textTypes get "; charset=UTF-8" when they are served without parameters.
var textTypes = []string{
	"text/css", "text/csv", "text/html", "text/calendar", "text/plain", "text/javascript",
	"application/json", "application/ld+json", "application/rtf", "image/svg+xml", "text/xml",
}

// SetDownloadHeaders sets the headers of a download of content of contentType named
// name (none when ""): its type, a Content-Disposition that lets a browser show in
// place only the types of a safe list, and a sandboxing Content-Security-Policy, so
// media served from the homeserver's origin can run nothing there.
func SetDownloadHeaders(h http.Header, contentType, name string) {
	if slices.Contains(textTypes, strings.ToLower(contentType)) {
		contentType += "; charset=UTF-8"
	}
	h.Set("Content-Type", contentType)
	disposition := "attachment"
	if base, _, err := mime.ParseMediaType(contentType); err == nil && slices.Contains(inlineTypes, base) {
		disposition = "inline"
	}
	if name != "" {
		if isToken(name) {
			disposition += "; filename=" + name
		} else {
			disposition += "; filename*=utf-8''" + extValue(name)
		}
	}
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "+
		"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
	h.Set("X-Content-Security-Policy", "sandbox;")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Robots-Tag", "noindex, nofollow, noarchive, noimageindex")
	h.Set("Cache-Control", "public,max-age=86400,s-maxage=0,proxy-revalidate")
}

// extValue percent-encodes s as an RFC 5987 ext-value: every byte but attr-chars.
func extValue(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// isToken reports whether s is an RFC 2616 token, which a filename parameter may hold
// bare.
func isToken(s string) bool {
	for _, c := range []byte(s) {
		if c <= 32 || c >= 127 || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}
