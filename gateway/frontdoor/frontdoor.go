// Package frontdoor is a reverse proxy that applies Synapse's worker routing rules in
// front of Ganglion's processes, for operators without an nginx of their own: /sync and
// its relatives go to the sync workers by user, room pagination goes to one gateway per
// room, and everything else is balanced round robin over the gateways (Ganglion needs
// no room affinity for sends: any gateway publishes to the room's shard).
package frontdoor

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/streams"
)

// Rules from Synapse's worker documentation.
var (
	syncPaths = []*regexp.Regexp{
		regexp.MustCompile(`^/_matrix/client/(r0|v3)/sync$`),
		regexp.MustCompile(`^/_matrix/client/(api/v1|r0|v3)/events$`),
		regexp.MustCompile(`^/_matrix/client/(api/v1|r0|v3)/initialSync$`),
		regexp.MustCompile(`^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$`),
	}
	// Pagination of one room stays on one process.
	messagesPath = regexp.MustCompile(`^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/([^/]+)/messages$`)
)

// Router chooses a backend for each request. Gateways must not be empty; without sync
// workers the gateways serve /sync too, still by user.
type Router struct {
	Gateways    []*url.URL
	SyncWorkers []*url.URL
	// Limits are those of the server serving Handler: long polls extend its write
	// timeout.
	Limits serve.Limits
	Log    *zap.Logger

	next atomic.Uint64
}

// Handler returns the proxy.
func (rt *Router) Handler() http.Handler {
	log := rt.Log
	if log == nil {
		log = zap.NewNop()
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(rt.Pick(pr.In))
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away (a long poll given up); no backend failed.
				log.Debug("client cancelled", zap.String("path", r.URL.Path), zap.Error(err))
				return
			}
			log.Warn("backend unreachable", zap.String("path", r.URL.Path), zap.Error(err))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"the homeserver process for this request is unreachable"}`))
		},
	}
	longPoll := serve.LongPoll(proxy, rt.Limits)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isSyncPath(r.URL.Path) {
			longPoll.ServeHTTP(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

func isSyncPath(path string) bool {
	for _, re := range syncPaths {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

// Pick returns the backend for r.
func (rt *Router) Pick(r *http.Request) *url.URL {
	path := r.URL.Path
	if isSyncPath(path) {
		backends := rt.SyncWorkers
		if len(backends) == 0 {
			backends = rt.Gateways
		}
		return backends[streams.ShardIndex(userKey(r), len(backends))]
	}
	if m := messagesPath.FindStringSubmatch(path); m != nil {
		return rt.Gateways[streams.ShardIndex(m[2], len(rt.Gateways))]
	}
	return rt.Gateways[(rt.next.Add(1)-1)%uint64(len(rt.Gateways))]
}

// userKey identifies the user of a request from their access token without a lookup:
// Ganglion's tokens (like Synapse's) are "syt_<base64 localpart>_<random>", so the
// localpart part keeps every device of a user on one sync worker.
func userKey(r *http.Request) string {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		token = r.URL.Query().Get("access_token")
	}
	if rest, ok := strings.CutPrefix(token, "syt_"); ok {
		if local, _, ok := strings.Cut(rest, "_"); ok {
			return local
		}
	}
	return token
}
