package serve

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// ReplicationPrefix starts the paths of Synapse's internal replication API.
const ReplicationPrefix = "/_synapse/replication/"

// Replication is the replication resource of a listener: Synapse's processes call each
// other there, Ganglion's replicate through NATS, so no internal endpoint is served.
// With a secret (worker_replication_secret), a request without it as a bearer token is
// 403 M_FORBIDDEN, as Synapse refuses it; any other is 404 M_UNRECOGNIZED.
func Replication(secret string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if secret != "" {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(secret)) != 1 {
				matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Invalid or missing replication secret"))
				return
			}
		}
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeUnrecognized,
			"No internal endpoint: this server's processes replicate through NATS"))
	})
}

// Mount serves the paths under prefix with h and the others with rest; rest may be
// nil for a listener that serves h alone (the federation or replication API of a
// listener with more resources, say).
func Mount(prefix string, h, rest http.Handler) http.Handler {
	if rest == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, prefix) {
			h.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// Health answers GET /health with 200 "OK", as every HTTP listener of Synapse does, for
// load balancers and the front door; the other paths go to h.
func Health(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("OK"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
