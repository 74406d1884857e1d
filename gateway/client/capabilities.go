package client

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// capabilities is the body of GET /capabilities. What is not offered is said so, so
// clients do not show controls that would fail: profiles and passwords can be changed,
// third-party identifiers cannot (there is no identity server).
type capabilities struct {
	Capabilities struct {
		RoomVersions struct {
			Default   string            `json:"default"`
			Available map[string]string `json:"available"`
		} `json:"m.room_versions"`
		ChangePassword  enabled `json:"m.change_password"`
		SetDisplayname  enabled `json:"m.set_displayname"`
		SetAvatarURL    enabled `json:"m.set_avatar_url"`
		ThreePIDChanges enabled `json:"m.3pid_changes"`
	} `json:"capabilities"`
}

type enabled struct {
	Enabled bool `json:"enabled"`
}

func (s *Server) registerCapabilities(r router) {
	r.handle("GET", "/capabilities", modernVersions, s.authed(s.capabilities))
}

func (s *Server) capabilities(w http.ResponseWriter, _ *http.Request, _ Device) {
	var c capabilities
	c.Capabilities.RoomVersions.Default = DefaultRoomVersion
	c.Capabilities.ChangePassword.Enabled = true
	c.Capabilities.SetDisplayname.Enabled = true
	c.Capabilities.SetAvatarURL.Enabled = true
	c.Capabilities.RoomVersions.Available = map[string]string{}
	for v := range gomatrixserverlib.RoomVersions() {
		if supportedRoomVersion(string(v)) {
			c.Capabilities.RoomVersions.Available[string(v)] = "stable"
		}
	}
	matrix.WriteJSON(w, http.StatusOK, c)
}
