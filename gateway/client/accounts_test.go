package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

const testServerName = "test.local"

// accountsGateway is one client API gateway on a fresh database, with the accounts
// stream's writer behind it, or a second gateway on the same (sibling) to play a
// second process.
type accountsGateway struct {
	srv *Server
	url string
}

func openAccountsDB(t *testing.T) *persist.DB {
	t.Helper()
	db, err := persist.Open(context.Background(), pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	db.BcryptCost = bcrypt.MinCost
	t.Cleanup(db.Close)
	return db
}

// startAccountsWriter runs the accounts stream's writer over db, on a NATS server of
// the test's own, and returns the client that forwards writes to it.
func startAccountsWriter(t *testing.T, db *persist.DB) IntentSubmitter {
	t.Helper()
	env := natstest.Start(t)
	log := zaptest.NewLogger(t)
	waiters := &streams.Waiters{}
	w, err := userstreams.New(userstreams.Config{Name: "master", Stream: &userstreams.Accounts{Store: accounts.Store{Pool: db.Pool}},
		Topology: env.Topology, JS: env.JS, NC: env.NC, DB: db, Waiters: waiters, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC, Waiters: waiters, Log: log,
		StreamWriters: map[string][]string{schemas.StreamAccounts: {"master"}}}
}

func newAccountsGateway(t *testing.T, db *persist.DB, enableRegistration bool) *accountsGateway {
	t.Helper()
	return newGateway(t, db, startAccountsWriter(t, db), enableRegistration)
}

// sibling is another gateway on g's database and bus.
func (g *accountsGateway) sibling(t *testing.T, enableRegistration bool) *accountsGateway {
	t.Helper()
	return newGateway(t, g.srv.DB, g.srv.Intents, enableRegistration)
}

func newGateway(t *testing.T, db *persist.DB, intents IntentSubmitter, enableRegistration bool) *accountsGateway {
	t.Helper()
	s := &Server{ServerName: testServerName, DB: db, Intents: intents, EnableRegistration: enableRegistration, Log: zaptest.NewLogger(t)}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return &accountsGateway{srv: s, url: hs.URL}
}

func (g *accountsGateway) client(t *testing.T, userID, token string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(g.url, id.UserID(userID), token)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// matrixErr extracts the status and errcode of a failed mautrix call.
func matrixErr(t *testing.T, err error) (int, string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("expected a Matrix HTTP error, got %v", err)
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	return he.Response.StatusCode, code
}

func wantMatrixErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, want %d %s", status, code)
	}
	if gotStatus, gotCode := matrixErr(t, err); gotStatus != status || gotCode != code {
		t.Fatalf("got %d %s (%v), want %d %s", gotStatus, gotCode, err, status, code)
	}
}

func register(t *testing.T, g *accountsGateway, username, password string) *mautrix.RespRegister {
	t.Helper()
	resp, err := g.client(t, "", "").RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: username, Password: password})
	if err != nil {
		t.Fatalf("register %s: %v", username, err)
	}
	return resp
}

func TestVersions(t *testing.T) {
	t.Parallel()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	v, err := g.client(t, "", "").Versions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []mautrix.SpecVersion{mautrix.SpecV11, mautrix.SpecV15} {
		if !v.Contains(want) {
			t.Errorf("versions %v lack %v", v.Versions, want)
		}
	}
}

