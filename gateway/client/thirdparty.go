package client

import (
	"net/http"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// Third-party networks, as the application services that bridge them describe them:
// the protocols, and lookups of their users and locations (processors/appservice).

func (s *Server) registerThirdParty(r router) {
	r.handle("GET", "/thirdparty/protocols", modernVersions, s.authed(s.thirdPartyProtocols))
	r.handle("GET", "/thirdparty/protocol/{protocol}", modernVersions, s.authed(s.thirdPartyProtocol))
	for _, kind := range []string{"user", "location"} {
		r.handle("GET", "/thirdparty/"+kind, modernVersions, s.authed(s.thirdPartyLookup(kind)))
		r.handle("GET", "/thirdparty/"+kind+"/{protocol}", modernVersions, s.authed(s.thirdPartyLookup(kind)))
	}
}

func (s *Server) thirdPartyProtocols(w http.ResponseWriter, r *http.Request, _ Device) {
	matrix.WriteJSON(w, http.StatusOK, s.AppServices.Protocols(r.Context(), s.AppServiceHTTP, ""))
}

func (s *Server) thirdPartyProtocol(w http.ResponseWriter, r *http.Request, _ Device) {
	protocol := r.PathValue("protocol")
	info, ok := s.AppServices.Protocols(r.Context(), s.AppServiceHTTP, protocol)[protocol]
	if !ok {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "The protocol is unknown"))
		return
	}
	matrix.WriteJSON(w, http.StatusOK, info)
}

// thirdPartyLookup answers kind's lookups: with a protocol, by that protocol's fields
// (the query's parameters); without, by a Matrix user ID (userid) or alias (alias).
func (s *Server) thirdPartyLookup(kind string) func(w http.ResponseWriter, r *http.Request, _ Device) {
	return func(w http.ResponseWriter, r *http.Request, _ Device) {
		fields := r.URL.Query()
		fields.Del("access_token")
		matrix.WriteJSON(w, http.StatusOK, s.AppServices.Lookup(r.Context(), s.AppServiceHTTP, kind, r.PathValue("protocol"), fields))
	}
}
