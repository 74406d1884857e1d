package schemas

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeDeviceList feeds arbitrary bytes to the device_lists record decoder, which
// reads what writers appended: it must never panic, and what it accepts must survive a
// round trip.
func FuzzDecodeDeviceList(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"kind":"device_keys","user":"@a:h","device":"D","device_keys":{"keys":{}},"changed":["D"]}`,
		`{"v":1,"kind":"claimed","user":"@a:h","claimed":[{"device":"D","key_id":"signed_curve25519:A","fallback":true}]}`,
		`{"v":1,"kind":"backup_keys","user":"@a:h","backup":{"version":1,"etag":2},"backup_keys":[{"room":"!r:h","session":"s","session_data":{}}]}`,
		`{"v":1,"kind":"signatures","user":"@a:h","signatures":[{"signing_key":"ed25519:x","target_user":"@b:h","target":"k","signature":"s"}],"signed_users":["@b:h"]}`,
		`{"v":1,"kind":"nope","user":"@a:h"}`, `{"v":2}`, `null`, `{"v":1,"kind":"device_keys","user":"@a:h"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeDeviceList(data)
		if err != nil {
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeDeviceList(again); err != nil {
			t.Fatalf("round trip of %q: %v", data, err)
		}
		if _, err := json.Marshal(DeviceListRow{User: r.User}); err != nil {
			t.Fatal(err)
		}
	})
}
