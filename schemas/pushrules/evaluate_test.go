package pushrules

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	mautrix "maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/schemas"
)

// evaluable parses the ruleset userID is served, as clients and the pusher read it.
func evaluable(t testing.TB, s State, userID string) *mautrix.PushRuleset {
	t.Helper()
	raw, err := schemas.Marshal(pushRulesEvent{Global: s.Format(userID)})
	if err != nil {
		t.Fatal(err)
	}
	var content mautrix.EventContent
	if err := json.Unmarshal(raw, &content); err != nil {
		t.Fatalf("mautrix-go cannot read the ruleset: %v\n%s", err, raw)
	}
	return content.Ruleset
}

type pushRulesEvent struct {
	Global Ruleset `json:"global"`
}

// testRoom is what the evaluator asks of a room.
type testRoom struct {
	members     int
	displayName string
	levels      *event.PowerLevelsEventContent
}

func (r testRoom) GetOwnDisplayname() string                      { return r.displayName }
func (r testRoom) GetMemberCount() int                            { return r.members }
func (r testRoom) GetPowerLevels() *event.PowerLevelsEventContent { return r.levels }

func message(typ string, content map[string]any) *event.Event {
	return &event.Event{Type: event.Type{Type: typ}, Sender: "@bob:example.org", RoomID: "!r:example.org",
		Content: event.Content{Raw: content}}
}

func state(typ, key string, content map[string]any) *event.Event {
	ev := message(typ, content)
	ev.StateKey = &key
	return ev
}

// The served rules evaluate as the spec means them with mautrix-go's evaluator, which
// the pusher uses.
func TestEvaluation(t *testing.T) {
	group := testRoom{members: 5, displayName: "Alice Liddell", levels: &event.PowerLevelsEventContent{
		Users: map[id.UserID]int{"@bob:example.org": 50}, UsersDefault: 0}}
	lowly := group
	lowly.levels = &event.PowerLevelsEventContent{}
	oneToOne := testRoom{members: 2}
	text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
	mention := func(body string, users ...any) map[string]any {
		c := text(body)
		c["m.mentions"] = map[string]any{"user_ids": users}
		return c
	}
	roomMention := text("@room hello")
	roomMention["m.mentions"] = map[string]any{"room": true}
	edit := text("* fixed")
	edit["m.relates_to"] = map[string]any{"rel_type": "m.replace", "event_id": "$x"}

	type want struct{ notify, highlight, sound bool }
	cases := []struct {
		name string
		room testRoom
		ev   *event.Event
		want want
	}{
		{"message in a group", group, message("m.room.message", text("hello")), want{notify: true}},
		{"message mentioning the user", group, message("m.room.message", mention("hi Alice", alice)), want{true, true, true}},
		{"message mentioning someone else", group, message("m.room.message", mention("hi alice", "@carol:example.org")), want{notify: true}},
		{"legacy mention by localpart", group, message("m.room.message", text("is alice there?")), want{true, true, true}},
		{"legacy mention by display name", group, message("m.room.message", text("hello Alice Liddell!")), want{true, true, true}},
		{"notice", group, message("m.room.message", map[string]any{"msgtype": "m.notice", "body": "alice"}), want{}},
		{"edit", group, message("m.room.message", edit), want{}},
		{"edit mentioning the user", group, message("m.room.message", func() map[string]any {
			c := mention("* hi", alice)
			c["m.relates_to"] = edit["m.relates_to"]
			return c
		}()), want{true, true, true}},
		{"room mention by a moderator", group, message("m.room.message", roomMention), want{notify: true, highlight: true}},
		{"room mention by anyone", lowly, message("m.room.message", roomMention), want{notify: true}},
		{"message one to one", oneToOne, message("m.room.message", text("hi")), want{notify: true, sound: true}},
		{"encrypted one to one", oneToOne, message("m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}), want{notify: true, sound: true}},
		{"encrypted in a group", group, message("m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}), want{notify: true}},
		{"invite for the user", group, state("m.room.member", alice, map[string]any{"membership": "invite"}), want{notify: true, sound: true}},
		{"someone else's join", group, state("m.room.member", "@carol:example.org", map[string]any{"membership": "join"}), want{}},
		{"reaction", group, message("m.reaction", map[string]any{}), want{}},
		{"tombstone", group, state("m.room.tombstone", "", map[string]any{"replacement_room": "!n:example.org"}), want{notify: true, highlight: true}},
		{"server acl", group, state("m.room.server_acl", "", map[string]any{}), want{}},
		{"call", group, message("m.call.invite", map[string]any{}), want{notify: true, sound: true}},
		{"other event", group, message("org.example.custom", map[string]any{}), want{}},
	}
	rules := evaluable(t, State{}, alice)
	for _, c := range cases {
		got := rules.GetActions(c.room, c.ev).Should()
		if got.Notify != c.want.notify || got.Highlight != c.want.highlight || got.PlaySound != c.want.sound {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}

	// The user's own rules and changes take part in the right order.
	off, on := false, true
	keyword := "lunch"
	s := apply(t, State{},
		OpPut, Change{Kind: KindContent, RuleID: "lunch", Pattern: &keyword, Actions: json.RawMessage(`["notify",{"set_tweak":"highlight"}]`)},
		OpPut, Change{Kind: KindRoom, RuleID: "!quiet:example.org", Actions: json.RawMessage(`[]`)},
		OpPut, Change{Kind: KindSender, RuleID: "@bob:example.org", Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"bob"}]`)},
		OpEnabled, Change{Kind: KindOverride, RuleID: ".m.rule.suppress_notices", Enabled: &off},
	)
	rules = evaluable(t, s, alice)
	quiet := message("m.room.message", text("hello"))
	quiet.RoomID = "!quiet:example.org"
	notice := message("m.room.message", map[string]any{"msgtype": "m.notice", "body": "x"})
	notice.Sender = "@carol:example.org"
	for _, c := range []struct {
		name string
		ev   *event.Event
		want want
	}{
		{"keyword", message("m.room.message", text("lunch time")), want{notify: true, highlight: true}},
		{"muted room", quiet, want{}},
		{"sender rule", message("m.room.message", text("hello")), want{notify: true, sound: true}},
		{"notice with suppress_notices off", notice, want{notify: true}},
	} {
		got := rules.GetActions(group, c.ev).Should()
		if got.Notify != c.want.notify || got.Highlight != c.want.highlight || got.PlaySound != c.want.sound {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	// Master on silences everything, mentions included.
	rules = evaluable(t, apply(t, s, OpEnabled, Change{Kind: KindOverride, RuleID: ".m.rule.master", Enabled: &on}), alice)
	if got := rules.GetActions(group, message("m.room.message", mention("hi", alice))).Should(); got.Notify || got.Highlight {
		t.Errorf("master on: %+v", got)
	}
}
