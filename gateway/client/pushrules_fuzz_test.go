package client

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	mautrix "maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
)

type fuzzRoom struct{}

func (fuzzRoom) GetOwnDisplayname() string { return "Alice" }
func (fuzzRoom) GetMemberCount() int       { return 3 }

// FuzzPushRuleBody checks that any body of PUT /pushrules/global/{kind}/{ruleId}, its
// /enabled and its /actions either gets a Matrix client error or yields a change that
// travels on the bus, applies on the writer, and gives a ruleset that mautrix-go's
// evaluator reads and runs without failing.
func FuzzPushRuleBody(f *testing.F) {
	for _, s := range []struct {
		kind, attr uint8
		body       string
	}{
		{0, 0, `{"conditions":[{"kind":"event_match","key":"content.body","pattern":"cake*"}],"actions":["notify",{"set_tweak":"highlight"}]}`},
		{0, 0, `{"conditions":[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":null},{"kind":"room_member_count","is":"<=3"}],"actions":[]}`},
		{4, 0, `{"conditions":[{"kind":"sender_notification_permission","key":"room"},{"kind":"contains_display_name"}],"actions":["coalesce"]}`},
		{1, 0, `{"pattern":"lunch?","actions":["notify",{"set_tweak":"sound","value":"default"}]}`},
		{2, 0, `{"actions":["dont_notify"]}`}, {3, 0, `{"actions":[],"conditions":5}`},
		{0, 0, `{"conditions":[{"kind":"x.unknown","value":{"a":1}}],"actions":[]}`},
		{0, 0, `{"conditions":[{"kind":"event_match","key":"type"}],"actions":[]}`}, {1, 0, `{"pattern":5,"actions":[]}`},
		{0, 0, `{"actions":["ring"]}`}, {0, 0, `[]`}, {0, 0, `{"actions":[{"set_tweak":"sound"}]}`},
		{0, 1, `{"enabled":false}`}, {0, 1, `true`}, {0, 1, `{"enabled":"yes"}`}, {0, 1, `null`},
		{0, 2, `{"actions":["notify",{"set_tweak":"highlight","value":false}]}`}, {0, 2, `["notify"]`}, {0, 2, `{"actions":{}}`},
		{0, 2, `{"actions":[{"set_tweak":"sound","vAlue":""}]}`}, {4, 0, `{"conditions":[{"kind":"x","KIND":"event_match"}],"actions":[]}`},
	} {
		f.Add(s.kind, s.attr, []byte(s.body))
	}
	attrs := []string{"", pushrules.OpEnabled, pushrules.OpActions}
	f.Fuzz(func(t *testing.T, kindIdx, attrIdx uint8, body []byte) {
		kind := pushrules.Kinds[int(kindIdx)%len(pushrules.Kinds)]
		attr := attrs[int(attrIdx)%len(attrs)]
		r := httptest.NewRequest(http.MethodPut, "/_matrix/client/v3/pushrules/global/"+kind+"/rule", strings.NewReader(string(body)))
		c := &pushrules.Change{Kind: kind, RuleID: "rule"}
		op, err := decodePushRuleChange(r, attr, c)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		// The change as the writer receives it.
		raw, err := schemas.Marshal(c)
		if err != nil {
			t.Fatalf("body %q: change not encodable: %v", body, err)
		}
		var onBus pushrules.Change
		if err := json.Unmarshal(raw, &onBus); err != nil {
			t.Fatal(err)
		}
		state := pushrules.State{}
		if op != pushrules.OpPut {
			// enabled and actions change an existing rule.
			existing := &pushrules.Change{Kind: kind, RuleID: "rule", Conditions: json.RawMessage(`[]`), Pattern: new(string), Actions: json.RawMessage(`[]`)}
			var refused *pushrules.Error
			if state, refused = state.Apply(pushrules.OpPut, existing); refused != nil {
				t.Fatal(refused)
			}
		}
		state, refused := state.Apply(op, &onBus)
		if refused != nil {
			t.Fatalf("body %q: accepted by the gateway, refused by the writer: %v", body, refused)
		}
		content, err := schemas.Marshal(pushRulesContent{Global: state.Format("@alice:example.org")})
		if err != nil {
			t.Fatal(err)
		}
		var parsed mautrix.EventContent
		if err := json.Unmarshal(content, &parsed); err != nil {
			t.Fatalf("body %q: mautrix-go cannot read the ruleset: %v", body, err)
		}
		ev := &event.Event{Type: event.Type{Type: "m.room.message"}, Sender: "@bob:example.org", RoomID: "!r:example.org",
			Content: event.Content{Raw: map[string]any{"msgtype": "m.text", "body": "cake for lunch, alice", "m.mentions": map[string]any{"room": true}}}}
		parsed.Ruleset.GetActions(fuzzRoom{}, ev).Should()
	})
}