func TestRegisterLoginLogout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	anon := g.client(t, "", "")

	if _, err := anon.RegisterAvailable(ctx, "alice"); err != nil {
		t.Fatalf("alice available: %v", err)
	}
	reg, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Alice", Password: "wonderland", InitialDeviceDisplayName: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if reg.UserID != "@alice:"+testServerName || reg.DeviceID == "" {
		t.Fatalf("register = %+v", reg)
	}
	wantPrefix := "syt_" + base64.RawURLEncoding.EncodeToString([]byte("alice")) + "_"
	if !strings.HasPrefix(reg.AccessToken, wantPrefix) || len(reg.AccessToken) < len(wantPrefix)+43 {
		t.Fatalf("token %q does not have the syt_<base64 localpart>_<random> form", reg.AccessToken)
	}
	_, err = anon.RegisterAvailable(ctx, "alice")
	wantMatrixErr(t, err, 400, matrix.CodeUserInUse)
	_, err = anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "x"})
	wantMatrixErr(t, err, 400, matrix.CodeUserInUse)

	alice := g.client(t, string(reg.UserID), reg.AccessToken)
	who, err := alice.Whoami(ctx)
	if err != nil || who.UserID != reg.UserID || who.DeviceID != reg.DeviceID {
		t.Fatalf("whoami = %+v, %v", who, err)
	}

	flows, err := anon.GetLoginFlows(ctx)
	if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
		t.Fatalf("login flows = %+v, %v", flows, err)
	}
	login := func(user, password string) (*mautrix.RespLogin, error) {
		return anon.Login(ctx, &mautrix.ReqLogin{
			Type:       mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
			Password:   password,
		})
	}
	byLocalpart, err := login("alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if byLocalpart.UserID != reg.UserID || byLocalpart.DeviceID == reg.DeviceID || byLocalpart.AccessToken == reg.AccessToken {
		t.Fatalf("login = %+v: want a new device of alice", byLocalpart)
	}
	if _, err := login("@ALICE:"+testServerName, "wonderland"); err != nil {
		t.Fatalf("login by full user ID: %v", err)
	}
	// The pre-identifier form, with the legacy top-level "user".
	var legacy credentialsResponse
	if _, err := anon.MakeRequest(ctx, http.MethodPost, anon.BuildClientURL("r0", "login"),
		map[string]string{"type": "m.login.password", "user": "alice", "password": "wonderland"}, &legacy); err != nil || legacy.UserID != string(reg.UserID) {
		t.Fatalf("legacy login = %+v, %v", legacy, err)
	}
	for _, bad := range [][2]string{{"alice", "wrong"}, {"nobody", "wonderland"}, {"@alice:elsewhere", "wonderland"}} {
		_, err := login(bad[0], bad[1])
		wantMatrixErr(t, err, 403, matrix.CodeForbidden)
	}
	_, err = anon.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: "x"})
	wantMatrixErr(t, err, 400, matrix.CodeUnknown)

	// Logging in again as an existing device replaces its token at once.
	again, err := anon.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password: "wonderland", DeviceID: byLocalpart.DeviceID,
	})
	if err != nil || again.DeviceID != byLocalpart.DeviceID {
		t.Fatalf("login as existing device = %+v, %v", again, err)
	}
	old := g.client(t, string(reg.UserID), byLocalpart.AccessToken)
	_, err = old.Whoami(ctx)
	wantMatrixErr(t, err, 401, matrix.CodeUnknownToken)

	// Logout ends this device only.
	second := g.client(t, string(reg.UserID), again.AccessToken)
	if _, err := second.Whoami(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = second.Whoami(ctx)
	wantMatrixErr(t, err, 401, matrix.CodeUnknownToken)
	if _, err := alice.Whoami(ctx); err != nil {
		t.Fatalf("first device after the second logged out: %v", err)
	}

	// Logout/all ends every device of alice and no one else's.
	bob := register(t, g, "bob", "builder")
	third, err := login("alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{reg.AccessToken, third.AccessToken} {
		_, err := g.client(t, string(reg.UserID), tok).Whoami(ctx)
		wantMatrixErr(t, err, 401, matrix.CodeUnknownToken)
	}
	if _, err := g.client(t, string(bob.UserID), bob.AccessToken).Whoami(ctx); err != nil {
		t.Fatalf("bob after alice's logout/all: %v", err)
	}
	if devs, err := g.srv.DB.Devices(ctx, string(reg.UserID)); err != nil || len(devs) != 0 {
		t.Fatalf("alice's devices after logout/all: %v, %v", devs, err)
	}
}

