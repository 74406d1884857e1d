package pusher

import (
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"reflect"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/schemas/pushrules"
)

// libraryRoom is the room as mautrix-go's own evaluator is asked about it.
type libraryRoom struct {
	members     int
	displayName string
	levels      *event.PowerLevelsEventContent
}

func (r libraryRoom) GetOwnDisplayname() string                      { return r.displayName }
func (r libraryRoom) GetMemberCount() int                            { return r.members }
func (r libraryRoom) GetPowerLevels() *event.PowerLevelsEventContent { return r.levels }

// member is a local member under test: their rules, parsed for us and for the library.
type member struct {
	id          string
	displayName string
	rules       *Rules
}

func testMembers(t testing.TB, n int, custom bool) []member {
	t.Helper()
	keyword, off, on := "lunch", false, true
	changes := []struct {
		op string
		c  pushrules.Change
	}{
		{pushrules.OpPut, pushrules.Change{Kind: pushrules.KindContent, RuleID: "lunch", Pattern: &keyword, Actions: json.RawMessage(`["notify",{"set_tweak":"highlight"}]`)}},
		{pushrules.OpPut, pushrules.Change{Kind: pushrules.KindRoom, RuleID: "!quiet:test", Actions: json.RawMessage(`[]`)}},
		{pushrules.OpPut, pushrules.Change{Kind: pushrules.KindSender, RuleID: "@u1:test", Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"u1"}]`)}},
		{pushrules.OpEnabled, pushrules.Change{Kind: pushrules.KindOverride, RuleID: ".m.rule.suppress_notices", Enabled: &off}},
		{pushrules.OpPut, pushrules.Change{Kind: pushrules.KindOverride, RuleID: "big", Conditions: json.RawMessage(`[{"kind":"room_member_count","is":">4"},{"kind":"event_match","key":"content.body","pattern":"*deploy*"}]`), Actions: json.RawMessage(`["notify"]`)}},
		{pushrules.OpEnabled, pushrules.Change{Kind: pushrules.KindOverride, RuleID: ".m.rule.master", Enabled: &on}},
	}
	members := make([]member, n)
	for i := range members {
		m := member{id: fmt.Sprintf("@u%d:test", i), displayName: []string{"", "Alice", "Bob Smith", "u3"}[i%4]}
		state := pushrules.State{}
		if custom {
			// Each member takes the changes up to their number: users with the defaults,
			// with a keyword, a muted room, a sender rule, notices on, an override with
			// two conditions, everything off.
			for _, ch := range changes[:i%(len(changes)+1)] {
				var refused *pushrules.Error
				if state, refused = state.Apply(ch.op, &ch.c); refused != nil {
					t.Fatal(refused)
				}
			}
		}
		var err error
		if m.rules, err = Compile(state, m.id); err != nil {
			t.Fatal(err)
		}
		members[i] = m
	}
	return members
}

// randomEvent is an event of a kind the default rules tell apart, mentioning members
// by localpart, display name or m.mentions at random.
func randomEvent(rng *mathrand.Rand, n int) *event.Event {
	someone := func() string { return fmt.Sprintf("@u%d:test", rng.IntN(n)) }
	// Non-ASCII words take the content rules past their quick test, to the regexp.
	words := []string{"hello", "u1", "Alice", "lunch", "deploy now", "@room", "Bob Smith", "bob", "u3!", "LUNCH", "ÅLICE", "lunchſ", "u2é"}
	body := words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))]
	content := map[string]any{"msgtype": []string{"m.text", "m.notice", "m.emote"}[rng.IntN(3)], "body": body}
	if rng.IntN(3) == 0 {
		mentions := map[string]any{"user_ids": []any{someone()}}
		if rng.IntN(4) == 0 {
			mentions["room"] = true
		}
		content["m.mentions"] = mentions
	}
	if rng.IntN(6) == 0 {
		content["m.relates_to"] = map[string]any{"rel_type": "m.replace", "event_id": "$x"}
	}
	ev := &event.Event{Type: event.EventMessage, Sender: id.UserID(someone()), RoomID: "!r:test", Content: event.Content{Raw: content}}
	switch rng.IntN(8) {
	case 0:
		ev.Type = event.EventEncrypted
		ev.Content.Raw = map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}
	case 1:
		key := someone()
		ev.Type, ev.StateKey = event.StateMember, &key
		ev.Content.Raw = map[string]any{"membership": []string{"invite", "join", "leave"}[rng.IntN(3)]}
	case 2:
		ev.Type = event.EventReaction
	case 3:
		ev.RoomID = "!quiet:test"
	}
	return ev
}

// TestEvaluationAgreesWithTheLibrary: for random events in rooms of random sizes and
// power levels, one Evaluation shared by every member gives each member the actions
// mautrix-go's own PushRuleset.GetActions gives them.
func TestEvaluationAgreesWithTheLibrary(t *testing.T) {
	const n = 40
	members := testMembers(t, n, true)
	rng := mathrand.New(mathrand.NewPCG(3, 4))
	for range 3000 {
		ev := randomEvent(rng, n)
		size := []int{2, 3, 5, 40}[rng.IntN(4)]
		levels := &event.PowerLevelsEventContent{Users: map[id.UserID]int{ev.Sender: []int{0, 50, 100}[rng.IntN(3)]}}
		if rng.IntN(3) == 0 {
			levels = nil
		}
		e := NewEvaluation(ev, size, levels)
		for _, m := range members {
			got := e.Actions(m.rules, m.displayName)
			libLevels := levels
			if libLevels == nil {
				libLevels = &event.PowerLevelsEventContent{}
			}
			want := m.rules.ruleset.GetActions(libraryRoom{members: size, displayName: m.displayName, levels: libLevels}, ev)
			if len(got) == 0 && len(want) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s (%q) for %s %v in a room of %d: got %v, the library %v", m.id, m.displayName, ev.Type.Type, ev.Content.Raw, size, got, want)
			}
		}
	}
}

// largeRoom is the benchmarks' room: 1,000 local members with the server-default rules
// (a quarter with a display name the message does not contain), a message in it, and
// its power levels.
func largeRoom(b *testing.B) ([]member, *event.Event, *event.PowerLevelsEventContent) {
	ev := &event.Event{Type: event.EventMessage, Sender: "@u1:test", RoomID: "!r:test",
		Content: event.Content{Raw: map[string]any{"msgtype": "m.text", "body": "hello everyone, see you at the meeting"}}}
	return testMembers(b, 1000, false), ev, &event.PowerLevelsEventContent{Users: map[id.UserID]int{"@u1:test": 100}}
}

// BenchmarkEvaluateRoomOf1000 evaluates one message for 1,000 local members with the
// server-default rules (a quarter with a display name the message does not contain),
// and reports member evaluations per second on one goroutine.
func BenchmarkEvaluateRoomOf1000(b *testing.B) {
	members, ev, levels := largeRoom(b)
	for b.Loop() {
		e := NewEvaluation(ev, len(members), levels)
		for _, m := range members {
			if !e.Actions(m.rules, m.displayName).Should().Notify {
				b.Fatal("a message in a large room notifies with the defaults")
			}
		}
	}
	b.ReportMetric(float64(b.N*len(members))/b.Elapsed().Seconds(), "member-evals/s")
}

// BenchmarkLibraryRoomOf1000 is BenchmarkEvaluateRoomOf1000 with mautrix-go's own
// PushRuleset.GetActions per member, for comparison.
func BenchmarkLibraryRoomOf1000(b *testing.B) {
	members, ev, levels := largeRoom(b)
	for b.Loop() {
		for _, m := range members {
			room := libraryRoom{members: len(members), displayName: m.displayName, levels: levels}
			if !m.rules.ruleset.GetActions(room, ev).Should().Notify {
				b.Fatal("a message in a large room notifies with the defaults")
			}
		}
	}
	b.ReportMetric(float64(b.N*len(members))/b.Elapsed().Seconds(), "member-evals/s")
}
