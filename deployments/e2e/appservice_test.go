package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// registration is a service owning @<prefix>_.* and #<prefix>_.* exclusively, sending
// to url.
func registration(d *deployment, serviceID, prefix, url string) *appservice.Registration {
	return &appservice.Registration{ID: serviceID, URL: url, AppToken: randomLetters(32), ServerToken: randomLetters(32),
		SenderLocalpart: prefix + "bot", Namespaces: appservice.Namespaces{
			UserIDs:     appservice.NamespaceList{{Regex: "@" + prefix + "_.*:" + regexp.QuoteMeta(d.serverName), Exclusive: true}},
			RoomAliases: appservice.NamespaceList{{Regex: "#" + prefix + "_.*", Exclusive: true}},
		}}
}

// addRegistration writes reg into the deployment and lists it in app_service_config_files.
func (d *deployment) addRegistration(reg *appservice.Registration) {
	d.t.Helper()
	path := filepath.Join(d.dir, reg.ID+".registration.yaml")
	if err := reg.Save(path); err != nil {
		d.t.Fatal(err)
	}
	files, _ := d.shared["app_service_config_files"].([]string)
	d.shared["app_service_config_files"] = append(files, path)
}

// queries answers the homeserver's user queries by registering the user asked for.
type queries struct {
	as    *appservice.AppService
	asked chan id.UserID
}

func (q queries) QueryAlias(id.RoomAlias) bool { return false }
func (q queries) QueryUser(user id.UserID) bool {
	q.asked <- user
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return q.as.Intent(user).Register(ctx) == nil
}

// TestAppService is issue 9's acceptance 3 with mautrix-go's appservice package: the
// service registers a user of its namespace through Ganglion, receives the events of a
// room that user is in, sends as that user a message a normal client sees, answers a
// user query that creates a user, and pings; its exclusive namespace is refused to
// everyone else, and it cannot act as a user outside it.
func TestAppService(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	as := appservice.Create()
	srv := httptest.NewServer(as.Router)
	t.Cleanup(srv.Close)
	as.Registration = registration(d, "bridge", "bridge", srv.URL)
	as.HomeserverDomain = d.serverName
	asked := make(chan id.UserID, 4)
	as.QueryHandler = queries{as: as, asked: asked}
	d.addRegistration(as.Registration)
	hs := d.startMain()
	if err := as.SetHomeserverURL(hs.url()); err != nil {
		t.Fatal(err)
	}

	puppet := as.Intent(id.NewUserID("bridge_alice", d.serverName))
	if err := puppet.EnsureRegistered(ctx); err != nil {
		t.Fatalf("registering a user of the namespace: %v", err)
	}
	bob := newUser(ctx, t, hs.url(), "bob")
	room := createRoomWith(ctx, t, bob, "private_chat", puppet.Client)

	hello, err := sendText(ctx, bob, room, "b1", "hello, bridge")
	if err != nil {
		t.Fatal(err)
	}
	waitAppServiceEvent(t, as, hello)

	answer, err := puppet.SendText(ctx, room, "hello from the bridge")
	if err != nil {
		t.Fatalf("sending as a user of the namespace: %v", err)
	}
	res := syncUntilEvent(ctx, t, bob, "", room, answer.EventID)
	for _, e := range res.Rooms.Join[room].Timeline.Events {
		if e.ID == answer.EventID && e.Sender != puppet.UserID {
			t.Errorf("the message came from %s, not %s", e.Sender, puppet.UserID)
		}
	}

	// The user directory leaves the service's users out, as Synapse does: once it
	// finds dora, who joined after the puppet, it still does not find the puppet.
	dora := newUser(ctx, t, hs.url(), "dora")
	if _, err := bob.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: dora.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := dora.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		found, err := bob.SearchUserDirectory(ctx, "dora", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(found.Results) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the directory never found dora: %+v", found)
		}
	}
	if found, err := bob.SearchUserDirectory(ctx, "bridge", 10); err != nil || len(found.Results) != 0 {
		t.Errorf("a search finds the service's users: %+v %v", found, err)
	}

	// A user of the exclusive namespace nobody knows is asked of the service, which
	// creates it.
	carol := id.NewUserID("bridge_carol", d.serverName)
	if _, err := bob.GetProfile(ctx, carol); err != nil {
		t.Fatalf("the profile of a user the service creates when asked: %v", err)
	}
	if got := <-asked; got != carol {
		t.Errorf("asked for %s, want %s", got, carol)
	}
	if _, err := bob.GetProfile(ctx, id.NewUserID("nobody", d.serverName)); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("the profile of an unknown user outside every namespace: %v, want M_NOT_FOUND", err)
	}

	// The namespace is the service's alone.
	outsider, err := mautrix.NewClient(hs.url(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = outsider.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_mallory", Password: "pw-" + randomLetters(8),
		Auth: map[string]string{"type": "m.login.dummy"}})
	if !errors.Is(err, mautrix.MExclusive) {
		t.Errorf("registering a user of an exclusive namespace: %v, want M_EXCLUSIVE", err)
	}
	if _, err := bob.CreateAlias(ctx, "#bridge_room:"+id.RoomAlias(d.serverName), room); !errors.Is(err, mautrix.MExclusive) {
		t.Errorf("creating an alias of an exclusive namespace: %v, want M_EXCLUSIVE", err)
	}
	if _, err := as.Client(bob.UserID).Whoami(ctx); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("acting as a user outside the namespace: %v, want M_FORBIDDEN", err)
	}
	if _, err := as.Client(id.NewUserID("bridge_unregistered", d.serverName)).Whoami(ctx); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("acting as a user of the namespace not registered: %v, want M_FORBIDDEN", err)
	}
	who, err := as.BotClient().Whoami(ctx)
	if err != nil || who.UserID != as.BotMXID() {
		t.Errorf("the service's own user: %v %v", who, err)
	}

	if _, err := as.BotClient().AppservicePing(ctx, "bridge", "ping-1"); err != nil {
		t.Errorf("ping: %v", err)
	}
	if _, err := as.BotClient().AppservicePing(ctx, "another", "ping-2"); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("ping of another service: %v, want M_FORBIDDEN", err)
	}
}