func TestRegisterUIA(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openAccountsDB(t)
	g := newAccountsGateway(t, db, true)
	anon := g.client(t, "", "")

	// First step: no auth, so the flows and a session come back.
	_, uia, err := anon.Register(ctx, &mautrix.ReqRegister[any]{Username: "carol", Password: "pw"})
	if uia == nil {
		t.Fatalf("no UIA response: %v", err)
	}
	if !uia.HasSingleStageFlow(mautrix.AuthTypeDummy) || uia.Session == "" || len(uia.Completed) != 0 {
		t.Fatalf("UIA = %+v", uia)
	}
	// A stage we do not offer: still 401 with the session, plus an error.
	_, _, err = anon.Register(ctx, &mautrix.ReqRegister[any]{Username: "carol", Auth: mautrix.BaseAuthData{Type: mautrix.AuthTypeReCAPTCHA, Session: uia.Session}})
	wantMatrixErr(t, err, 401, matrix.CodeUnrecognized)
	// An unknown session.
	_, _, err = anon.Register(ctx, &mautrix.ReqRegister[any]{Username: "carol", Auth: mautrix.BaseAuthData{Type: mautrix.AuthTypeDummy, Session: "nope"}})
	wantMatrixErr(t, err, 400, matrix.CodeUnknown)

	req := &mautrix.ReqRegister[any]{Username: "carol", Password: "pw", Auth: mautrix.BaseAuthData{Type: mautrix.AuthTypeDummy, Session: uia.Session}}
	resp, _, err := anon.Register(ctx, req)
	if err != nil || resp.UserID != "@carol:"+testServerName || resp.AccessToken == "" {
		t.Fatalf("register with completed session = %+v, %v", resp, err)
	}
	// The session authorised one registration only.
	req.Username = "carol2"
	_, _, err = anon.Register(ctx, req)
	wantMatrixErr(t, err, 400, matrix.CodeUnknown)

	// The dummy stage without a session is accepted at once, like Synapse.
	resp, _, err = anon.Register(ctx, &mautrix.ReqRegister[any]{Username: "dave", Auth: mautrix.BaseAuthData{Type: mautrix.AuthTypeDummy}})
	if err != nil || resp.UserID != "@dave:"+testServerName {
		t.Fatalf("dummy without session = %+v, %v", resp, err)
	}

	// inhibit_login: an account, but no device or token.
	resp, err = anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "erin", Password: "pw", InhibitLogin: true})
	if err != nil || resp.UserID != "@erin:"+testServerName || resp.AccessToken != "" || resp.DeviceID != "" {
		t.Fatalf("inhibit_login = %+v, %v", resp, err)
	}
	if devs, err := db.Devices(ctx, "@erin:"+testServerName); err != nil || len(devs) != 0 {
		t.Fatalf("inhibit_login created devices: %v, %v", devs, err)
	}

	// Chosen device ID and display name.
	resp, err = anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "frank", DeviceID: "MYDEVICE", InitialDeviceDisplayName: "laptop"})
	if err != nil || resp.DeviceID != "MYDEVICE" {
		t.Fatalf("register with device_id = %+v, %v", resp, err)
	}
	if devs, err := db.Devices(ctx, "@frank:"+testServerName); err != nil || len(devs) != 1 || devs[0].DisplayName != "laptop" {
		t.Fatalf("frank's devices: %+v, %v", devs, err)
	}

	// No username: the server picks a numeric one, different each time.
	a, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []id.UserID{a.UserID, b.UserID} {
		if local := u.Localpart(); strings.Trim(local, "0123456789") != "" || u.Homeserver() != testServerName {
			t.Fatalf("generated user ID %s is not numeric on %s", u, testServerName)
		}
	}
	if a.UserID == b.UserID {
		t.Fatalf("generated the same user ID twice: %s", a.UserID)
	}

	for _, bad := range []string{"_bridge", "12345", "white space", "émile", "a:b", "@x", strings.Repeat("x", 250)} {
		_, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: bad})
		wantMatrixErr(t, err, 400, matrix.CodeInvalidUsername)
		_, err = anon.RegisterAvailable(ctx, bad)
		wantMatrixErr(t, err, 400, matrix.CodeInvalidUsername)
	}
	_, err = anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "gina", Password: strings.Repeat("p", 513)})
	wantMatrixErr(t, err, 400, matrix.CodeInvalidParam)

	_, _, err = anon.RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
	wantMatrixErr(t, err, 403, matrix.CodeGuestAccessForbidden)

	closed := g.sibling(t, false)
	_, err = closed.client(t, "", "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "henry"})
	wantMatrixErr(t, err, 403, matrix.CodeForbidden)
	_, err = closed.client(t, "", "").RegisterAvailable(ctx, "henry")
	wantMatrixErr(t, err, 403, matrix.CodeForbidden)
	// Closed registration does not close login.
	if _, err := closed.client(t, "", "").Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"}, Password: "pw"}); err != nil {
		t.Fatalf("login with registration closed: %v", err)
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	reg := register(t, g, "alice", "pw")
	alice := g.client(t, string(reg.UserID), reg.AccessToken)
	other := register(t, g, "bob", "pw")
	bob := g.client(t, string(other.UserID), other.AccessToken)

	limit := 10
	f := &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: limit}}}
	created, err := alice.CreateFilter(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.CreateFilter(ctx, f)
	if err != nil || again.FilterID != created.FilterID {
		t.Fatalf("same filter twice: %v then %v, %v", created.FilterID, again, err)
	}
	var got mautrix.Filter
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "user", reg.UserID, "filter", created.FilterID), nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Room == nil || got.Room.Timeline == nil || got.Room.Timeline.Limit != limit {
		t.Fatalf("stored filter = %+v", got)
	}

	// Keys we do not know are kept, so clients get their filter back as they wrote it.
	var custom mautrix.RespCreateFilter
	if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user", reg.UserID, "filter"),
		map[string]any{"org.example.flag": true, "room": map[string]any{"include_leave": true}}, &custom); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "user", reg.UserID, "filter", custom.FilterID), nil, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["org.example.flag"] != true || custom.FilterID == created.FilterID {
		t.Fatalf("custom filter %s = %v", custom.FilterID, raw)
	}

	// Another user's filters are neither readable nor writable.
	_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildClientURL("v3", "user", reg.UserID, "filter", created.FilterID), nil, nil)
	wantMatrixErr(t, err, 403, matrix.CodeForbidden)
	_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "user", reg.UserID, "filter"), f, nil)
	wantMatrixErr(t, err, 403, matrix.CodeForbidden)

	_, err = alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "user", reg.UserID, "filter", "99"), nil, nil)
	wantMatrixErr(t, err, 404, matrix.CodeNotFound)
	_, err = alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "user", reg.UserID, "filter", "abc"), nil, nil)
	wantMatrixErr(t, err, 400, matrix.CodeInvalidParam)
	for _, bad := range []map[string]any{
		{"room": map[string]any{"timeline": map[string]any{"limit": "ten"}}},
		{"event_format": "xml"},
		{"event_fields": "content.body"},
	} {
		_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user", reg.UserID, "filter"), bad, nil)
		wantMatrixErr(t, err, 400, matrix.CodeBadJSON)
	}
}

