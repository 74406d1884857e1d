package client

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// checkDecodeError fails unless err is a client error: a *matrix.Error with a 4xx status.
func checkDecodeError(t *testing.T, body []byte, err error) {
	t.Helper()
	var me *matrix.Error
	if !errors.As(err, &me) || me.Status < 400 || me.Status >= 500 {
		t.Fatalf("body %q: error %v is not a Matrix client error", body, err)
	}
}

func validLocalpartChars(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789._=-/+") == ""
}

func FuzzDecodeRegister(f *testing.F) {
	for _, s := range []string{
		`{"username":"alice","password":"pw","auth":{"type":"m.login.dummy","session":"abc"}}`,
		`{"username":"Alice","device_id":"D","initial_device_display_name":"phone","inhibit_login":true}`,
		`{"username":"_x"}`, `{"type":"m.login.application_service","username":"_bridge_x"}`, `{"username":5}`, `{"auth":null}`, `{"auth":[]}`, `{}`, `[]`, `{"username":"é"}`,
	} {
		f.Add([]byte(s))
	}
	s := &Server{ServerName: testServerName}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/register", strings.NewReader(string(body)))
		forService := bytes.Contains(body, []byte("application_service"))
		req, userID, err := s.decodeRegister(r, forService)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if len(req.Password) > maxPasswordLen || len(req.DeviceID) > maxDeviceIDLen {
			t.Fatalf("accepted over-long fields: %q", body)
		}
		if req.Username == "" {
			if userID != "" {
				t.Fatalf("user ID %q without a username", userID)
			}
			return
		}
		local := strings.ToLower(req.Username)
		if userID != "@"+local+":"+testServerName || len(userID) > maxUserIDLen || !validLocalpartChars(local) ||
			(local[0] == '_' && !forService) || strings.Trim(local, "0123456789") == "" {
			t.Fatalf("username %q accepted as %q", req.Username, userID)
		}
	})
}

func FuzzDecodeLogin(f *testing.F) {
	for _, s := range []string{
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}`,
		`{"type":"m.login.password","user":"@Alice:test.local","password":"pw","device_id":"D"}`,
		`{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email"}}`,
		`{"type":"m.login.token","token":"x"}`, `{"type":"m.login.password","user":"@a:elsewhere"}`, `{"identifier":7}`,
	} {
		f.Add([]byte(s))
	}
	s := &Server{ServerName: testServerName}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/login", strings.NewReader(string(body)))
		req, userID, err := s.decodeLogin(r)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		local, ok := strings.CutSuffix(strings.TrimPrefix(userID, "@"), ":"+testServerName)
		if req.Type != loginTypePassword || !ok || !strings.HasPrefix(userID, "@") || local == "" || local != strings.ToLower(local) || len(req.DeviceID) > maxDeviceIDLen {
			t.Fatalf("login %q accepted as %q", body, userID)
		}
	})
}
