// Package pushrules is what Ganglion knows of push rules without any I/O: the
// push_rules stream's record (each user's own rules and their changes to the
// server-default ones), the server-default ruleset, the changes clients may ask for and
// how they apply, and the ruleset as clients see it (GET /pushrules, the m.push_rules
// account data of /sync). The ruleset it serves parses as mautrix-go's
// pushrules.PushRuleset, whose evaluator is the one the pusher uses.
package pushrules

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// The kinds of push rules, in the order they are evaluated.
const (
	KindOverride  = "override"
	KindContent   = "content"
	KindRoom      = "room"
	KindSender    = "sender"
	KindUnderride = "underride"
)

// Kinds lists every kind in evaluation order.
var Kinds = []string{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// IsKind reports whether kind is one of Kinds.
func IsKind(kind string) bool { return slices.Contains(Kinds, kind) }

// Rule is one push rule as clients see it, and a user's own rule as the stream keeps it.
// Conditions belong to override and underride rules, Pattern to content rules; room and
// sender rules have neither (their rule_id is the room or the sender). Conditions and
// actions are kept as the client sent them (compacted), so values the spec allows but
// a typed form would drop, such as an event_property_is value of null, survive.
type Rule struct {
	RuleID     string          `json:"rule_id"`
	Default    bool            `json:"default"`
	Enabled    bool            `json:"enabled"`
	Pattern    *string         `json:"pattern,omitempty"`
	Conditions json.RawMessage `json:"conditions,omitempty"`
	Actions    json.RawMessage `json:"actions"`
}

// Ruleset is the global ruleset as clients see it: every kind present, in priority
// order within each.
type Ruleset map[string][]Rule

// State is what one user changed of their push rules; a user who changed nothing has
// the zero State, which serves the server-default ruleset alone.
type State struct {
	// Rules are the user's own rules by kind, the most important first.
	Rules map[string][]Rule `json:"rules,omitempty"`
	// Defaults are the user's changes to server-default rules, by kind and rule ID.
	Defaults map[string]map[string]DefaultChange `json:"defaults,omitempty"`
}

// DefaultChange is what a user set on a server-default rule: its enabled flag, its
// actions, or both.
type DefaultChange struct {
	Enabled *bool           `json:"enabled,omitempty"`
	Actions json.RawMessage `json:"actions,omitempty"`
}

// clone copies s deeply enough that changing the copy's maps and lists leaves s as it
// was; the rules' JSON is never changed in place, so it is shared.
func (s State) clone() State {
	out := State{Rules: make(map[string][]Rule, len(s.Rules)), Defaults: make(map[string]map[string]DefaultChange, len(s.Defaults))}
	for k, rules := range s.Rules {
		out.Rules[k] = slices.Clone(rules)
	}
	for k, changes := range s.Defaults {
		m := make(map[string]DefaultChange, len(changes))
		for id, c := range changes {
			m[id] = c
		}
		out.Defaults[k] = m
	}
	return out
}

// Version is the schema version of Record written by this build.
const Version = 1

// Record is one message of the push_rules stream: the whole State of one user after a
// change, so the latest message of a user's subject is all there is to know.
type Record struct {
	V     int    `json:"v"`
	User  string `json:"user"`
	Rules State  `json:"rules"`
}

// Decode parses a push_rules record.
func Decode(data []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("push rules record: %w", err)
	}
	if r.V < 1 || r.V > Version {
		return nil, fmt.Errorf("push rules record: unsupported version %d", r.V)
	}
	if r.User == "" {
		return nil, errors.New("push rules record: missing user")
	}
	return &r, nil
}

// Row is Synapse's push_rules replication row: [user_id].
type Row struct{ User string }

func (r Row) MarshalJSON() ([]byte, error) { return json.Marshal([]string{r.User}) }