// rawRequest sends what a client library cannot: broken JSON, wrong token forms.
func rawRequest(t *testing.T, method, url, body string, header http.Header) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object", method, url, raw)
	}
	return resp.StatusCode, out
}

func TestAccessTokenForms(t *testing.T) {
	t.Parallel()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	reg := register(t, g, "alice", "pw")
	whoami := g.url + "/_matrix/client/v3/account/whoami"
	bearer := func(v string) http.Header { return http.Header{"Authorization": {v}} }

	for name, tc := range map[string]struct {
		url    string
		header http.Header
		status int
		code   string
	}{
		"header":           {whoami, bearer("Bearer " + reg.AccessToken), 200, ""},
		"lower-case":       {whoami, bearer("bearer " + reg.AccessToken), 200, ""},
		"query":            {whoami + "?access_token=" + reg.AccessToken, nil, 200, ""},
		"r0 prefix":        {g.url + "/_matrix/client/r0/account/whoami", bearer("Bearer " + reg.AccessToken), 200, ""},
		"none":             {whoami, nil, 401, matrix.CodeMissingToken},
		"empty query":      {whoami + "?access_token=", nil, 401, matrix.CodeMissingToken},
		"not bearer":       {whoami, bearer("Basic " + reg.AccessToken), 401, matrix.CodeMissingToken},
		"both forms":       {whoami + "?access_token=" + reg.AccessToken, bearer("Bearer " + reg.AccessToken), 401, matrix.CodeMissingToken},
		"unknown header":   {whoami, bearer("Bearer syt_YWxpY2U_unknown"), 401, matrix.CodeUnknownToken},
		"unknown query":    {whoami + "?access_token=nope", nil, 401, matrix.CodeUnknownToken},
		"logout, no token": {g.url + "/_matrix/client/v3/logout", nil, 401, matrix.CodeMissingToken},
	} {
		method := http.MethodGet
		if strings.HasSuffix(tc.url, "/logout") {
			method = http.MethodPost
		}
		status, body := rawRequest(t, method, tc.url, "", tc.header)
		if status != tc.status || (tc.code != "" && body["errcode"] != tc.code) {
			t.Errorf("%s: %d %v, want %d %s", name, status, body, tc.status, tc.code)
		}
		if tc.status == 200 && body["user_id"] != string(reg.UserID) {
			t.Errorf("%s: whoami = %v", name, body)
		}
		if tc.code == matrix.CodeUnknownToken && body["soft_logout"] != false {
			t.Errorf("%s: soft_logout = %v, want false", name, body["soft_logout"])
		}
	}
}

