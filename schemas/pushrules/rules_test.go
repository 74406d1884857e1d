package pushrules

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/schemas"
)

const alice = "@alice:example.org"

func ids(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.RuleID
	}
	return out
}

// The server-default ruleset: the spec's rules in the spec's order, as Synapse serves
// them (the legacy mention rules and .im.vector.jitsi included), every one default.
func TestServerDefaults(t *testing.T) {
	rules := State{}.Format(alice)
	want := map[string][]string{
		KindOverride: {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"},
		KindContent:   {".m.rule.contains_user_name"},
		KindRoom:      {},
		KindSender:    {},
		KindUnderride: {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted", ".im.vector.jitsi"},
	}
	if len(rules) != len(want) {
		t.Fatalf("kinds %v", rules)
	}
	for kind, w := range want {
		if got := ids(rules[kind]); !reflect.DeepEqual(got, w) {
			t.Errorf("%s: %v, want %v", kind, got, w)
		}
		for _, r := range rules[kind] {
			if !r.Default || r.Enabled != (r.RuleID != ".m.rule.master") {
				t.Errorf("%s: default %v enabled %v", r.RuleID, r.Default, r.Enabled)
			}
		}
	}
	// Exactly the spec's definitions (with Synapse's actions), the user filled in.
	for _, c := range []struct{ kind, id, want string }{
		{KindOverride, ".m.rule.master", `{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]}`},
		{KindOverride, ".m.rule.invite_for_me", `{"rule_id":".m.rule.invite_for_me","default":true,"enabled":true,"conditions":[` +
			`{"kind":"event_match","key":"type","pattern":"m.room.member"},{"kind":"event_match","key":"content.membership","pattern":"invite"},` +
			`{"kind":"event_match","key":"state_key","pattern":"@alice:example.org"}],` +
			`"actions":["notify",{"set_tweak":"highlight","value":false},{"set_tweak":"sound","value":"default"}]}`},
		{KindOverride, ".m.rule.is_user_mention", `{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,"conditions":[` +
			`{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@alice:example.org"}],` +
			`"actions":["notify",{"set_tweak":"highlight"},{"set_tweak":"sound","value":"default"}]}`},
		{KindOverride, ".m.rule.is_room_mention", `{"rule_id":".m.rule.is_room_mention","default":true,"enabled":true,"conditions":[` +
			`{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},{"kind":"sender_notification_permission","key":"room"}],` +
			`"actions":["notify",{"set_tweak":"highlight"}]}`},
		{KindOverride, ".m.rule.suppress_edits", `{"rule_id":".m.rule.suppress_edits","default":true,"enabled":true,"conditions":[` +
			`{"kind":"event_property_is","key":"content.m\\.relates_to.rel_type","value":"m.replace"}],"actions":[]}`},
		{KindContent, ".m.rule.contains_user_name", `{"rule_id":".m.rule.contains_user_name","default":true,"enabled":true,"pattern":"alice",` +
			`"actions":["notify",{"set_tweak":"highlight"},{"set_tweak":"sound","value":"default"}]}`},
		{KindUnderride, ".m.rule.room_one_to_one", `{"rule_id":".m.rule.room_one_to_one","default":true,"enabled":true,"conditions":[` +
			`{"kind":"event_match","key":"type","pattern":"m.room.message"},{"kind":"room_member_count","is":"2"}],` +
			`"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight","value":false}]}`},
	} {
		r := rules[c.kind][index(rules[c.kind], c.id)]
		got, err := schemas.Marshal(r)
		if err != nil || string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.id, got, c.want)
		}
	}
	// Every rule the ruleset serves is one a user may enable or disable.
	for kind, rs := range rules {
		for _, r := range rs {
			if !IsDefault(kind, r.RuleID) {
				t.Errorf("%s/%s is served but not a default", kind, r.RuleID)
			}
		}
	}
	if IsDefault(KindUnderride, ".m.rule.master") || IsDefault(KindOverride, "mine") {
		t.Error("IsDefault is not per kind")
	}
}

// apply applies changes in order, failing the test on a refusal.
func apply(t *testing.T, s State, changes ...any) State {
	t.Helper()
	for i := 0; i < len(changes); i += 2 {
		c := changes[i+1].(Change)
		next, err := s.Apply(changes[i].(string), &c)
		if err != nil {
			t.Fatalf("%s %+v: %v", changes[i], c, err)
		}
		s = next
	}
	return s
}

func override(id string) Change {
	return Change{Kind: KindOverride, RuleID: id, Conditions: json.RawMessage(`[{"kind":"event_match","key":"sender","pattern":"@x:y"}]`),
		Actions: json.RawMessage(`["notify"]`)}
}

func withPlace(c Change, before, after string) Change {
	c.Before, c.After = before, after
	return c
}

