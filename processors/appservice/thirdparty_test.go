package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// thirdPartyService registers a service listing protocols, answering from answers
// (path with query → body; anything else 404), and returns its file.
func thirdPartyService(t *testing.T, dir, id string, protocols []string, answers map[string]string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hs-"+id {
			http.Error(w, "", http.StatusForbidden)
			return
		}
		body, ok := answers[r.URL.RequestURI()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	list, _ := json.Marshal(protocols)
	return writeRegistration(t, dir, id+".yaml", fmt.Sprintf(`id: %s
url: %s
as_token: as-%s
hs_token: hs-%s
sender_localpart: %sbot
protocols: %s
namespaces: {users: [{regex: '@%s_.*', exclusive: true}]}
`, id, srv.URL, id, id, id, list, id))
}

// TestThirdParty: the protocols of two services listing one are put together, their
// instances with instance_ids; a service answering malformed metadata or results, or
// failing, is left out; lookups go to the services of the protocol only.
func TestThirdParty(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		thirdPartyService(t, dir, "a", []string{"irc"}, map[string]string{
			"/_matrix/app/v1/thirdparty/protocol/irc":                  `{"user_fields":["network","nickname"],"location_fields":["network","channel"],"icon":"mxc://a/irc","field_types":{},"instances":[{"desc":"Libera","network_id":"libera","fields":{"network":"libera.chat"}}]}`,
			"/_matrix/app/v1/thirdparty/user/irc?nickname=bob":         `[{"userid":"@a_bob:hs","protocol":"irc","fields":{"nickname":"bob"}},{"protocol":"irc"}]`,
			"/_matrix/app/v1/thirdparty/location?alias=%23a_chan%3Ahs": `[{"alias":"#a_chan:hs","protocol":"irc","fields":{"channel":"#chan"}}]`,
		}),
		thirdPartyService(t, dir, "b", []string{"irc", "slack"}, map[string]string{
			"/_matrix/app/v1/thirdparty/protocol/irc":          `{"user_fields":[],"location_fields":[],"icon":"","field_types":{},"instances":[{"desc":"OFTC","network_id":"oftc","fields":{}}]}`,
			"/_matrix/app/v1/thirdparty/protocol/slack":        `{"user_fields":[],"instances":"not a list"}`,
			"/_matrix/app/v1/thirdparty/user/irc?nickname=bob": `not json`,
		}),
		thirdPartyService(t, dir, "c", []string{"matrix"}, map[string]string{}),
	}
	services, errs := Load(files, "hs")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	client := http.DefaultClient

	protocols := services.Protocols(ctx, client, "")
	if len(protocols) != 1 {
		t.Fatalf("protocols: %v", protocols)
	}
	irc := protocols["irc"]
	raw, _ := json.Marshal(irc["instances"])
	if irc["icon"] != "mxc://a/irc" || !strings.Contains(string(raw), `"instance_id":"a|libera"`) || !strings.Contains(string(raw), `"instance_id":"b|oftc"`) {
		t.Errorf("irc: %v, instances %s", irc, raw)
	}
	if only := services.Protocols(ctx, client, "slack"); len(only) != 0 {
		t.Errorf("a protocol whose metadata is malformed: %v", only)
	}

	users := services.Lookup(ctx, client, "user", "irc", url.Values{"nickname": {"bob"}})
	if len(users) != 1 || !strings.Contains(string(users[0]), "@a_bob:hs") {
		t.Errorf("users: %s", users)
	}
	locations := services.Lookup(ctx, client, "location", "", url.Values{"alias": {"#a_chan:hs"}})
	if len(locations) != 1 || !strings.Contains(string(locations[0]), "#a_chan:hs") {
		t.Errorf("locations: %s", locations)
	}
	if none := services.Lookup(ctx, client, "user", "slack", url.Values{}); len(none) != 0 {
		t.Errorf("a protocol nobody answers: %s", none)
	}
}
