package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// TestDiscovery: /.well-known/matrix/client from public_baseurl, TURN credentials in
// Synapse's shared-secret scheme, and timestamp_to_event in both directions; without
// the configuration, no well-known file and no TURN servers.
func TestDiscovery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	d.shared["public_baseurl"] = "https://matrix.example.org/"
	d.shared["serve_client_wellknown"] = true
	d.shared["extra_well_known_client_content"] = map[string]any{"org.example.custom": map[string]any{"x": 1}}
	d.shared["turn_uris"] = []string{"turn:turn.example.org?transport=udp"}
	d.shared["turn_shared_secret"] = "turnsecret"
	d.shared["turn_user_lifetime"] = "10m"
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")

	status, _, text := rawRequest(ctx, t, http.MethodGet, hs.url()+"/.well-known/matrix/client", "", nil)
	wk := gjson.Parse(text)
	if status != http.StatusOK || wk.Get(`m\.homeserver.base_url`).Str != "https://matrix.example.org/" || wk.Get(`org\.example\.custom.x`).Int() != 1 {
		t.Errorf("well-known: %d %s", status, text)
	}
	turn := getJSON(ctx, t, alice, "v3/voip/turnServer", http.StatusOK)
	user := turn.Get("username").Str
	expiry, rest, _ := strings.Cut(user, ":")
	secs, _ := strconv.ParseInt(expiry, 10, 64)
	m := hmac.New(sha1.New, []byte("turnsecret"))
	m.Write([]byte(user))
	if rest != alice.UserID.String() || turn.Get("ttl").Int() != 600 ||
		turn.Get("password").Str != base64.StdEncoding.EncodeToString(m.Sum(nil)) || time.Until(time.Unix(secs, 0)) > 10*time.Minute+time.Minute {
		t.Errorf("TURN credentials: %s", turn.Raw)
	}

	room := createRoomWith(ctx, t, alice, "private_chat")
	var sent []string
	var stamps []int64
	for i := range 3 {
		res, err := alice.SendText(ctx, room, "m"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		ev := getJSON(ctx, t, alice, "v3/rooms/"+room.String()+"/event/"+res.EventID.String(), http.StatusOK)
		sent, stamps = append(sent, res.EventID.String()), append(stamps, ev.Get("origin_server_ts").Int())
		time.Sleep(5 * time.Millisecond) // distinct timestamps
	}
	base := "v1/rooms/" + room.String() + "/timestamp_to_event?ts="
	if got := getJSON(ctx, t, alice, base+strconv.FormatInt(stamps[1], 10)+"&dir=f", http.StatusOK).Get("event_id").Str; got != sent[1] {
		t.Errorf("forward from the second message's time: %s, want %s", got, sent[1])
	}
	if got := getJSON(ctx, t, alice, base+strconv.FormatInt(stamps[1]-1, 10)+"&dir=b", http.StatusOK).Get("event_id").Str; got != sent[0] {
		t.Errorf("backward from just before the second: %s, want %s", got, sent[0])
	}
	getJSON(ctx, t, alice, base+strconv.FormatInt(stamps[2]+60_000, 10)+"&dir=f", http.StatusNotFound)
	getJSON(ctx, t, alice, base+"soon&dir=f", http.StatusBadRequest)

	// Without the configuration.
	plain := newDeployment(t, deploymentOptions{}).startMain()
	bob := newUser(ctx, t, plain.url(), "bob")
	if status, _, _ := rawRequest(ctx, t, http.MethodGet, plain.url()+"/.well-known/matrix/client", "", nil); status != http.StatusNotFound {
		t.Errorf("well-known without configuration: %d", status)
	}
	if turn := getJSON(ctx, t, bob, "v3/voip/turnServer", http.StatusOK); turn.Raw != "{}" {
		t.Errorf("TURN without configuration: %s", turn.Raw)
	}
}
