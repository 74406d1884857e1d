package client

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// FuzzPusherSet checks that any body of POST /pushers/set either gets a Matrix client
// error or becomes a write whose accounts record decodes strictly, so its projection
// can never stall on it, and whose pusher is an http one on a push gateway's path.
func FuzzPusherSet(f *testing.F) {
	for _, s := range []string{
		`{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://gw.example/_matrix/push/v1/notify","format":"event_id_only"},"append":true,"profile_tag":"t"}`,
		`{"kind":null,"app_id":"a","pushkey":"k"}`, `{"kind":null,"app_id":"","pushkey":"k"}`, `{"kind":null,"app_id":"a"}`,
		`{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{}}`,
		`{"kind":"email","app_id":"m.email","pushkey":"a@b","app_display_name":"A","device_display_name":"D","lang":"en","data":{}}`,
		`{"kind":"http","app_id":5,"pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"http://x/_matrix/push/v1/notify"}}`,
		`{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"http://x/_matrix/push/v1/notify?x=1#f"},"append":null}`,
		`[]`, `{"data":"x"}`, `{"kind":"http","data":{"url":7}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/pushers/set", strings.NewReader(string(body)))
		var fields map[string]json.RawMessage
		err := matrix.DecodeBody(r, maxPushersBody, &fields)
		var op string
		var write any
		if err == nil {
			op, write, err = parsePusherSet(fields)
		}
		if err != nil {
			var me *matrix.Error
			if !errors.As(err, &me) || me.Status < 400 || me.Status >= 500 {
				t.Fatalf("body %q: error %v, want a Matrix client error", body, err)
			}
			return
		}
		rec := schemas.AccountsRecord{V: schemas.AccountsVersion, Write: "w", User: "@u:test", Device: "D"}
		switch op {
		case userstreams.OpSetPusher:
			sp := write.(userstreams.SetPusher)
			if sp.Pusher.Kind != pusherKindHTTP || checkPushGatewayURL(sp.Pusher.Data) != nil {
				t.Fatalf("body %q: accepted pusher %+v", body, sp.Pusher)
			}
			rec.Kind, rec.Pusher, rec.Append = schemas.AccountPusherSet, &sp.Pusher, sp.Append
		case userstreams.OpDeletePusher:
			p := write.(schemas.Pusher)
			rec.Kind, rec.Pusher = schemas.AccountPusherDeleted, &p
		default:
			t.Fatalf("body %q: operation %q", body, op)
		}
		data, err := schemas.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := schemas.DecodeAccounts(data); err != nil {
			t.Fatalf("body %q: its record does not decode: %v", body, err)
		}
	})
}