func TestPlacement(t *testing.T) {
	enabled := false
	s := apply(t, State{},
		OpPut, override("a"),
		OpPut, override("b"), // new rules go first
		OpPut, withPlace(override("c"), "", "b"),
		OpPut, withPlace(override("d"), "a", ""),
		OpEnabled, Change{Kind: KindOverride, RuleID: "c", Enabled: &enabled},
	)
	if got := ids(s.Rules[KindOverride]); !reflect.DeepEqual(got, []string{"b", "c", "d", "a"}) {
		t.Fatalf("order %v", got)
	}
	// Replaced without before/after: same place, still disabled, new actions.
	c := override("c")
	c.Actions = json.RawMessage(`["dont_notify"]`)
	s = apply(t, s, OpPut, c)
	got := s.Rules[KindOverride]
	if ids(got)[1] != "c" || got[1].Enabled || string(got[1].Actions) != `["dont_notify"]` {
		t.Fatalf("replaced rule %+v", got[1])
	}
	// Moved: before wins over after; a rule placed relative to itself stays.
	s = apply(t, s,
		OpPut, withPlace(override("a"), "b", "d"),
		OpPut, withPlace(override("c"), "c", ""),
	)
	if got := ids(s.Rules[KindOverride]); !reflect.DeepEqual(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("order after moves %v", got)
	}
	// The user's override rules come after master and before the other defaults.
	if got := ids(s.Format(alice)[KindOverride])[:6]; !reflect.DeepEqual(got, []string{".m.rule.master", "a", "b", "c", "d", ".m.rule.suppress_notices"}) {
		t.Fatalf("formatted %v", got)
	}
	s = apply(t, s, OpDelete, Change{Kind: KindOverride, RuleID: "b"})
	if got := ids(s.Rules[KindOverride]); !reflect.DeepEqual(got, []string{"a", "c", "d"}) {
		t.Fatalf("after delete %v", got)
	}
}

