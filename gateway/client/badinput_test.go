package client

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// TestUnstorableStrings: strings Postgres cannot store (NUL, invalid UTF-8) in a path,
// a query or a body are refused where the request is decoded, with the spec's error,
// before any read or write reaches the database.
func TestUnstorableStrings(t *testing.T) {
	t.Parallel()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	reg := register(t, g, "alice", "pw")
	auth := http.Header{"Authorization": {"Bearer " + reg.AccessToken}}
	api := g.url + "/_matrix/client/v3"
	user := string(reg.UserID)
	for _, tc := range []struct {
		what, method, path, body string
		status                   int
		code                     string
	}{
		{"NUL in the room id of /messages", "GET", "/rooms/!a%00b:" + testServerName + "/messages?dir=b", "", 400, matrix.CodeInvalidParam},
		{"invalid UTF-8 in the room id of /messages", "GET", "/rooms/!a%FFb:" + testServerName + "/messages?dir=b", "", 400, matrix.CodeInvalidParam},
		{"NUL in the room id of /state", "GET", "/rooms/!a%00b:" + testServerName + "/state", "", 400, matrix.CodeInvalidParam},
		{"invalid UTF-8 in the room id of /state", "GET", "/rooms/!a%FFb:" + testServerName + "/state", "", 400, matrix.CodeInvalidParam},
		{"NUL in the room id of /joined_members", "GET", "/rooms/!a%00b:" + testServerName + "/joined_members", "", 400, matrix.CodeInvalidParam},
		{"NUL in an alias (GET)", "GET", "/directory/room/%23a%00b:" + testServerName, "", 400, matrix.CodeInvalidParam},
		{"NUL in an alias (PUT)", "PUT", "/directory/room/%23a%00b:" + testServerName, `{"room_id":"!r:` + testServerName + `"}`, 400, matrix.CodeInvalidParam},
		{"invalid UTF-8 in an alias (PUT)", "PUT", "/directory/room/%23a%FFb:" + testServerName, `{"room_id":"!r:` + testServerName + `"}`, 400, matrix.CodeInvalidParam},
		{"NUL in the room id of an alias (PUT)", "PUT", "/directory/room/%23ab:" + testServerName, `{"room_id":"!r\u0000:` + testServerName + `"}`, 400, matrix.CodeBadJSON},
		{"NUL in a user id of a profile", "GET", "/profile/@a%00b:" + testServerName, "", 400, matrix.CodeInvalidParam},
		{"NUL in a query parameter", "GET", "/rooms/!a:" + testServerName + "/members?membership=%00", "", 400, matrix.CodeInvalidParam},
		{"invalid UTF-8 in a query parameter", "GET", "/register/available?username=%FF", "", 400, matrix.CodeInvalidParam},
		{"NUL in createRoom's room_alias_name", "POST", "/createRoom", `{"room_alias_name":"a\u0000b"}`, 400, matrix.CodeBadJSON},
		{"NUL in a display name", "PUT", "/profile/" + user + "/displayname", `{"displayname":"a\u0000b"}`, 400, matrix.CodeBadJSON},
		{"NUL in a filter", "POST", "/user/" + user + "/filter", `{"room":{"rooms":["!a\u0000:x"]}}`, 400, matrix.CodeBadJSON},
		{"NUL in a password", "POST", "/login", `{"type":"m.login.password","user":"alice","password":"p\u0000w"}`, 400, matrix.CodeBadJSON},
	} {
		status, body := rawRequest(t, tc.method, api+tc.path, tc.body, auth)
		if status != tc.status || body["errcode"] != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.what, status, body, tc.status, tc.code)
		}
	}
	// The profile is unchanged.
	status, body := rawRequest(t, "GET", api+"/profile/"+user+"/displayname", "", nil)
	if status != 200 || body["displayname"] != "alice" || strings.Contains(body["displayname"].(string), "\x00") {
		t.Errorf("profile after the refused update: %d %v", status, body)
	}
}
