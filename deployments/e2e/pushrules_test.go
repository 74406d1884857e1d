package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// ruleIDs lists the rule IDs of one kind.
func ruleIDs(rules pushrules.PushRuleArray) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.RuleID
	}
	return out
}

// syncPushRules returns the m.push_rules account data of a sync response, or nil.
func syncPushRules(t *testing.T, r *mautrix.RespSync) *pushrules.PushRuleset {
	t.Helper()
	for _, ev := range r.AccountData.Events {
		if ev.Type == event.AccountDataPushRules {
			rules, err := pushrules.EventToPushRules(ev)
			if err != nil || rules == nil {
				t.Fatalf("m.push_rules in /sync: %v", err)
			}
			return rules
		}
	}
	return nil
}

var (
	defaultOverrides = []string{".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
		".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"}
	defaultUnderrides = []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".m.rule.message", ".m.rule.encrypted", ".im.vector.jitsi"}
)

func senderIs(user string) []*pushrules.PushCondition {
	return []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "sender", Pattern: user}}
}

// TestPushRules: the server-default ruleset, rules of every kind added, placed, enabled,
// given actions and deleted with mautrix-go, m.push_rules in /sync (initial, incremental,
// waking a long-poll), and every error with Synapse's status and errcode.
func TestPushRules(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	notify := []*pushrules.PushAction{{Action: pushrules.ActionNotify}}

	// The defaults, in the spec's order, as an initial /sync also carries them.
	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	inSync := syncPushRules(t, first)
	rules, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if inSync == nil || !reflect.DeepEqual(ruleIDs(inSync.Override), ruleIDs(rules.Override)) {
		t.Fatalf("initial sync's m.push_rules %+v", inSync)
	}
	if got, want := ruleIDs(rules.Override), append([]string{".m.rule.master"}, defaultOverrides...); !reflect.DeepEqual(got, want) {
		t.Errorf("override defaults %v", got)
	}
	if got := ruleIDs(rules.Underride); !reflect.DeepEqual(got, defaultUnderrides) {
		t.Errorf("underride defaults %v", got)
	}
	if len(rules.Content) != 1 || rules.Content[0].Pattern != alice.UserID.Localpart() || !rules.Content[0].Default ||
		len(rules.Room.Map) != 0 || len(rules.Sender.Map) != 0 || rules.Override[0].Enabled {
		t.Errorf("content %+v, room %v, sender %v, master %+v", rules.Content[0], rules.Room.Map, rules.Sender.Map, rules.Override[0])
	}
	var whole struct {
		Global map[string][]json.RawMessage `json:"global"`
	}
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "pushrules", ""), nil, &whole); err != nil ||
		len(whole.Global) != 5 || len(whole.Global["room"]) != 0 || whole.Global["sender"] == nil {
		t.Errorf("GET /pushrules/: %v, %v", whole, err)
	}

	// Rules of every kind, placed with before and after.
	put := func(kind pushrules.PushRuleType, ruleID string, req *mautrix.ReqPutPushRule) {
		t.Helper()
		if err := alice.PutPushRule(ctx, "global", kind, ruleID, req); err != nil {
			t.Fatalf("put %s %s: %v", kind, ruleID, err)
		}
	}
	put(pushrules.OverrideRule, "o1", &mautrix.ReqPutPushRule{Conditions: senderIs("@x:y"), Actions: notify})
	put(pushrules.OverrideRule, "o2", &mautrix.ReqPutPushRule{After: "o1", Conditions: senderIs("@y:y"), Actions: notify})
	put(pushrules.OverrideRule, "o0", &mautrix.ReqPutPushRule{Before: "o1", Conditions: senderIs("@z:y"), Actions: notify})
	put(pushrules.OverrideRule, "o3", &mautrix.ReqPutPushRule{Conditions: senderIs("@w:y"), Actions: notify})
	put(pushrules.ContentRule, "lunch", &mautrix.ReqPutPushRule{Pattern: "lunch", Actions: notify})
	room := "!quiet:" + strings.SplitN(string(alice.UserID), ":", 2)[1]
	put(pushrules.RoomRule, room, &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}})
	put(pushrules.SenderRule, string(bob.UserID), &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{{Action: pushrules.ActionDontNotify}}})
	put(pushrules.UnderrideRule, "u1", &mautrix.ReqPutPushRule{Conditions: senderIs("@v:y"), Actions: notify})
	// Replaced in place, keeping its enabled flag.
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, "o2", false); err != nil {
		t.Fatal(err)
	}
	put(pushrules.OverrideRule, "o2", &mautrix.ReqPutPushRule{Conditions: senderIs("@y2:y"), Actions: notify})

	rules, err = alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ruleIDs(rules.Override), append([]string{".m.rule.master", "o3", "o0", "o1", "o2"}, defaultOverrides...); !reflect.DeepEqual(got, want) {
		t.Errorf("override rules %v", got)
	}
	if got := ruleIDs(rules.Content); !reflect.DeepEqual(got, []string{"lunch", ".m.rule.contains_user_name"}) {
		t.Errorf("content rules %v", got)
	}
	if got := ruleIDs(rules.Underride); !reflect.DeepEqual(got, append([]string{"u1"}, defaultUnderrides...)) {
		t.Errorf("underride rules %v", got)
	}
	if r := rules.Room.Map[room]; r == nil || r.Default || !r.Enabled || len(r.Actions) != 0 {
		t.Errorf("room rule %+v", r)
	}
	if r := rules.Sender.Map[string(bob.UserID)]; r == nil || len(r.Actions) != 1 || r.Actions[0].Action != pushrules.ActionDontNotify {
		t.Errorf("sender rule %+v", r)
	}
	o2, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "o2")
	if err != nil || o2.Enabled || o2.Default || len(o2.Conditions) != 1 || o2.Conditions[0].Pattern != "@y2:y" {
		t.Errorf("o2 after replacing it: %+v, %v", o2, err)
	}

	// Enabled flags and actions, of the user's rules and of server-default ones (the
	// bare boolean some older clients send included).
	attr := func(kind, ruleID, name string) map[string]any {
		t.Helper()
		var out map[string]any
		if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "pushrules", "global", kind, ruleID, name), nil, &out); err != nil {
			t.Fatalf("GET %s/%s/%s: %v", kind, ruleID, name, err)
		}
		return out
	}
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
		t.Fatal(err)
	}
	if got := attr("override", ".m.rule.master", "enabled"); got["enabled"] != true {
		t.Errorf("master enabled: %v", got)
	}
	if _, err := alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "pushrules", "global", "override", ".m.rule.master", "enabled"), false, nil); err != nil {
		t.Fatal(err)
	}
	if got := attr("override", ".m.rule.master", "enabled"); got["enabled"] != false {
		t.Errorf("master disabled with a bare boolean: %v", got)
	}
	loud := []*pushrules.PushAction{{Action: pushrules.ActionNotify}, {Action: pushrules.ActionSetTweak, Tweak: pushrules.TweakSound, Value: "default"}}
	for _, ruleID := range []string{".m.rule.message", "u1"} {
		if err := alice.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ruleID, loud); err != nil {
			t.Fatal(err)
		}
		if got, _ := json.Marshal(attr("underride", ruleID, "actions")); string(got) != `{"actions":["notify",{"set_tweak":"sound","value":"default"}]}` {
			t.Errorf("%s actions: %s", ruleID, got)
		}
	}
	if got := attr("content", "lunch", "pattern"); got["pattern"] != "lunch" {
		t.Errorf("content rule's pattern: %v", got)
	}

	// Deleted.
	if err := alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "o0"); err != nil {
		t.Fatal(err)
	}
	_, err = alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "o0")
	wantError(t, "a deleted rule", err, http.StatusNotFound, "M_NOT_FOUND")

	// /sync: what changed since the first sync, as the whole ruleset, then nothing.
	next, err := alice.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	synced := syncPushRules(t, next)
	if synced == nil || !reflect.DeepEqual(ruleIDs(synced.Override)[:4], []string{".m.rule.master", "o3", "o1", "o2"}) {
		t.Fatalf("incremental m.push_rules %+v", synced)
	}
	// On a server of the test's own, where nobody else moves a stream, at the same token.
	idle, err := alice.SyncRequest(ctx, 100, next.NextBatch, "", false, event.PresenceOnline)
	if err != nil || syncPushRules(t, idle) != nil || (externalURL == "" && idle.NextBatch != next.NextBatch) {
		t.Errorf("sync with nothing new: %+v (since %s), %v", idle, next.NextBatch, err)
	}
	// Other users' rules are their own.
	if theirs, err := bob.GetPushRules(ctx); err != nil || len(theirs.Override) != 1+len(defaultOverrides) || len(theirs.Sender.Map) != 0 {
		t.Errorf("bob's rules: %+v, %v", theirs, err)
	}
	// The account data API serves them too.
	var asAccountData pushrules.EventContent
	if err := alice.GetAccountData(ctx, "m.push_rules", &asAccountData); err != nil || asAccountData.Ruleset == nil ||
		!reflect.DeepEqual(ruleIDs(asAccountData.Ruleset.Override), ruleIDs(synced.Override)) {
		t.Errorf("account data m.push_rules: %+v, %v", asAccountData.Ruleset, err)
	}

	// A long-poll wakes for each change of push rules alone.
	since := next.NextBatch
	for i, change := range []func() error{
		func() error {
			return alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "late", &mautrix.ReqPutPushRule{Conditions: senderIs("@l:y"), Actions: notify})
		},
		func() error { return alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, "late", false) },
		func() error {
			return alice.PutPushRuleActions(ctx, "global", pushrules.OverrideRule, "late", []*pushrules.PushAction{})
		},
		func() error { return alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "late") },
	} {
		done := longPoll(ctx, t, alice, 30000, since, noPresence, false, event.PresenceOnline)
		if err := change(); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		r := <-done
		if r == nil || syncPushRules(t, r) == nil {
			t.Fatalf("change %d did not wake the long-poll with m.push_rules: %+v", i, r)
		}
		since = r.NextBatch
	}

	pushRulesErrors(ctx, t, alice)
}