func TestMalformedBodies(t *testing.T) {
	t.Parallel()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	reg := register(t, g, "alice", "pw")
	auth := http.Header{"Authorization": {"Bearer " + reg.AccessToken}}
	big := `{"username":"` + strings.Repeat("a", 70000) + `"}`
	for _, path := range []string{"/register", "/login", "/user/" + string(reg.UserID) + "/filter"} {
		for _, tc := range []struct {
			body   string
			status int
			code   string
		}{
			{`{"username": "x"`, 400, matrix.CodeNotJSON},
			{``, 400, matrix.CodeNotJSON},
			{`["not", "an", "object"]`, 400, matrix.CodeBadJSON},
			{`{"username": 5, "type": 5, "room": 5}`, 400, matrix.CodeBadJSON},
			{big, 413, matrix.CodeTooLarge},
		} {
			status, body := rawRequest(t, http.MethodPost, g.url+"/_matrix/client/v3"+path, tc.body, auth)
			if status != tc.status || body["errcode"] != tc.code {
				t.Errorf("POST %s %.30q: %d %v, want %d %s", path, tc.body, status, body, tc.status, tc.code)
			}
		}
	}
	// None of them created an account.
	if n, err := g.srv.DB.UserExists(context.Background(), "@x:"+testServerName); err != nil || n {
		t.Fatalf("malformed registration created a user: %v, %v", n, err)
	}
}

