package client

import (
	"net/http"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/schemas"
)

// storableParams refuses, with 400 M_INVALID_PARAM, a request whose path or query holds
// a string Postgres cannot store (NUL or invalid UTF-8, as %00 or %FF decode to). Every
// route goes through it, so no handler passes such a path value or query parameter to
// a query; request bodies get the same guarantee from matrix.DecodeBody.
func storableParams(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// URL.Path is the unescaped path: it holds every path value of the route.
		if !schemas.StorableText(r.URL.Path) {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "The request path holds NUL or invalid UTF-8"))
			return
		}
		for k, vs := range r.URL.Query() {
			for _, v := range append(vs, k) {
				if !schemas.StorableText(v) {
					matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "The query parameter %q holds NUL or invalid UTF-8", k))
					return
				}
			}
		}
		h(w, r)
	}
}
