package config

import (
	"time"

	"gopkg.in/yaml.v3"
)

// Discovery is what clients are told of the server and of TURN servers, in Synapse's
// keys.
type Discovery struct {
	// PublicBaseURL is public_baseurl; with ServeClientWellKnown
	// (serve_client_wellknown) it is served as m.homeserver's base_url in
	// /.well-known/matrix/client, with ExtraWellKnown
	// (extra_well_known_client_content) beside it.
	PublicBaseURL        string
	ServeClientWellKnown bool
	ExtraWellKnown       map[string]any
	TURNURIs             []string
	TURNSharedSecret     string
	TURNUsername         string
	TURNPassword         string
	TURNUserLifetime     time.Duration
}

// ClientWellKnown is the content of /.well-known/matrix/client, nil when not served.
func (d Discovery) ClientWellKnown() map[string]any {
	if !d.ServeClientWellKnown || d.PublicBaseURL == "" {
		return nil
	}
	out := map[string]any{}
	for k, v := range d.ExtraWellKnown {
		out[k] = v
	}
	out["m.homeserver"] = map[string]string{"base_url": d.PublicBaseURL}
	return out
}

func (l *loader) discoveryFields(d *Discovery, f fields) {
	str := l.strInto
	f["public_baseurl"] = str(&d.PublicBaseURL)
	f["serve_client_wellknown"] = func(v *yaml.Node, p string) { d.ServeClientWellKnown, _ = l.boolean(v, p) }
	f["extra_well_known_client_content"] = func(v *yaml.Node, p string) {
		var m map[string]any
		if err := l.resolve(v).Decode(&m); err != nil {
			l.fail(p, "must be a mapping: %v", err)
			return
		}
		d.ExtraWellKnown = m
	}
	f["turn_uris"] = func(v *yaml.Node, p string) {
		d.TURNURIs = []string{}
		l.list(v, p, func(v *yaml.Node, p string) {
			if s, ok := l.nonEmpty(v, p); ok {
				d.TURNURIs = append(d.TURNURIs, s)
			}
		})
	}
	f["turn_shared_secret"] = str(&d.TURNSharedSecret)
	f["turn_username"] = str(&d.TURNUsername)
	f["turn_password"] = str(&d.TURNPassword)
	f["turn_user_lifetime"] = func(v *yaml.Node, p string) { d.TURNUserLifetime, _ = l.synapseDuration(v, p) }
}
