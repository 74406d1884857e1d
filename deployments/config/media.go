package config

import (
	"math"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ganglionhq/ganglion/gateway/media"
)

// MediaRepo is the media repository's part of the configuration, with Synapse's keys.
type MediaRepo struct {
	// StorePath is media_store_path: where uploaded files and thumbnails are kept,
	// shared by every process serving media.
	StorePath string
	media.Config
	// URLPreviews is url_preview_enabled; URLPreviewBlacklist and URLPreviewWhitelist
	// are the IP ranges previews may not (and may) fetch from, and MaxSpiderSize
	// bounds what they read.
	URLPreviews                              bool
	URLPreviewBlacklist, URLPreviewWhitelist []netip.Prefix
	MaxSpiderSize                            int64
}

// defaultMediaRepo is Synapse's defaults.
func defaultMediaRepo() MediaRepo {
	return MediaRepo{
		StorePath: "media_store",
		Config: media.Config{
			MaxUploadSize: media.DefaultMaxUploadSize, MaxPixels: media.DefaultMaxPixels, Sizes: media.DefaultSizes,
			Authenticated: true, MaxPending: media.DefaultMaxPending, UnusedExpiration: media.DefaultUnusedExpiration,
		},
		MaxSpiderSize: media.DefaultMaxSpiderSize,
	}
}

// ServesMedia reports whether this process serves the media repository: the main
// process unless enable_media_repo is false, and synapse.app.media_repository workers.
func (c *Config) ServesMedia() bool {
	if c.IsMain() {
		return c.EnableMediaRepo
	}
	return c.LegacyWorkerApp == "synapse.app.media_repository"
}

// RunsMediaJobs reports whether this process runs the media repository's background
// jobs: the instance media_instance_running_background_jobs names, or, when it names
// none, every process serving media (the jobs are safe to run twice).
func (c *Config) RunsMediaJobs() bool {
	if !c.ServesMedia() {
		return false
	}
	if c.MediaInstanceRunningBackgroundJobs != "" {
		return c.MediaInstanceRunningBackgroundJobs == c.InstanceName()
	}
	return true
}

// mediaFields adds the media repository's keys to f.
func (l *loader) mediaFields(m *MediaRepo, f fields) {
	size := func(dst *int64) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			if n, ok := l.synapseSize(v, p); ok {
				*dst = n
			}
		}
	}
	f["media_store_path"] = func(v *yaml.Node, p string) {
		if s, ok := l.nonEmpty(v, p); ok {
			m.StorePath = s
		}
	}
	f["max_upload_size"] = size(&m.MaxUploadSize)
	f["max_image_pixels"] = size(&m.MaxPixels)
	f["max_spider_size"] = size(&m.MaxSpiderSize)
	f["dynamic_thumbnails"] = func(v *yaml.Node, p string) { m.Dynamic, _ = l.boolean(v, p) }
	f["enable_authenticated_media"] = func(v *yaml.Node, p string) {
		if b, ok := l.boolean(v, p); ok {
			m.Authenticated = b
		}
	}
	f["max_pending_media_uploads"] = func(v *yaml.Node, p string) {
		if n, ok := l.integer(v, p, 1, 10_000); ok {
			m.MaxPending = int(n)
		}
	}
	f["unused_expiration_time"] = func(v *yaml.Node, p string) {
		if d, ok := l.synapseDuration(v, p); ok {
			m.UnusedExpiration = d
		}
	}
	f["thumbnail_sizes"] = func(v *yaml.Node, p string) { m.Sizes = l.thumbnailSizes(v, p) }
	f["media_upload_limits"] = func(v *yaml.Node, p string) { m.UploadLimits = l.uploadLimits(v, p) }
	f["url_preview_enabled"] = func(v *yaml.Node, p string) { m.URLPreviews, _ = l.boolean(v, p) }
	f["url_preview_ip_range_blacklist"] = func(v *yaml.Node, p string) { m.URLPreviewBlacklist = l.prefixes(v, p) }
	f["url_preview_ip_range_whitelist"] = func(v *yaml.Node, p string) { m.URLPreviewWhitelist = l.prefixes(v, p) }
}

func (l *loader) thumbnailSizes(n *yaml.Node, path string) []media.Size {
	out := []media.Size{}
	l.list(n, path, func(v *yaml.Node, p string) {
		s := media.Size{Method: media.Scale}
		set := l.object(v, p, fields{
			"width": func(v *yaml.Node, p string) {
				if n, ok := l.integer(v, p, 1, 4096); ok {
					s.Width = int(n)
				}
			},
			"height": func(v *yaml.Node, p string) {
				if n, ok := l.integer(v, p, 1, 4096); ok {
					s.Height = int(n)
				}
			},
			"method": func(v *yaml.Node, p string) {
				if m, ok := l.str(v, p); ok {
					if m != media.Crop && m != media.Scale {
						l.fail(p, "must be crop or scale, got %q", m)
					}
					s.Method = m
				}
			},
		})
		if !set["width"] || !set["height"] {
			l.fail(p, "a thumbnail size needs width and height")
			return
		}
		out = append(out, s)
	})
	return out
}

func (l *loader) uploadLimits(n *yaml.Node, path string) []media.UploadLimit {
	out := []media.UploadLimit{}
	l.list(n, path, func(v *yaml.Node, p string) {
		var lim media.UploadLimit
		set := l.object(v, p, fields{
			"time_period": func(v *yaml.Node, p string) { lim.Period, _ = l.synapseDuration(v, p) },
			"max_size":    func(v *yaml.Node, p string) { lim.MaxSize, _ = l.synapseSize(v, p) },
		})
		if !set["time_period"] || !set["max_size"] {
			l.fail(p, "a media upload limit needs time_period and max_size")
			return
		}
		out = append(out, lim)
	})
	return out
}

// synapseSize decodes a size as Synapse writes them: an integer of bytes, or digits
// with a unit among K, M, G and T (powers of 1024).
func (l *loader) synapseSize(n *yaml.Node, path string) (int64, bool) {
	n = l.resolve(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		return l.integer(n, path, 0, math.MaxInt64)
	}
	s, ok := l.str(n, path)
	if !ok {
		return 0, false
	}
	unit, digits := int64(1), s
	if s != "" {
		if i := strings.IndexByte("KMGTkmgt", s[len(s)-1]); i >= 0 {
			unit, digits = int64(1)<<(10*(i%4+1)), s[:len(s)-1]
		}
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/unit {
		l.fail(path, `must be a size such as "50M", "10K" or a number of bytes, got %q`, s)
		return 0, false
	}
	return v * unit, true
}

// validateMedia checks what the media keys need together.
func (l *loader) validateMedia(m *MediaRepo) {
	if m.URLPreviews && len(m.URLPreviewBlacklist) == 0 {
		l.failAt("url_preview_enabled", "url_preview_ip_range_blacklist",
			"required when url_preview_enabled is true: list the IP ranges previews may not fetch from (at least the private ones)")
	}
}
