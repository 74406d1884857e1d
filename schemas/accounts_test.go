package schemas

import (
	"strings"
	"testing"
)

// TestDecodeAccounts: a record is decoded strictly: what its kind needs must be there,
// and a field, version or kind this build does not know is refused rather than
// projected half-understood.
func TestDecodeAccounts(t *testing.T) {
	token := `"` + strings.Repeat("A", 43) + `="` // 32 bytes, base64
	for _, tc := range []struct {
		data string
		ok   bool
	}{
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h"}`, true},
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h","device":"D","token_hash":` + token + `}`, true},
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h","device":"D"}`, false},
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h","token_hash":` + token + `}`, false},
		{`{"v":1,"kind":"token_added","write":"w","ts":1,"user":"@a:h","device":"D","token_hash":"AAAA"}`, false},
		{`{"v":1,"kind":"devices_deleted","write":"w","ts":1,"user":"@a:h","devices":["D"]}`, true},
		{`{"v":1,"kind":"devices_deleted","write":"w","ts":1,"user":"@a:h"}`, false},
		{`{"v":1,"kind":"device_renamed","write":"w","ts":1,"user":"@a:h","device":"D","display_name":"phone"}`, true},
		{`{"v":1,"kind":"device_renamed","write":"w","ts":1,"user":"@a:h","device":"D"}`, false},
		{`{"v":1,"kind":"profile_set","write":"w","ts":1,"user":"@a:h","field":"avatar_url"}`, true},
		{`{"v":1,"kind":"profile_set","write":"w","ts":1,"user":"@a:h","field":"password_hash"}`, false},
		{`{"v":1,"kind":"filter_created","write":"w","ts":1,"user":"@a:h","filter":{}}`, true},
		{`{"v":1,"kind":"filter_created","write":"w","ts":1,"user":"@a:h","filter_id":-1,"filter":{}}`, false},
		{`{"v":1,"kind":"alias_claimed","write":"w","ts":1,"user":"@a:h","alias":"#a:h","room":"!r:h"}`, true},
		{`{"v":1,"kind":"alias_claimed","write":"w","ts":1,"user":"@a:h","alias":"#a:h"}`, false},
		{`{"v":1,"kind":"alias_deleted","write":"w","ts":1,"user":"@a:h","alias":"#a:h"}`, true},
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h","admin":true}`, true},
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h","guest":true}`, false},
		{`{"v":2,"kind":"user_created","write":"w","ts":1,"user":"@a:h"}`, false},
		{`{"v":1,"kind":"user_deactivated","write":"w","ts":1,"user":"@a:h"}`, true},
		{`{"v":1,"kind":"user_erased","write":"w","ts":1,"user":"@a:h"}`, false},
		{`{"v":1,"kind":"user_created","ts":1,"user":"@a:h"}`, false},
		{`{"v":1,"kind":"user_created","write":"w","ts":1,"user":"@a:h"} {}`, false},
		{`null`, false},
	} {
		r, err := DecodeAccounts([]byte(tc.data))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %+v, %v; want ok %v", tc.data, r, err, tc.ok)
		}
	}
}