// pushRulesErrors checks every error of the push rules API; push rules are always the
// requester's own, so there is no one else's to ask for.
func pushRulesErrors(ctx context.Context, t *testing.T, alice *mautrix.Client) {
	t.Helper()
	url := func(path ...any) string { return alice.BuildClientURL(append([]any{"v3"}, path...)...) }
	rule := map[string]any{"conditions": []any{}, "actions": []any{"notify"}}
	raw := func(method, u string, body []byte) error {
		_, err := alice.MakeFullRequest(ctx, mautrix.FullRequest{Method: method, URL: u, RequestBytes: body})
		return err
	}
	anon, err := mautrix.NewClient(alice.HomeserverURL.String(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	for _, c := range []struct {
		what, method, url string
		body              any
		status            int
		code              string
	}{
		{"GET without the slash", http.MethodGet, url("pushrules"), nil, 404, "M_UNRECOGNIZED"},
		{"GET an unknown scope", http.MethodGet, url("pushrules", "device", ""), nil, 400, "M_UNRECOGNIZED"},
		{"GET global without the slash", http.MethodGet, url("pushrules", "global"), nil, 400, "M_UNRECOGNIZED"},
		{"GET an unknown kind", http.MethodGet, url("pushrules", "global", "postcontent", ""), nil, 400, "M_UNRECOGNIZED"},
		{"GET a kind without the slash", http.MethodGet, url("pushrules", "global", "override"), nil, 400, "M_UNRECOGNIZED"},
		{"GET an unknown rule", http.MethodGet, url("pushrules", "global", "override", "nope"), nil, 404, "M_NOT_FOUND"},
		{"GET enabled of an unknown rule", http.MethodGet, url("pushrules", "global", "override", "nope", "enabled"), nil, 404, "M_NOT_FOUND"},
		{"GET actions of an unknown default", http.MethodGet, url("pushrules", "global", "override", ".m.rule.nope", "actions"), nil, 404, "M_NOT_FOUND"},
		{"GET an unknown attribute", http.MethodGet, url("pushrules", "global", "override", "o1", "colour"), nil, 400, "M_UNRECOGNIZED"},
		{"PUT an unknown scope", http.MethodPut, url("pushrules", "device", "override", "x"), rule, 400, "M_UNRECOGNIZED"},
		{"PUT without a rule id", http.MethodPut, url("pushrules", "global", "override", ""), rule, 400, "M_UNRECOGNIZED"},
		{"PUT an unknown kind", http.MethodPut, url("pushrules", "global", "postcontent", "x"), rule, 400, "M_UNKNOWN"},
		{"PUT a rule id starting with a dot", http.MethodPut, url("pushrules", "global", "override", ".mine"), rule, 400, "M_UNKNOWN"},
		{"PUT over a server-default rule", http.MethodPut, url("pushrules", "global", "override", ".m.rule.master"), rule, 400, "M_UNKNOWN"},
		{"PUT a rule id with a slash", http.MethodPut, url("pushrules", "global", "override", "a/b"), rule, 400, "M_UNKNOWN"},
		{"PUT a rule id too long", http.MethodPut, url("pushrules", "global", "override", strings.Repeat("x", 256)), rule, 400, "M_UNKNOWN"},
		{"PUT before an unknown rule", http.MethodPut, url("pushrules", "global", "override", "x") + "?before=nope", rule, 400, "M_UNKNOWN"},
		{"PUT after a server-default rule", http.MethodPut, url("pushrules", "global", "override", "x") + "?after=.m.rule.master", rule, 400, "M_UNKNOWN"},
		{"PUT after a rule of another kind", http.MethodPut, url("pushrules", "global", "underride", "x") + "?after=o1", rule, 400, "M_UNKNOWN"},
		{"PUT without conditions", http.MethodPut, url("pushrules", "global", "override", "x"), map[string]any{"actions": []any{}}, 400, "M_UNKNOWN"},
		{"PUT a condition without kind", http.MethodPut, url("pushrules", "global", "override", "x"),
			map[string]any{"conditions": []any{map[string]any{"key": "type", "pattern": "x"}}, "actions": []any{}}, 400, "M_UNKNOWN"},
		{"PUT an event_match without pattern", http.MethodPut, url("pushrules", "global", "underride", "x"),
			map[string]any{"conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}, "actions": []any{}}, 400, "M_UNKNOWN"},
		{"PUT a bad member count", http.MethodPut, url("pushrules", "global", "override", "x"),
			map[string]any{"conditions": []any{map[string]any{"kind": "room_member_count", "is": "many"}}, "actions": []any{}}, 400, "M_UNKNOWN"},
		{"PUT a content rule without pattern", http.MethodPut, url("pushrules", "global", "content", "x"), map[string]any{"actions": []any{}}, 400, "M_UNKNOWN"},
		{"PUT a content rule with a number pattern", http.MethodPut, url("pushrules", "global", "content", "x"), map[string]any{"pattern": 5, "actions": []any{}}, 400, "M_UNKNOWN"},
		{"PUT without actions", http.MethodPut, url("pushrules", "global", "room", "!r:x"), map[string]any{}, 400, "M_UNKNOWN"},
		{"PUT an unknown action", http.MethodPut, url("pushrules", "global", "sender", "@x:y"), map[string]any{"actions": []any{"ring"}}, 400, "M_UNKNOWN"},
		{"PUT a sound without a sound", http.MethodPut, url("pushrules", "global", "sender", "@x:y"),
			map[string]any{"actions": []any{map[string]any{"set_tweak": "sound"}}}, 400, "M_UNKNOWN"},
		{"PUT a rule that is not an object", http.MethodPut, url("pushrules", "global", "override", "x"), []any{}, 400, "M_BAD_JSON"},
		{"PUT enabled not a boolean", http.MethodPut, url("pushrules", "global", "override", "o1", "enabled"), map[string]any{"enabled": "yes"}, 400, "M_UNKNOWN"},
		{"PUT enabled of an unknown rule", http.MethodPut, url("pushrules", "global", "override", "nope", "enabled"), map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"PUT enabled of an unknown default", http.MethodPut, url("pushrules", "global", "override", ".m.rule.nope", "enabled"), map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"PUT enabled of a default of another kind", http.MethodPut, url("pushrules", "global", "underride", ".m.rule.master", "enabled"), map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"PUT actions not in an object", http.MethodPut, url("pushrules", "global", "override", "o1", "actions"), []any{"notify"}, 400, "M_UNKNOWN"},
		{"PUT actions that are not actions", http.MethodPut, url("pushrules", "global", "override", "o1", "actions"), map[string]any{"actions": "notify"}, 400, "M_UNKNOWN"},
		{"PUT actions of an unknown rule", http.MethodPut, url("pushrules", "global", "room", "!nope:x", "actions"), map[string]any{"actions": []any{}}, 404, "M_NOT_FOUND"},
		{"PUT an unknown attribute", http.MethodPut, url("pushrules", "global", "override", "o1", "colour"), map[string]any{}, 400, "M_UNRECOGNIZED"},
		{"DELETE an unknown rule", http.MethodDelete, url("pushrules", "global", "override", "nope"), nil, 404, "M_NOT_FOUND"},
		{"DELETE a server-default rule", http.MethodDelete, url("pushrules", "global", "override", ".m.rule.master"), nil, 404, "M_NOT_FOUND"},
		{"DELETE of an unknown kind", http.MethodDelete, url("pushrules", "global", "bogus", "o1"), nil, 404, "M_NOT_FOUND"},
		{"DELETE an unknown scope", http.MethodDelete, url("pushrules", "device", "override", "o1"), nil, 400, "M_UNRECOGNIZED"},
		{"DELETE an attribute", http.MethodDelete, url("pushrules", "global", "override", "o1", "enabled"), nil, 400, "M_UNRECOGNIZED"},
	} {
		_, err := alice.MakeRequest(ctx, c.method, c.url, c.body, &out)
		wantError(t, c.what, err, c.status, c.code)
	}
	wantError(t, "PUT a body that is not JSON", raw(http.MethodPut, url("pushrules", "global", "override", "x"), []byte(`{"actions":`)), 400, "M_NOT_JSON")
	wantError(t, "PUT enabled that is not JSON", raw(http.MethodPut, url("pushrules", "global", "override", "o1", "enabled"), []byte(`tru`)), 400, "M_NOT_JSON")
	huge := []byte(`{"actions":[],"pattern":"` + strings.Repeat("x", 70_000) + `"}`)
	wantError(t, "PUT a rule too large", raw(http.MethodPut, url("pushrules", "global", "content", "x"), huge), 413, "M_TOO_LARGE")
	_, err = anon.MakeRequest(ctx, http.MethodGet, url("pushrules", ""), nil, &out)
	wantError(t, "GET without a token", err, 401, "M_MISSING_TOKEN")
	_, err = anon.MakeRequest(ctx, http.MethodPut, url("pushrules", "global", "override", "x"), rule, &out)
	wantError(t, "PUT without a token", err, 401, "M_MISSING_TOKEN")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "user", alice.UserID, "account_data", "m.push_rules"), map[string]any{}, nil)
	wantError(t, "m.push_rules through account data", err, http.StatusMethodNotAllowed, "M_BAD_JSON")

	// The refusals changed nothing: o1 is still there, enabled, after o3.
	rules, err := alice.GetPushRules(ctx)
	if err != nil || strings.Join(ruleIDs(rules.Override)[:4], ",") != ".m.rule.master,o3,o1,o2" || !rules.Override[2].Enabled {
		t.Errorf("rules after the refusals: %v, %v", ruleIDs(rules.Override), err)
	}
}

// checkPushRulesAcross: a push rule put through one gateway reaches the owner's /sync
// and reads on the other, and so does its deletion.
func checkPushRulesAcross(ctx context.Context, t *testing.T, c streamClients) {
	first, err := c.alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	other := at(c.alice, c.bob.HomeserverURL.String())
	ruleID := "across" + randomLetters(8)
	if err := other.PutPushRule(ctx, "global", pushrules.OverrideRule, ruleID, &mautrix.ReqPutPushRule{
		Conditions: senderIs(string(c.bob.UserID)), Actions: []*pushrules.PushAction{}}); err != nil {
		t.Fatal(err)
	}
	has := func(r *mautrix.RespSync) (seen, present bool) {
		rules := syncPushRules(t, r)
		return rules != nil, rules != nil && slices.Contains(ruleIDs(rules.Override), ruleID)
	}
	since := syncUntil(ctx, t, c.alice, first.NextBatch, "a push rule put through the other gateway", func(r *mautrix.RespSync) bool {
		_, present := has(r)
		return present
	})
	if _, err := c.alice.GetPushRule(ctx, "global", pushrules.OverrideRule, ruleID); err != nil {
		t.Errorf("read back: %v", err)
	}
	if err := other.DeletePushRule(ctx, "global", pushrules.OverrideRule, ruleID); err != nil {
		t.Fatal(err)
	}
	syncUntil(ctx, t, c.alice, since, "a push rule deleted through the other gateway", func(r *mautrix.RespSync) bool {
		seen, present := has(r)
		return seen && !present
	})
}

// pushRulesRedisCheck puts a push rule; Synapse's push_rules row is [user_id].
var pushRulesRedisCheck = redisStreamCheck{
	stream: "push_rules",
	act: func(ctx context.Context, t *testing.T, alice, _ *mautrix.Client, _ id.RoomID) {
		err := alice.PutPushRule(ctx, "global", pushrules.ContentRule, "redis", &mautrix.ReqPutPushRule{
			Pattern: "redis", Actions: []*pushrules.PushAction{}})
		if err != nil {
			t.Fatal(err)
		}
	},
	row: func(f []json.RawMessage, alice, _ *mautrix.Client, _ id.RoomID) (bool, error) {
		var user string
		if len(f) != 1 || json.Unmarshal(f[0], &user) != nil {
			return false, errors.New("want [user_id]")
		}
		return user == alice.UserID.String(), nil
	},
}
