package config

import (
	"gopkg.in/yaml.v3"
)

// ServerNotices is Synapse's server_notices section. With a system user's localpart,
// server admins may send a user notices (POST /_synapse/admin/v1/send_server_notice),
// into a room the system user keeps with that user.
type ServerNotices struct {
	Localpart     string
	DisplayName   string
	AvatarURL     string
	RoomName      string
	RoomAvatarURL string
	RoomTopic     string
	// AutoJoin joins the user to their notices room instead of inviting them.
	AutoJoin bool
}

// Enabled reports whether server notices may be sent.
func (n ServerNotices) Enabled() bool { return n.Localpart != "" }

// defaultNoticesRoomName is Synapse's room_name default.
const defaultNoticesRoomName = "Server Notices"

// strInto sets dst to a string value.
func (l *loader) strInto(dst *string) func(*yaml.Node, string) {
	return func(v *yaml.Node, p string) {
		if s, ok := l.str(v, p); ok {
			*dst = s
		}
	}
}

func (l *loader) serverNotices(dst *ServerNotices, n *yaml.Node, path string) {
	l.object(n, path, fields{
		"system_mxid_localpart": func(v *yaml.Node, p string) {
			s, ok := l.nonEmpty(v, p)
			if ok && !validLocalpart(s) {
				l.fail(p, "%q is not a valid user localpart (lower-case letters, digits and ._=-/+)", s)
				return
			}
			dst.Localpart = s
		},
		"system_mxid_display_name": l.strInto(&dst.DisplayName),
		"system_mxid_avatar_url":   l.strInto(&dst.AvatarURL),
		"room_name":                l.strInto(&dst.RoomName),
		"room_avatar_url":          l.strInto(&dst.RoomAvatarURL),
		"room_topic":               l.strInto(&dst.RoomTopic),
		"auto_join":                func(v *yaml.Node, p string) { dst.AutoJoin, _ = l.boolean(v, p) },
	})
}

// validLocalpart reports whether s may be the localpart of a new user ID.
func validLocalpart(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '=' || c == '-' || c == '/' || c == '+') {
			return false
		}
	}
	return s != ""
}
