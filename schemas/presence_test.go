package schemas

import (
	"testing"
)

// Synapse's presence row, as Python's compact JSON encoder writes it:
// json.JSONEncoder(separators=(",", ":")).encode(row).
func TestPresenceRowMatchesPython(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rec  PresenceRecord
		want string
	}{
		{PresenceRecord{User: "@a:example.com", State: PresenceOnline, LastActiveTS: 1700000000123,
			LastFederationUpdateTS: 1700000000123, LastUserSyncTS: 1700000000100, CurrentlyActive: true},
			`["@a:example.com","online",1700000000123,1700000000123,1700000000100,null,true]`},
		{PresenceRecord{User: "@é:example.com", State: PresenceUnavailable, StatusMsg: ptr("out <to> lunch ☕")},
			`["@\u00e9:example.com","unavailable",0,0,0,"out <to> lunch \u2615",false]`},
	} {
		got, err := EncodeJSON(PresenceRow{&c.rec})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

func FuzzDecodePresence(f *testing.F) {
	f.Add([]byte(`{"v":1,"user":"@a:h","state":"online","last_active_ts":5,"currently_active":true}`))
	f.Add([]byte(`{"v":1,"user":"@a:h","state":"busy"}`))
	f.Add([]byte(`{"v":1,"user":"@a:h","state":"offline","status_msg":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodePresence(data)
		if err != nil {
			return
		}
		if r.User == "" || !ValidPresence(r.State) {
			t.Fatalf("decoded an invalid record: %+v", r)
		}
	})
}

func FuzzDecodeUserSync(f *testing.F) {
	f.Add([]byte(`{"v":1,"process":"p","devices":[{"user":"@a:h","device":"D","kind":"sync","state":"online"}]}`))
	f.Add([]byte(`{"v":1,"process":"p","devices":[{"user":"@a:h","device":"D","kind":"stop","ago_ms":12}]}`))
	f.Add([]byte(`{"v":1,"process":"p","clear":true}`))
	f.Add([]byte(`{"v":1,"process":"p","devices":[{"user":"@a:h","device":"D","kind":"sync","state":"offline"}]}`))
	f.Add([]byte(`{"v":1,"process":"","devices":[{"user":"","kind":"dance"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := DecodeUserSync(data)
		if err != nil {
			return
		}
		if n.Process == "" || len(n.Devices) > MaxUserSyncDevices {
			t.Fatalf("decoded an invalid notice: %+v", n)
		}
		for _, d := range n.Devices {
			if d.User == "" || d.Kind == UserSyncStart && d.State != PresenceOnline && d.State != PresenceUnavailable ||
				d.Kind != UserSyncStart && d.Kind != UserSyncAlive && d.Kind != UserSyncStop || d.AgoMS < 0 {
				t.Fatalf("decoded an invalid device: %+v", d)
			}
		}
	})
}