func TestKindsAndDefaults(t *testing.T) {
	pattern := "cake*lie"
	off := false
	s := apply(t, State{},
		OpPut, Change{Kind: KindContent, RuleID: "cake", Pattern: &pattern, Actions: json.RawMessage(`["notify"]`),
			Conditions: json.RawMessage(`[{"kind":"ignored"}]`)},
		OpPut, Change{Kind: KindRoom, RuleID: "!r:example.org", Actions: json.RawMessage(`[]`), Conditions: json.RawMessage(`[]`)},
		OpPut, Change{Kind: KindSender, RuleID: "@bob:example.org", Actions: json.RawMessage(`["dont_notify"]`)},
		OpPut, Change{Kind: KindUnderride, RuleID: "u", Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(`["notify"]`)},
		OpEnabled, Change{Kind: KindOverride, RuleID: ".m.rule.suppress_edits", Enabled: &off},
		OpActions, Change{Kind: KindUnderride, RuleID: ".m.rule.message", Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"default"}]`)},
		OpActions, Change{Kind: KindRoom, RuleID: "!r:example.org", Actions: json.RawMessage(`["dont_notify"]`)},
	)
	rules := s.Format(alice)
	want := map[string]string{
		KindContent:   `[{"rule_id":"cake","default":false,"enabled":true,"pattern":"cake*lie","actions":["notify"]},`,
		KindRoom:      `[{"rule_id":"!r:example.org","default":false,"enabled":true,"actions":["dont_notify"]}]`,
		KindSender:    `[{"rule_id":"@bob:example.org","default":false,"enabled":true,"actions":["dont_notify"]}]`,
		KindUnderride: `[{"rule_id":"u","default":false,"enabled":true,"conditions":[],"actions":["notify"]},`,
	}
	for kind, w := range want {
		raw, _ := schemas.Marshal(rules[kind])
		if !strings.HasPrefix(string(raw), w) {
			t.Errorf("%s: %s\nwant it to start with %s", kind, raw, w)
		}
	}
	edits := rules[KindOverride][index(rules[KindOverride], ".m.rule.suppress_edits")]
	message := rules[KindUnderride][index(rules[KindUnderride], ".m.rule.message")]
	if edits.Enabled || !edits.Default || string(message.Actions) != `["notify",{"set_tweak":"sound","value":"default"}]` {
		t.Errorf("changed defaults: %+v, %+v", edits, message)
	}
	// Back to the defaults: the state is empty again, except what was set on defaults.
	s = apply(t, s,
		OpDelete, Change{Kind: KindContent, RuleID: "cake"},
		OpDelete, Change{Kind: KindRoom, RuleID: "!r:example.org"},
		OpDelete, Change{Kind: KindSender, RuleID: "@bob:example.org"},
		OpDelete, Change{Kind: KindUnderride, RuleID: "u"},
	)
	if raw, _ := schemas.Marshal(s); !strings.HasPrefix(string(raw), `{"defaults":`) {
		t.Errorf("state after deleting every rule: %s", raw)
	}
}

func TestRefusals(t *testing.T) {
	on := true
	s := apply(t, State{}, OpPut, override("mine"))
	before, _ := schemas.Marshal(s)
	actions := json.RawMessage(`["notify"]`)
	cond := func(c string) Change {
		return Change{Kind: KindOverride, RuleID: "x", Conditions: json.RawMessage(c), Actions: actions}
	}
	act := func(a string) Change {
		return Change{Kind: KindUnderride, RuleID: "x", Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(a)}
	}
	for _, c := range []struct {
		name   string
		op     string
		change Change
		status int
		code   string
	}{
		{"unknown kind", OpPut, Change{Kind: "bogus", RuleID: "x", Actions: actions}, 400, "M_UNKNOWN"},
		{"postcontent kind", OpEnabled, Change{Kind: "postcontent", RuleID: "x", Enabled: &on}, 400, "M_UNKNOWN"},
		{"server-default id", OpPut, withPlace(override(".m.rule.master"), "", ""), 400, "M_UNKNOWN"},
		{"dotted id", OpPut, override(".mine"), 400, "M_UNKNOWN"},
		{"slash", OpPut, override("a/b"), 400, "M_UNKNOWN"},
		{"backslash", OpEnabled, Change{Kind: KindOverride, RuleID: `a\b`, Enabled: &on}, 400, "M_UNKNOWN"},
		{"long id", OpPut, override(strings.Repeat("x", MaxRuleID+1)), 400, "M_UNKNOWN"},
		{"empty id", OpPut, override(""), 400, "M_UNKNOWN"},
		{"before unknown", OpPut, withPlace(override("x"), "nope", ""), 400, "M_UNKNOWN"},
		{"after a default", OpPut, withPlace(override("x"), "", ".m.rule.master"), 400, "M_UNKNOWN"},
		{"before itself, new", OpPut, withPlace(override("x"), "x", ""), 400, "M_UNKNOWN"},
		{"before a rule of another kind", OpPut, withPlace(act(`["notify"]`), "mine", ""), 400, "M_UNKNOWN"},
		{"no conditions", OpPut, Change{Kind: KindOverride, RuleID: "x", Actions: actions}, 400, "M_UNKNOWN"},
		{"conditions not a list", OpPut, cond(`{"kind":"event_match"}`), 400, "M_UNKNOWN"},
		{"condition not an object", OpPut, cond(`["x"]`), 400, "M_UNKNOWN"},
		{"condition without kind", OpPut, cond(`[{"key":"type","pattern":"x"}]`), 400, "M_UNKNOWN"},
		{"event_match without pattern", OpPut, cond(`[{"kind":"event_match","key":"type"}]`), 400, "M_UNKNOWN"},
		{"event_match pattern a number", OpPut, cond(`[{"kind":"event_match","key":"type","pattern":5}]`), 400, "M_UNKNOWN"},
		{"unknown kind with a number key", OpPut, cond(`[{"kind":"org.example","key":5}]`), 400, "M_UNKNOWN"},
		{"property_is float", OpPut, cond(`[{"kind":"event_property_is","key":"k","value":1.5}]`), 400, "M_UNKNOWN"},
		{"property_is object", OpPut, cond(`[{"kind":"event_property_is","key":"k","value":{}}]`), 400, "M_UNKNOWN"},
		{"property_contains without value", OpPut, cond(`[{"kind":"event_property_contains","key":"k"}]`), 400, "M_UNKNOWN"},
		{"member count words", OpPut, cond(`[{"kind":"room_member_count","is":"two"}]`), 400, "M_UNKNOWN"},
		{"permission without key", OpPut, cond(`[{"kind":"sender_notification_permission"}]`), 400, "M_UNKNOWN"},
		{"content without pattern", OpPut, Change{Kind: KindContent, RuleID: "x", Actions: actions}, 400, "M_UNKNOWN"},
		{"no actions", OpPut, act(``), 400, "M_UNKNOWN"},
		{"actions null", OpPut, act(`null`), 400, "M_UNKNOWN"},
		{"actions not a list", OpPut, act(`"notify"`), 400, "M_UNKNOWN"},
		{"unknown action", OpPut, act(`["ring"]`), 400, "M_UNKNOWN"},
		{"action object without set_tweak", OpPut, act(`[{"action":"notify"}]`), 400, "M_UNKNOWN"},
		{"sound without value", OpPut, act(`[{"set_tweak":"sound"}]`), 400, "M_UNKNOWN"},
		{"sound a number", OpPut, act(`[{"set_tweak":"sound","value":1}]`), 400, "M_UNKNOWN"},
		{"highlight a string", OpActions, Change{Kind: KindOverride, RuleID: "mine", Actions: json.RawMessage(`[{"set_tweak":"highlight","value":"yes"}]`)}, 400, "M_UNKNOWN"},
		{"enabled missing", OpEnabled, Change{Kind: KindOverride, RuleID: "mine"}, 400, "M_UNKNOWN"},
		{"unknown op", "move", override("mine"), 400, "M_UNKNOWN"},
		{"delete unknown", OpDelete, Change{Kind: KindOverride, RuleID: "nope"}, 404, "M_NOT_FOUND"},
		{"delete of another kind", OpDelete, Change{Kind: KindUnderride, RuleID: "mine"}, 404, "M_NOT_FOUND"},
		{"delete a default", OpDelete, Change{Kind: KindOverride, RuleID: ".m.rule.master"}, 404, "M_NOT_FOUND"},
		{"delete of an unknown kind", OpDelete, Change{Kind: "bogus", RuleID: "mine"}, 404, "M_NOT_FOUND"},
		{"enable unknown", OpEnabled, Change{Kind: KindOverride, RuleID: "nope", Enabled: &on}, 404, "M_NOT_FOUND"},
		{"enable unknown default", OpEnabled, Change{Kind: KindOverride, RuleID: ".m.rule.nope", Enabled: &on}, 404, "M_NOT_FOUND"},
		{"enable a default of another kind", OpEnabled, Change{Kind: KindUnderride, RuleID: ".m.rule.master", Enabled: &on}, 404, "M_NOT_FOUND"},
		{"actions of unknown", OpActions, Change{Kind: KindSender, RuleID: "@x:y", Actions: actions}, 404, "M_NOT_FOUND"},
	} {
		_, err := s.Apply(c.op, &c.change)
		if err == nil || err.Status != c.status || err.Code != c.code {
			t.Errorf("%s: %v, want %d %s", c.name, err, c.status, c.code)
		}
	}
	if after, _ := schemas.Marshal(s); string(after) != string(before) {
		t.Errorf("refusals changed the state: %s", after)
	}
	// What the spec allows and a stricter reading might refuse.
	apply(t, s,
		OpPut, cond(`[{"kind":"org.example.unknown","anything":[1,2]}]`),
		OpPut, cond(`[{"kind":"event_property_is","key":"k","value":null},{"kind":"room_member_count","is":">=10"},{"kind":"contains_display_name"}]`),
		OpPut, act(`["notify","coalesce","dont_notify",{"set_tweak":"highlight","value":null},{"set_tweak":"org.example","value":[1]}]`),
	)
}

func TestApplyLeavesTheReceiver(t *testing.T) {
	s := apply(t, State{}, OpPut, override("a"), OpPut, override("b"))
	before, _ := schemas.Marshal(s)
	off := false
	apply(t, s, OpDelete, Change{Kind: KindOverride, RuleID: "a"}, OpEnabled, Change{Kind: KindOverride, RuleID: "b", Enabled: &off},
		OpEnabled, Change{Kind: KindOverride, RuleID: ".m.rule.master", Enabled: &off})
	if after, _ := schemas.Marshal(s); string(after) != string(before) {
		t.Errorf("Apply changed its receiver: %s", after)
	}
}

func TestStateLimit(t *testing.T) {
	s := State{}
	big := json.RawMessage(`[{"kind":"event_match","key":"content.body","pattern":"` + strings.Repeat("x", 60_000) + `"}]`)
	for i := 0; ; i++ {
		c := Change{Kind: KindOverride, RuleID: "r" + strings.Repeat("0", i), Conditions: big, Actions: json.RawMessage(`[]`)}
		next, err := s.Apply(OpPut, &c)
		if err != nil {
			if err.Status != http.StatusRequestEntityTooLarge || err.Code != "M_TOO_LARGE" || i < MaxStateBytes/61_000 {
				t.Fatalf("rule %d: %v", i, err)
			}
			return
		}
		s = next
	}
}

func TestRecord(t *testing.T) {
	s := apply(t, State{}, OpPut, override("a"))
	raw, err := schemas.Marshal(Record{V: Version, User: alice, Rules: s})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Decode(raw)
	if err != nil || r.User != alice || ids(r.Rules.Rules[KindOverride])[0] != "a" {
		t.Fatalf("decoded %+v, %v", r, err)
	}
	for _, bad := range []string{`{"v":2,"user":"@a:b"}`, `{"v":1}`, `[]`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
	if row, _ := json.Marshal(Row{User: alice}); string(row) != `["@alice:example.org"]` {
		t.Errorf("row %s", row)
	}
}
