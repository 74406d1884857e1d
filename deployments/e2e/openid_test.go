package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/tidwall/gjson"
)

// OpenID: a user gets a token for themselves only, and a third party learns who it
// stands for from the federation API, on a listener with the federation resource
// beside the client API and on one with only the openid resource; unknown tokens are
// 401 M_UNKNOWN_TOKEN, and a listener without either resource does not serve it.
func TestOpenID(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	openidPort, bothPort := freePort(t), freePort(t)
	listener := func(port int, names ...string) map[string]any {
		return map[string]any{"port": port, "bind_addresses": []string{"127.0.0.1"}, "type": "http",
			"resources": []map[string]any{{"names": names}}}
	}
	hs := d.startMainWith([]map[string]any{listener(openidPort, "openid"), listener(bothPort, "client", "federation")})
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")

	request := func(as, of string) (int, string, gjson.Result) {
		status, code, body := rawRequest(ctx, t, http.MethodPost,
			hs.url()+"/_matrix/client/v3/user/"+url.PathEscape(of)+"/openid/request_token", as, []byte(`{}`))
		return status, code, gjson.Parse(body)
	}
	if status, code, _ := request(bob.AccessToken, alice.UserID.String()); status != http.StatusForbidden || code != "M_FORBIDDEN" {
		t.Errorf("a token for another user: %d %s", status, code)
	}
	status, _, tok := request(alice.AccessToken, alice.UserID.String())
	if status != http.StatusOK || tok.Get("access_token").Str == "" || tok.Get("token_type").Str != "Bearer" ||
		tok.Get("matrix_server_name").Str != d.serverName || tok.Get("expires_in").Int() != 3600 {
		t.Fatalf("alice's token: %d %s", status, tok.Raw)
	}

	userinfo := func(base, token string) (int, string, string) {
		status, code, body := rawRequest(ctx, t, http.MethodGet, base+"/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), "", nil)
		var info struct {
			Sub string `json:"sub"`
		}
		_ = json.Unmarshal([]byte(body), &info)
		return status, code, info.Sub
	}
	openidURL := "http://127.0.0.1:" + strconv.Itoa(openidPort)
	// The test's client listener has only the client resource: no federation API.
	if status, code, _ := userinfo(hs.url(), tok.Get("access_token").Str); status != http.StatusNotFound || code != "M_UNRECOGNIZED" {
		t.Errorf("userinfo on a client-only listener: %d %s", status, code)
	}
	bothURL := "http://127.0.0.1:" + strconv.Itoa(bothPort)
	for _, base := range []string{openidURL, bothURL} {
		if status, _, sub := userinfo(base, tok.Get("access_token").Str); status != http.StatusOK || sub != alice.UserID.String() {
			t.Errorf("userinfo at %s: %d %q", base, status, sub)
		}
	}
	if status, _, _ := rawRequest(ctx, t, http.MethodGet, bothURL+"/_matrix/client/versions", "", nil); status != http.StatusOK {
		t.Errorf("the client API beside the federation API: %d", status)
	}
	for _, bad := range []string{"", "not-a-token", alice.AccessToken} {
		if status, code, _ := userinfo(openidURL, bad); status != http.StatusUnauthorized || code != "M_UNKNOWN_TOKEN" {
			t.Errorf("userinfo with %q: %d %s", bad, status, code)
		}
	}
	// The openid listener serves nothing of the client API.
	if status, _, _ := rawRequest(ctx, t, http.MethodGet, openidURL+"/_matrix/client/versions", "", nil); status != http.StatusNotFound {
		t.Errorf("the client API on the openid listener: %d", status)
	}
}
