package pushrules

import (
	"encoding/json"
	"strings"

	"github.com/ganglionhq/ganglion/schemas"
)

// The server-default rules are those of the Matrix spec (client-server API, "Predefined
// Rules") as Synapse serves them with its default configuration: Synapse still serves
// the legacy mention rules the spec dropped in v1.17 (.m.rule.contains_display_name,
// .m.rule.roomnotif, .m.rule.contains_user_name; clients of older spec versions rely on
// them, and evaluators skip them for events with m.mentions), adds
// {"set_tweak":"highlight","value":false} to the actions of rules that notify without
// highlighting, and serves Element's .im.vector.jitsi underride rule. Its experimental
// rules (polls, extensible events, encrypted-event and reply rules, thread
// subscriptions) are off by default and not served here either.

// The condition shapes the default rules use, with their keys in the spec's order.
type (
	eventMatch struct {
		Kind    string `json:"kind"`
		Key     string `json:"key"`
		Pattern string `json:"pattern"`
	}
	propertyIs struct {
		Kind  string `json:"kind"`
		Key   string `json:"key"`
		Value any    `json:"value"`
	}
	memberCount struct {
		Kind string `json:"kind"`
		Is   string `json:"is"`
	}
	senderPermission struct {
		Kind string `json:"kind"`
		Key  string `json:"key"`
	}
	kindOnly struct {
		Kind string `json:"kind"`
	}
	tweak struct {
		SetTweak string `json:"set_tweak"`
		Value    any    `json:"value,omitempty"`
	}
)

func match(key, pattern string) eventMatch { return eventMatch{"event_match", key, pattern} }

var (
	highlight      = tweak{SetTweak: "highlight"}
	highlightFalse = tweak{SetTweak: "highlight", Value: false}
	sound          = tweak{SetTweak: "sound", Value: "default"}
	ring           = tweak{SetTweak: "sound", Value: "ring"}
	roomPermission = senderPermission{"sender_notification_permission", "room"}
	oneToOne       = memberCount{"room_member_count", "2"}
)

// list marshals the JSON array of vs; the values are fixed above, so it cannot fail.
func list(vs ...any) json.RawMessage {
	if len(vs) == 0 {
		return json.RawMessage("[]")
	}
	raw, err := schemas.Marshal(vs)
	if err != nil {
		panic(err)
	}
	return raw
}

func defaultRule(id string, enabled bool, conditions json.RawMessage, actions ...any) Rule {
	return Rule{RuleID: id, Default: true, Enabled: enabled, Conditions: conditions, Actions: list(actions...)}
}

// serverDefaults returns the server-default rules of userID: master, which comes before
// the user's own override rules, and the rules of each kind that come after the user's
// own rules of that kind.
func serverDefaults(userID string) (master Rule, after map[string][]Rule) {
	localpart := Localpart(userID)
	master = defaultRule(".m.rule.master", false, list())
	after = map[string][]Rule{
		KindOverride: {
			defaultRule(".m.rule.suppress_notices", true, list(match("content.msgtype", "m.notice"))),
			defaultRule(".m.rule.invite_for_me", true,
				list(match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)),
				"notify", highlightFalse, sound),
			defaultRule(".m.rule.member_event", true, list(match("type", "m.room.member"))),
			defaultRule(".m.rule.is_user_mention", true,
				list(propertyIs{"event_property_contains", `content.m\.mentions.user_ids`, userID}),
				"notify", highlight, sound),
			defaultRule(".m.rule.contains_display_name", true, list(kindOnly{"contains_display_name"}),
				"notify", highlight, sound),
			defaultRule(".m.rule.is_room_mention", true,
				list(propertyIs{"event_property_is", `content.m\.mentions.room`, true}, roomPermission),
				"notify", highlight),
			defaultRule(".m.rule.roomnotif", true, list(roomPermission, match("content.body", "@room")),
				"notify", highlight),
			defaultRule(".m.rule.tombstone", true, list(match("type", "m.room.tombstone"), match("state_key", "")),
				"notify", highlight),
			defaultRule(".m.rule.reaction", true, list(match("type", "m.reaction"))),
			defaultRule(".m.rule.room.server_acl", true, list(match("type", "m.room.server_acl"), match("state_key", ""))),
			// Edits do not notify, unless they mention the user, which the rules above
			// catch first.
			defaultRule(".m.rule.suppress_edits", true,
				list(propertyIs{"event_property_is", `content.m\.relates_to.rel_type`, "m.replace"})),
		},
		KindContent: {
			{RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: &localpart,
				Actions: list("notify", highlight, sound)},
		},
		KindUnderride: {
			defaultRule(".m.rule.call", true, list(match("type", "m.call.invite")), "notify", ring, highlightFalse),
			defaultRule(".m.rule.encrypted_room_one_to_one", true, list(match("type", "m.room.encrypted"), oneToOne),
				"notify", sound, highlightFalse),
			defaultRule(".m.rule.room_one_to_one", true, list(match("type", "m.room.message"), oneToOne),
				"notify", sound, highlightFalse),
			defaultRule(".m.rule.message", true, list(match("type", "m.room.message")), "notify", highlightFalse),
			defaultRule(".m.rule.encrypted", true, list(match("type", "m.room.encrypted")), "notify", highlightFalse),
			defaultRule(".im.vector.jitsi", true,
				list(match("type", "im.vector.modular.widgets"), match("content.type", "jitsi"), match("state_key", "*")),
				"notify", highlightFalse),
		},
	}
	return master, after
}

// defaultIDs are the rule IDs of the server-default rules, by kind: the rules a user may
// enable, disable or give other actions, but never replace or delete.
var defaultIDs = func() map[string]map[string]bool {
	master, after := serverDefaults("@user:example.org")
	ids := map[string]map[string]bool{KindOverride: {master.RuleID: true}}
	for kind, rules := range after {
		if ids[kind] == nil {
			ids[kind] = map[string]bool{}
		}
		for _, r := range rules {
			ids[kind][r.RuleID] = true
		}
	}
	return ids
}()

// IsDefault reports whether ruleID is a server-default rule of kind.
func IsDefault(kind, ruleID string) bool { return defaultIDs[kind][ruleID] }

// Localpart is the localpart of a user ID (@localpart:server).
func Localpart(userID string) string {
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return local
}

// Format is the ruleset of userID with state applied, in Synapse's order: .m.rule.master
// first, then each kind's own rules of the user before its server-default rules.
func (s State) Format(userID string) Ruleset {
	master, after := serverDefaults(userID)
	out := make(Ruleset, len(Kinds))
	for _, kind := range Kinds {
		rules := []Rule{}
		if kind == KindOverride {
			rules = append(rules, s.withChanges(kind, master))
		}
		rules = append(rules, s.Rules[kind]...)
		for _, r := range after[kind] {
			rules = append(rules, s.withChanges(kind, r))
		}
		out[kind] = rules
	}
	return out
}

// withChanges applies the user's changes to a server-default rule.
func (s State) withChanges(kind string, r Rule) Rule {
	c, ok := s.Defaults[kind][r.RuleID]
	if !ok {
		return r
	}
	if c.Enabled != nil {
		r.Enabled = *c.Enabled
	}
	if c.Actions != nil {
		r.Actions = c.Actions
	}
	return r
}