// waitAppServiceEvent waits for the service to receive the event.
func waitAppServiceEvent(t *testing.T, as *appservice.AppService, want id.EventID) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e := <-as.Events:
			if e.ID == want {
				return
			}
		case <-timeout:
			t.Fatalf("the service never received %s", want)
		}
	}
}

// recordingService is an application service that records the transactions it takes
// and can be switched off (every request answered 503, as a service behind a proxy
// that is down).
type recordingService struct {
	srv  *httptest.Server
	down atomic.Bool
	mu   sync.Mutex
	// txns are the transactions answered 200, in order; a resent one is there once.
	txns []recordedTxn
}

type recordedTxn struct {
	id     uint64
	events []string
	// ephemeral are the transaction's ephemeral events (MSC2409).
	ephemeral []ephemeralEvent
}

type ephemeralEvent struct {
	Type    string          `json:"type"`
	RoomID  string          `json:"room_id"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

func newRecordingService(t *testing.T, hsToken string) *recordingService {
	s := &recordingService{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
			return
		}
		txn, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
		if !ok || r.Method != http.MethodPut {
			http.NotFound(w, r)
			return
		}
		n, err := strconv.ParseUint(txn, 10, 64)
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Events []struct {
				EventID string `json:"event_id"`
			} `json:"events"`
			Ephemeral []ephemeralEvent `json:"de.sorunome.msc2409.ephemeral"`
		}
		if err != nil || json.Unmarshal(raw, &body) != nil {
			http.Error(w, "bad transaction", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		if len(s.txns) == 0 || s.txns[len(s.txns)-1].id != n {
			rec := recordedTxn{id: n, ephemeral: body.Ephemeral}
			for _, e := range body.Events {
				rec.events = append(rec.events, e.EventID)
			}
			s.txns = append(s.txns, rec)
		}
		s.mu.Unlock()
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// received returns the events taken, in order, after checking that transaction IDs
// strictly increase and that no event came in two transactions.
func (s *recordingService) received(t *testing.T) []string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	seen := map[string]uint64{}
	for i, txn := range s.txns {
		if i > 0 && txn.id <= s.txns[i-1].id {
			t.Fatalf("transaction %d came after %d", txn.id, s.txns[i-1].id)
		}
		if len(txn.events) > 100 {
			t.Errorf("transaction %d holds %d events", txn.id, len(txn.events))
		}
		for _, e := range txn.events {
			if first, ok := seen[e]; ok {
				t.Fatalf("%s came in transactions %d and %d", e, first, txn.id)
			}
			seen[e] = txn.id
			out = append(out, e)
		}
	}
	return out
}

// TestAppServiceOutage is issue 9's acceptance 4: the service is down for 30 seconds
// while messages flow; once it is back, every event arrives, in order, in transactions
// whose IDs strictly increase, none in two transactions. A restart of the homeserver
// in the middle of the outage keeps the transaction waiting and its ID.
func TestAppServiceOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	hsToken := randomLetters(32)
	svc := newRecordingService(t, hsToken)
	reg := registration(d, "recorder", "rec", svc.srv.URL)
	reg.ServerToken = hsToken
	d.addRegistration(reg)
	hs := d.startMain()
	bob := newUser(ctx, t, hs.url(), "bob")
	// The service is interested in the room through a user of its namespace in it.
	room := createRoomWith(ctx, t, bob, "private_chat")
	joinServiceUser(ctx, t, d, hs, reg, "rec_member", bob, room)

	var sent []string
	send := func(n int) {
		for range n {
			ev, err := sendText(ctx, bob, room, "t"+strconv.Itoa(len(sent)), "message "+strconv.Itoa(len(sent)))
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, string(ev))
		}
	}
	send(20)
	svc.down.Store(true)
	outage := time.Now()
	send(100)
	hs.stop()
	hs.restart()
	send(100)
	time.Sleep(time.Until(outage.Add(30 * time.Second)))
	svc.down.Store(false)
	send(20)

	deadline := time.Now().Add(90 * time.Second)
	for {
		got := svc.received(t)
		var mine []string
		want := map[string]bool{}
		for _, e := range sent {
			want[e] = true
		}
		for _, e := range got {
			if want[e] {
				mine = append(mine, e)
			}
		}
		if len(mine) == len(sent) {
			for i := range sent {
				if mine[i] != sent[i] {
					t.Fatalf("event %d received was %s, sent %s", i, mine[i], sent[i])
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service received %d of the %d messages", len(mine), len(sent))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAppServiceIsolation is issue 9's acceptance 5 for services: one answers garbage
// (bytes that are not HTTP), one answers after 30 seconds and one never answers; a
// fourth, interested in the same room, gets every message meanwhile, while the slow
// one's first request is still open and before the hung one's has timed out.
func TestAppServiceIsolation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})

	garbage, garbageAnswers := garbageServer(t)
	release := make(chan struct{})
	var slowAnswered, hungAbandoned atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(30 * time.Second):
			slowAnswered.Add(1)
			w.Write([]byte(`{}`))
		case <-release:
		}
	}))
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			hungAbandoned.Add(1)
		case <-release:
		}
	}))
	// release runs before the servers close, which wait for their handlers.
	t.Cleanup(hung.Close)
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	fineToken := randomLetters(32)
	fine := newRecordingService(t, fineToken)

	everyRoom := appservice.NamespaceList{{Regex: "!.*", Exclusive: false}}
	for i, url := range []string{"http://" + garbage, slow.URL, hung.URL, fine.srv.URL} {
		reg := registration(d, "svc"+strconv.Itoa(i), "svc"+strconv.Itoa(i), url)
		reg.Namespaces.RoomIDs = everyRoom
		if url == fine.srv.URL {
			reg.ServerToken = fineToken
		}
		d.addRegistration(reg)
	}
	hs := d.startMain()
	bob := newUser(ctx, t, hs.url(), "bob")
	room := createRoomWith(ctx, t, bob, "private_chat")
	fine.waitLast(ctx, t, sendTexts(ctx, t, bob, room, "i", 50))
	if n := slowAnswered.Load(); n != 0 {
		t.Errorf("the well-behaved service got its events after %d answers of the slow one", n)
	}
	if n := hungAbandoned.Load(); n != 0 {
		t.Errorf("the well-behaved service got its events after %d requests to the hung one were given up", n)
	}
	if garbageAnswers.Load() == 0 {
		t.Error("the service answering garbage was never called")
	}
}

// joinServiceUser registers localpart through the service reg and has inviter invite
// it to room, which it joins.
func joinServiceUser(ctx context.Context, t *testing.T, d *deployment, hs *process, reg *appservice.Registration, localpart string, inviter *mautrix.Client, room id.RoomID) {
	t.Helper()
	as := appservice.Create()
	as.Registration, as.HomeserverDomain = reg, d.serverName
	if err := as.SetHomeserverURL(hs.url()); err != nil {
		t.Fatal(err)
	}
	member := as.Intent(id.NewUserID(localpart, d.serverName))
	if err := member.EnsureRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := inviter.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: member.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
}

// waitLast waits until the last events the service took are sent, in that order.
func (s *recordingService) waitLast(ctx context.Context, t *testing.T, sent []string) {
	t.Helper()
	for {
		got := s.received(t)
		if len(got) >= len(sent) && slices.Equal(got[len(got)-len(sent):], sent) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the service received %d events, not the %d sent last", len(got), len(sent))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// garbageServer answers every connection with bytes that are not HTTP; it returns its
// address and how many connections it answered.
func garbageServer(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var answers atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			answers.Add(1)
			_, _ = c.Write([]byte("\x00\xffnot http at all\r\n\r\n"))
			c.Close()
		}
	}()
	return ln.Addr().String(), &answers
}

// ephemeralReceived returns the ephemeral events the service took, in order.
func (s *recordingService) ephemeralReceived() []ephemeralEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ephemeralEvent
	for _, txn := range s.txns {
		out = append(out, txn.ephemeral...)
	}
	return out
}

// TestAppServiceEphemeral: a service with receive_ephemeral gets the typing, public
// receipts and presence of the rooms it is interested in (MSC2409, in Synapse's
// transaction key), not those of other rooms nor private receipts; a service without it
// gets none.
func TestAppServiceEphemeral(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	wantsToken, plainToken := randomLetters(32), randomLetters(32)
	wants, plain := newRecordingService(t, wantsToken), newRecordingService(t, plainToken)
	reg := registration(d, "ephemeral", "eph", wants.srv.URL)
	reg.ServerToken, reg.EphemeralEvents = wantsToken, true
	d.addRegistration(reg)
	plainReg := registration(d, "plain", "plain", plain.srv.URL)
	plainReg.ServerToken = plainToken
	plainReg.Namespaces.RoomIDs = appservice.NamespaceList{{Regex: "!.*"}}
	d.addRegistration(plainReg)
	hs := d.startMain()

	bob := newUser(ctx, t, hs.url(), "bob")
	room := createRoomWith(ctx, t, bob, "private_chat")
	other := createRoomWith(ctx, t, bob, "private_chat")
	joinServiceUser(ctx, t, d, hs, reg, "eph_member", bob, room)
	hello, err := sendText(ctx, bob, room, "e1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := sendText(ctx, bob, other, "e2", "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.UserTyping(ctx, other, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, other, elsewhere, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, room, hello, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, room, hello, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "here"}); err != nil {
		t.Fatal(err)
	}

	var typing, receipt, presence *ephemeralEvent
	deadline := time.Now().Add(20 * time.Second)
	for typing == nil || receipt == nil || presence == nil {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s the service has typing %v, receipt %v, presence %v", typing, receipt, presence)
		}
		time.Sleep(50 * time.Millisecond)
		for _, e := range wants.ephemeralReceived() {
			switch {
			case e.Type == "m.typing" && e.RoomID == room.String():
				typing = &e
			case e.Type == "m.receipt" && e.RoomID == room.String():
				receipt = &e
			case e.Type == "m.presence" && e.Sender == bob.UserID.String():
				presence = &e
			case e.RoomID == other.String():
				t.Fatalf("the service got %s of a room it has no interest in", e.Type)
			}
		}
	}
	if !strings.Contains(string(typing.Content), bob.UserID.String()) {
		t.Errorf("typing: %s", typing.Content)
	}
	var rc map[string]map[string]map[string]struct {
		TS int64 `json:"ts"`
	}
	if err := json.Unmarshal(receipt.Content, &rc); err != nil || rc[hello.String()]["m.read"][bob.UserID.String()].TS == 0 ||
		len(rc[hello.String()]) != 1 {
		t.Errorf("receipt: %s (%v)", receipt.Content, err)
	}
	var pc struct {
		Presence  string `json:"presence"`
		StatusMsg string `json:"status_msg"`
	}
	if err := json.Unmarshal(presence.Content, &pc); err != nil || pc.Presence != "online" || pc.StatusMsg != "here" {
		t.Errorf("presence: %s (%v)", presence.Content, err)
	}
	for _, e := range wants.ephemeralReceived() {
		if e.Type == "m.receipt" && strings.Contains(string(e.Content), "m.read.private") {
			t.Errorf("a private receipt was sent: %s", e.Content)
		}
	}
	// The service without receive_ephemeral took the messages and nothing else.
	for !slices.Contains(plain.received(t), hello.String()) {
		if ctx.Err() != nil {
			t.Fatal("the service without receive_ephemeral did not get the message")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(plain.ephemeralReceived()); n != 0 {
		t.Errorf("the service without receive_ephemeral got %d ephemeral events", n)
	}
}

// TestThirdPartyProtocols: /thirdparty asks the services listing a protocol, through the
// client API: the protocol's metadata with its instance's instance_id, a user lookup by
// the protocol's fields, 404 M_NOT_FOUND for a protocol nobody lists.
func TestThirdPartyProtocols(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	hsToken := randomLetters(32)
	bridge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
			return
		}
		switch r.URL.RequestURI() {
		case "/_matrix/app/v1/thirdparty/protocol/irc":
			w.Write([]byte(`{"user_fields":["nickname"],"location_fields":["channel"],"icon":"mxc://x/irc","field_types":{},"instances":[{"desc":"Libera","network_id":"libera","fields":{}}]}`))
		case "/_matrix/app/v1/thirdparty/user/irc?nickname=bob":
			w.Write([]byte(`[{"userid":"@irc_bob:` + d.serverName + `","protocol":"irc","fields":{"nickname":"bob"}}]`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(bridge.Close)
	reg := registration(d, "ircbridge", "irc", bridge.URL)
	reg.ServerToken, reg.Protocols = hsToken, []string{"irc"}
	d.addRegistration(reg)
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")

	var protocols map[string]struct {
		Icon      string `json:"icon"`
		Instances []struct {
			InstanceID string `json:"instance_id"`
		} `json:"instances"`
	}
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "thirdparty", "protocols"), nil, &protocols); err != nil {
		t.Fatal(err)
	}
	irc := protocols["irc"]
	if len(protocols) != 1 || irc.Icon != "mxc://x/irc" || len(irc.Instances) != 1 || irc.Instances[0].InstanceID != "ircbridge|libera" {
		t.Errorf("protocols: %+v", protocols)
	}
	var users []struct {
		UserID string `json:"userid"`
	}
	lookup := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "user", "irc"}, map[string]string{"nickname": "bob"})
	if _, err := alice.MakeRequest(ctx, http.MethodGet, lookup, nil, &users); err != nil || len(users) != 1 || users[0].UserID != "@irc_bob:"+d.serverName {
		t.Errorf("user lookup: %+v (%v)", users, err)
	}
	_, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "thirdparty", "protocol", "slack"), nil, nil)
	if !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("an unknown protocol: %v, want M_NOT_FOUND", err)
	}
}

// TestAppServiceSenderWorker: notify_appservices_from_worker puts the sender on the
// named worker alone: the service gets every message once, in transactions whose IDs
// strictly increase, while the main process serves the clients.
func TestAppServiceSenderWorker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	hsToken := randomLetters(32)
	svc := newRecordingService(t, hsToken)
	reg := registration(d, "recorder", "rec", svc.srv.URL)
	reg.ServerToken = hsToken
	reg.Namespaces.RoomIDs = appservice.NamespaceList{{Regex: "!.*"}}
	d.addRegistration(reg)
	d.shared["notify_appservices_from_worker"] = "asworker"
	hs := d.startMain()
	worker := d.launchWorker("asworker", false)
	worker.waitReady()
	worker.waitLogged("appservice sender started")

	bob := newUser(ctx, t, hs.url(), "bob")
	room := createRoomWith(ctx, t, bob, "private_chat")
	svc.waitLast(ctx, t, sendTexts(ctx, t, bob, room, "w", 30))
	time.Sleep(300 * time.Millisecond) // room for a second sender's transactions
	svc.received(t)                    // fails on a repeated or out-of-order transaction
	if data, err := os.ReadFile(filepath.Join(d.dir, "main.1.log")); err != nil || bytes.Contains(data, []byte("appservice sender started")) {
		t.Errorf("the main process started an appservice sender too (%v)", err)
	}
}
