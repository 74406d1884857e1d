package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
)

const testGatewayURL = "http://127.0.0.1:9/_matrix/push/v1/notify"

func httpPusher(appID, pushkey string, appendTo bool) *mautrix.Pusher {
	kind := mautrix.PusherKindHTTP
	return &mautrix.Pusher{Kind: &kind, AppID: mautrix.PusherAppID(appID), PushKey: pushkey, Append: appendTo,
		AppDisplayName: "Test App", DeviceDisplayName: "Phone", Language: "en", ProfileTag: "tag",
		Data: mautrix.PusherData{"url": testGatewayURL, "format": "event_id_only", "extra": map[string]any{"n": 1.5}}}
}

// pusherKeys lists a user's pushers as app_id/pushkey.
func pusherKeys(ctx context.Context, t *testing.T, c *mautrix.Client) []string {
	t.Helper()
	res, err := c.GetPushers(ctx)
	if err != nil {
		t.Fatalf("GET /pushers of %s: %v", c.UserID, err)
	}
	var keys []string
	for _, p := range res.Pushers {
		keys = append(keys, string(p.AppID)+"/"+p.PushKey)
	}
	slices.Sort(keys)
	return keys
}

// TestPushers: pushers set, replaced, shared with append or taken without it, deleted
// with kind null, removed with the device that set them, and the spec's errors, driven
// with mautrix-go against a single process.
func TestPushers(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")

	if got := pusherKeys(ctx, t, alice); len(got) != 0 {
		t.Fatalf("a new user's pushers: %v", got)
	}
	if err := alice.SetPusher(ctx, httpPusher("app", "k1", false)); err != nil {
		t.Fatal(err)
	}
	res, err := alice.GetPushers(ctx)
	if err != nil || len(res.Pushers) != 1 {
		t.Fatalf("pushers after one set: %+v, %v", res, err)
	}
	p := res.Pushers[0]
	if p.Kind == nil || *p.Kind != mautrix.PusherKindHTTP || p.AppID != "app" || p.PushKey != "k1" || p.AppDisplayName != "Test App" ||
		p.DeviceDisplayName != "Phone" || p.Language != "en" || p.ProfileTag != "tag" || p.Data.URL() != testGatewayURL ||
		p.Data.Format() != mautrix.PushFormatEventIDOnly || p.Data["extra"].(map[string]any)["n"] != 1.5 {
		t.Errorf("the pusher as stored: %+v", p)
	}
	// The same app_id and pushkey again replace it.
	again := httpPusher("app", "k1", false)
	again.Language = "fr"
	if err := alice.SetPusher(ctx, again); err != nil {
		t.Fatal(err)
	}
	if res, err := alice.GetPushers(ctx); err != nil || len(res.Pushers) != 1 || res.Pushers[0].Language != "fr" {
		t.Fatalf("pushers after a replacement: %+v, %v", res, err)
	}

	// Another user's set with append shares the pushkey; without append it takes it.
	if err := alice.SetPusher(ctx, httpPusher("app", "k2", false)); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetPusher(ctx, httpPusher("app", "k2", true)); err != nil {
		t.Fatal(err)
	}
	if got := pusherKeys(ctx, t, alice); !slices.Equal(got, []string{"app/k1", "app/k2"}) {
		t.Errorf("alice's pushers after bob appended to k2: %v", got)
	}
	if err := bob.SetPusher(ctx, httpPusher("app", "k1", false)); err != nil {
		t.Fatal(err)
	}
	if got := pusherKeys(ctx, t, alice); !slices.Equal(got, []string{"app/k2"}) {
		t.Errorf("alice's pushers after bob took k1: %v", got)
	}
	if got := pusherKeys(ctx, t, bob); !slices.Equal(got, []string{"app/k1", "app/k2"}) {
		t.Errorf("bob's pushers: %v", got)
	}

	// kind null deletes; deleting what is not there is fine too.
	for range 2 {
		if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "pushers", "set"),
			map[string]any{"kind": nil, "app_id": "app", "pushkey": "k2"}, nil); err != nil {
			t.Fatalf("delete with kind null: %v", err)
		}
	}
	if got := pusherKeys(ctx, t, alice); len(got) != 0 {
		t.Errorf("alice's pushers after deleting k2: %v", got)
	}

	// A pusher goes with the device that set it: a logout takes it, not the others'.
	if err := alice.SetPusher(ctx, httpPusher("app", "k3", false)); err != nil {
		t.Fatal(err)
	}
	phone := login(ctx, t, base, alice.UserID.Localpart(), "")
	if err := phone.SetPusher(ctx, httpPusher("app", "k4", false)); err != nil {
		t.Fatal(err)
	}
	if got := pusherKeys(ctx, t, alice); !slices.Equal(got, []string{"app/k3", "app/k4"}) {
		t.Fatalf("alice's pushers from two devices: %v", got)
	}
	if _, err := phone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pusherKeys(ctx, t, alice); !slices.Equal(got, []string{"app/k3"}) {
		t.Errorf("alice's pushers after the phone logged out: %v", got)
	}
	// A new login as a device replaces its token, and the pushers set with the old one go.
	tablet := login(ctx, t, base, alice.UserID.Localpart(), "TABLET")
	if err := tablet.SetPusher(ctx, httpPusher("app", "k5", false)); err != nil {
		t.Fatal(err)
	}
	login(ctx, t, base, alice.UserID.Localpart(), "TABLET")
	if got := pusherKeys(ctx, t, alice); !slices.Equal(got, []string{"app/k3"}) {
		t.Errorf("alice's pushers after a new login as the tablet: %v", got)
	}

	// Errors, with Synapse's status and errcode; none stores anything.
	post := func(body map[string]any) error {
		_, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "pushers", "set"), body, nil)
		return err
	}
	full := func(change func(m map[string]any)) map[string]any {
		m := map[string]any{"kind": "http", "app_id": "app", "pushkey": "bad", "app_display_name": "A",
			"device_display_name": "D", "lang": "en", "data": map[string]any{"url": testGatewayURL}}
		change(m)
		return m
	}
	for _, c := range []struct {
		what   string
		body   map[string]any
		status int
		code   string
	}{
		{"no lang", full(func(m map[string]any) { delete(m, "lang") }), 400, "M_MISSING_PARAM"},
		{"no data", full(func(m map[string]any) { delete(m, "data") }), 400, "M_MISSING_PARAM"},
		{"kind null without a pushkey", map[string]any{"kind": nil, "app_id": "app"}, 400, "M_MISSING_PARAM"},
		{"no url", full(func(m map[string]any) { m["data"] = map[string]any{} }), 400, "M_MISSING_PARAM"},
		{"a url off the gateway path", full(func(m map[string]any) { m["data"] = map[string]any{"url": "http://gw/notify"} }), 400, "M_MISSING_PARAM"},
		{"a url without a host", full(func(m map[string]any) { m["data"] = map[string]any{"url": "/_matrix/push/v1/notify"} }), 400, "M_MISSING_PARAM"},
		{"data not an object", full(func(m map[string]any) { m["data"] = "x" }), 400, "M_INVALID_PARAM"},
		{"an unknown kind", full(func(m map[string]any) { m["kind"] = "carrier-pigeon" }), 400, "M_INVALID_PARAM"},
		{"an email pusher", full(func(m map[string]any) { m["kind"] = "email" }), 400, "M_INVALID_PARAM"},
		{"app_id too long", full(func(m map[string]any) { m["app_id"] = strings.Repeat("a", 65) }), 400, "M_INVALID_PARAM"},
		{"pushkey too long", full(func(m map[string]any) { m["pushkey"] = strings.Repeat("k", 513) }), 400, "M_INVALID_PARAM"},
		{"a number for a string", full(func(m map[string]any) { m["lang"] = 5 }), 400, "M_INVALID_PARAM"},
		{"append not a boolean", full(func(m map[string]any) { m["append"] = "yes" }), 400, "M_INVALID_PARAM"},
	} {
		wantError(t, c.what, post(c.body), c.status, c.code)
	}
	if got := pusherKeys(ctx, t, alice); !slices.Equal(got, []string{"app/k3"}) {
		t.Errorf("alice's pushers after the refused sets: %v", got)
	}
}