// Two gateways share Postgres; each caches token lookups. A token from a registration or
// a login through one works on the other at once (the accounts writer answers once the
// token is in Postgres). A logout through one stops the token there at once; on the
// other, within tokenTTL, or at once when the accounts record reaches it
// (AccountsRecordElsewhere, which main calls for each record of the accounts stream).
func TestTokenRevocationAcrossGateways(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openAccountsDB(t)
	a := newAccountsGateway(t, db, true)
	b := a.sibling(t, true)
	now := time.Unix(1_000_000, 0)
	b.srv.tokens.mu.Lock()
	b.srv.tokens.now = func() time.Time { return now }
	b.srv.tokens.mu.Unlock()

	reg := register(t, a, "alice", "pw")
	onA, onB := a.client(t, string(reg.UserID), reg.AccessToken), b.client(t, string(reg.UserID), reg.AccessToken)
	if _, err := onB.Whoami(ctx); err != nil { // now cached on b
		t.Fatal(err)
	}
	login, err := a.client(t, "", "").Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if who, err := b.client(t, string(reg.UserID), login.AccessToken).Whoami(ctx); err != nil || who.DeviceID != login.DeviceID {
		t.Fatalf("a login's token on the other gateway at once: %+v, %v", who, err)
	}
	if _, err := onA.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = onA.Whoami(ctx)
	wantMatrixErr(t, err, 401, matrix.CodeUnknownToken)

	// b trusts its cached lookup until the TTL has passed, then asks Postgres again.
	if _, err := onB.Whoami(ctx); err != nil {
		t.Fatalf("within the cache bound on the other gateway: %v", err)
	}
	b.srv.tokens.mu.Lock()
	now = now.Add(tokenTTL)
	b.srv.tokens.mu.Unlock()
	_, err = onB.Whoami(ctx)
	wantMatrixErr(t, err, 401, matrix.CodeUnknownToken)

	// The other login's token, cached on b, stops there as soon as b hears of its logout.
	onBLogin := b.client(t, string(reg.UserID), login.AccessToken)
	if _, err := onBLogin.Whoami(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client(t, string(reg.UserID), login.AccessToken).Logout(ctx); err != nil {
		t.Fatal(err)
	}
	b.srv.AccountsRecordElsewhere(&schemas.AccountsRecord{Kind: schemas.AccountDevicesDeleted, User: string(reg.UserID)})
	_, err = onBLogin.Whoami(ctx)
	wantMatrixErr(t, err, 401, matrix.CodeUnknownToken)
}

// TestTokenCacheHoldsOffWhileAnotherProcessRevokes: a revocation heard of before its
// projection lands keeps the user's lookups out of the cache for tokenTTL, so the one
// that still finds the old token in Postgres is not remembered.
func TestTokenCacheHoldsOffWhileAnotherProcessRevokes(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := tokenCache{now: func() time.Time { return now }}
	h := hashToken("tok")
	dev := Device{UserID: "@a:x", DeviceID: "D"}
	c.put(h, dev, c.generation(), time.Time{})
	c.forgetUser("@a:x")
	if _, ok := c.get(h); ok {
		t.Fatal("a token of a user another process revokes is still cached")
	}
	c.put(h, dev, c.generation(), time.Time{}) // read before the revocation's projection
	if _, ok := c.get(h); ok {
		t.Fatal("a lookup made while another process revokes was cached")
	}
	other := Device{UserID: "@b:x", DeviceID: "E"}
	c.put(hashToken("other"), other, c.generation(), time.Time{})
	if _, ok := c.get(hashToken("other")); !ok {
		t.Fatal("another user's lookups are not cached")
	}
	now = now.Add(tokenTTL)
	c.put(h, dev, c.generation(), time.Time{})
	if _, ok := c.get(h); !ok {
		t.Fatal("lookups are not cached again after tokenTTL")
	}
}

func TestTokenCacheIgnoresLookupsRacingRevocation(t *testing.T) {
	var c tokenCache
	h := hashToken("tok")
	dev := Device{UserID: "@a:x", DeviceID: "D"}
	gen := c.generation()
	c.forget(func(d Device) bool { return d == dev }) // a logout lands while the lookup runs
	c.put(h, dev, gen, time.Time{})
	if _, ok := c.get(h); ok {
		t.Fatal("a lookup that raced a revocation was cached")
	}
	c.put(h, dev, c.generation(), time.Time{})
	if got, ok := c.get(h); !ok || got != dev {
		t.Fatalf("get = %v, %v", got, ok)
	}
	// A token that expires is cached no longer than its life.
	expiring := hashToken("expiring")
	c.put(expiring, dev, c.generation(), time.Now().Add(-time.Millisecond))
	if _, ok := c.get(expiring); ok {
		t.Fatal("an expired token was served from the cache")
	}
	c.forget(func(d Device) bool { return d.UserID == "@a:x" })
	if _, ok := c.get(h); ok {
		t.Fatal("forgotten token still cached")
	}
}

func TestNewAccessToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, h := newAccessToken("@al_ice:example.org")
		rest, ok := strings.CutPrefix(tok, "syt_"+base64.RawURLEncoding.EncodeToString([]byte("al_ice"))+"_")
		if !ok || len(rest) != 43 || strings.Trim(rest, alphanumeric) != "" {
			t.Fatalf("token %q", tok)
		}
		if h != hashToken(tok) || seen[tok] {
			t.Fatalf("token %q: bad hash or repeated", tok)
		}
		seen[tok] = true
	}
}

// TestErasedUsersReadAgainAfterAnErasureElsewhere: the set of erased users is cached;
// once another process erases someone, every read takes it from Postgres again for a
// while, since the erasure's record arrives before its projection.
func TestErasedUsersReadAgainAfterAnErasureElsewhere(t *testing.T) {
	loads := 0
	e := erasedUsers{load: func(context.Context) ([]string, error) { loads++; return nil, nil }}
	e.get()
	e.get()
	if loads != 1 {
		t.Fatalf("%d reads of the erased users within their TTL, want 1", loads)
	}
	e.erasedElsewhere()
	e.get()
	e.get()
	if loads != 3 {
		t.Fatalf("%d reads after an erasure elsewhere, want one per get (3)", loads)
	}
}
