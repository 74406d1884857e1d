package pushrules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	mautrix "maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/schemas"
)

// The operations of the push_rules stream; the body of each is a Change.
const (
	// OpPut adds a user rule or replaces one (PUT /pushrules/global/{kind}/{ruleId}).
	OpPut = "put"
	// OpDelete deletes a user rule.
	OpDelete = "delete"
	// OpEnabled sets whether a rule, the user's or a server-default one, is enabled.
	OpEnabled = "enabled"
	// OpActions sets the actions of a rule, the user's or a server-default one.
	OpActions = "actions"
)

// Change is one change a client asks for. Kind and RuleID name the rule; the other
// fields are those of the operation: Before or After (OpPut, at most one is used),
// Conditions, Pattern and Actions (OpPut), Enabled (OpEnabled), Actions (OpActions).
type Change struct {
	Kind       string          `json:"kind"`
	RuleID     string          `json:"rule_id"`
	Before     string          `json:"before,omitempty"`
	After      string          `json:"after,omitempty"`
	Conditions json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string         `json:"pattern,omitempty"`
	Actions    json.RawMessage `json:"actions,omitempty"`
	Enabled    *bool           `json:"enabled,omitempty"`
}

// Limits. Synapse has none but its request size; a user's whole state is one message
// of the stream, which must stay well within the bus's 1 MiB messages.
const (
	// MaxRuleID bounds a rule ID (room and user IDs, the longest natural rule IDs, are
	// at most 255 bytes).
	MaxRuleID = 255
	// MaxStateBytes bounds a user's whole State as JSON.
	MaxStateBytes = 512 << 10
)

// Error refuses a change with a Matrix error. The codes are Synapse's: the spec only
// names 404 M_NOT_FOUND for a rule that does not exist and shows 400 M_UNKNOWN for the
// others, which is what Synapse answers for any rule it cannot configure.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func invalid(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN", Message: fmt.Sprintf(format, args...)}
}

func notFound() *Error {
	return &Error{Status: http.StatusNotFound, Code: "M_NOT_FOUND", Message: "The push rule was not found."}
}

// Check validates c for op without looking at anyone's rules: what a gateway checks
// before forwarding a change, and the writer again before applying it.
func (c *Change) Check(op string) *Error {
	switch op {
	case OpPut, OpEnabled, OpActions:
	case OpDelete:
		// A rule that cannot exist is not found (Synapse does not check a deleted
		// rule's kind or ID).
		return nil
	default:
		return invalid("unknown push rules operation %q", op)
	}
	if !IsKind(c.Kind) {
		return invalid("Unknown template: %s", c.Kind)
	}
	if c.RuleID == "" || strings.ContainsAny(c.RuleID, `/\`) {
		return invalid("rule_id may not be empty or contain slashes")
	}
	if len(c.RuleID) > MaxRuleID || !schemas.StorableText(c.RuleID) {
		return invalid("rule_id must be at most %d bytes of text", MaxRuleID)
	}
	switch op {
	case OpEnabled:
		if c.Enabled == nil {
			return invalid("Value for 'enabled' must be boolean")
		}
		return nil
	case OpActions:
		return checkActions(c.Actions)
	}
	if strings.HasPrefix(c.RuleID, ".") {
		return invalid("cannot add new rule_ids that start with '.'")
	}
	if !schemas.StorableText(c.Before) || !schemas.StorableText(c.After) {
		return invalid("before and after must be text")
	}
	switch c.Kind {
	case KindOverride, KindUnderride:
		if err := checkConditions(c.Conditions); err != nil {
			return err
		}
	case KindContent:
		if c.Pattern == nil {
			return invalid("Content rule missing 'pattern'")
		}
		if !schemas.StorableText(*c.Pattern) {
			return invalid("pattern must be text")
		}
	}
	return checkActions(c.Actions)
}

// checkActions accepts what Synapse accepts: a list of "notify" and the legacy no-ops
// "dont_notify" and "coalesce", and set_tweak objects. A sound tweak must name its
// sound and a highlight tweak's value, when there is one, must be a boolean: the
// spec says so, and mautrix-go's evaluator would fail on anything else.
func checkActions(raw json.RawMessage) *Error {
	var actions []json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &actions) != nil || actions == nil {
		return invalid("No actions found")
	}
	for _, a := range actions {
		var name string
		if json.Unmarshal(a, &name) == nil {
			if name != "notify" && name != "dont_notify" && name != "coalesce" {
				return invalid("Unrecognised action %s", a)
			}
			continue
		}
		// Read by exact key, as every evaluator does (encoding/json's struct fields
		// would also take "Value").
		var fields map[string]any
		_ = json.Unmarshal(a, &fields)
		tweak, ok := fields["set_tweak"].(string)
		if !ok {
			return invalid("Unrecognised action %s", a)
		}
		switch value := fields["value"]; tweak {
		case "sound":
			if _, ok := value.(string); !ok {
				return invalid("the sound tweak needs a string value")
			}
		case "highlight":
			if _, ok := value.(bool); !ok && value != nil {
				return invalid("the highlight tweak's value must be a boolean")
			}
		}
	}
	return nil
}

// memberCountIs is the spec's form of room_member_count's "is".
var memberCountIs = regexp.MustCompile(`^(==|<|>|>=|<=)?[0-9]+$`)

// checkConditions accepts a list of conditions, each an object with a kind. Conditions
// of the spec's kinds must have their parameters; others are kept (the spec says
// unrecognised conditions never match, which disables the rule), as long as their
// fields have the types mautrix-go reads them as, so the ruleset always parses.
func checkConditions(raw json.RawMessage) *Error {
	if len(raw) == 0 {
		return invalid("Missing 'conditions'")
	}
	var conds []json.RawMessage
	if json.Unmarshal(raw, &conds) != nil || conds == nil {
		return invalid("conditions must be a list")
	}
	for _, c := range conds {
		var fields map[string]json.RawMessage
		if json.Unmarshal(c, &fields) != nil || fields == nil {
			return invalid("a condition must be an object")
		}
		var kind string
		if json.Unmarshal(fields["kind"], &kind) != nil {
			return invalid("Condition without 'kind'")
		}
		var typed mautrix.PushCondition
		if err := json.Unmarshal(c, &typed); err != nil {
			return invalid("condition %s: %v", kind, err)
		}
		if string(typed.Kind) != kind {
			// Another spelling of "kind" that mautrix-go would read instead.
			return invalid("condition %s: ambiguous kind", kind)
		}
		has := func(k string) bool { _, ok := fields[k]; return ok }
		switch kind {
		case string(mautrix.KindEventMatch):
			if !has("key") || !has("pattern") {
				return invalid("event_match needs a key and a pattern")
			}
		case string(mautrix.KindEventPropertyIs), string(mautrix.KindEventPropertyContains):
			if !has("key") || !scalar(fields["value"]) {
				return invalid("%s needs a key and a value that is a string, an integer, a boolean or null", kind)
			}
		case string(mautrix.KindRoomMemberCount):
			if !memberCountIs.MatchString(typed.MemberCountCondition) {
				return invalid("room_member_count needs 'is': a number, optionally after ==, <, >, >= or <=")
			}
		case string(mautrix.KindSenderNotificationPermission):
			if !has("key") {
				return invalid("sender_notification_permission needs a key")
			}
		}
	}
	return nil
}

// scalar reports whether raw is a JSON string, integer, boolean or null.
func scalar(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return false
	}
	switch v := v.(type) {
	case nil, string, bool:
		return true
	case json.Number:
		_, err := v.Int64()
		return err == nil
	}
	return false
}

// Apply returns the State that c makes of s, or why it cannot be made; s itself is
// left as it was.
func (s State) Apply(op string, c *Change) (State, *Error) {
	if err := c.Check(op); err != nil {
		return s, err
	}
	next := s.clone()
	var err *Error
	switch op {
	case OpPut:
		err = next.put(c)
	case OpDelete:
		err = next.remove(c.Kind, c.RuleID)
	case OpEnabled, OpActions:
		err = next.set(op, c)
	}
	if err != nil {
		return s, err
	}
	next.tidy()
	if raw, mErr := schemas.Marshal(next); mErr != nil || len(raw) > MaxStateBytes {
		return s, &Error{Status: http.StatusRequestEntityTooLarge, Code: "M_TOO_LARGE",
			Message: fmt.Sprintf("a user's push rules are limited to %d bytes", MaxStateBytes)}
	}
	return next, nil
}

// put adds or replaces a user rule. A new rule is enabled and, without before or after,
// the most important of its kind; a replaced one keeps its enabled flag (as in Synapse)
// and, without before or after, its place (the spec only moves new rules).
func (s *State) put(c *Change) *Error {
	rule := Rule{RuleID: c.RuleID, Enabled: true, Actions: c.Actions}
	switch c.Kind {
	case KindOverride, KindUnderride:
		rule.Conditions = c.Conditions
	case KindContent:
		rule.Pattern = c.Pattern
	}
	rules := s.Rules[c.Kind]
	at := index(rules, c.RuleID)
	if at >= 0 {
		rule.Enabled = rules[at].Enabled
	}
	// Before wins when both are given, as the spec says.
	rel, after := c.Before, false
	if rel == "" {
		rel, after = c.After, true
	}
	switch {
	case rel == "" && at >= 0, rel == c.RuleID && at >= 0:
		rules[at] = rule
	case rel == "":
		rules = slices.Insert(rules, 0, rule)
	default:
		// Only the user's own rules of the same kind can be named: server-default rules
		// keep their place (spec).
		if index(rules, rel) < 0 {
			return invalid("before/after rule not found: %s", rel)
		}
		if at >= 0 {
			rules = slices.Delete(rules, at, at+1)
		}
		to := index(rules, rel)
		if after {
			to++
		}
		rules = slices.Insert(rules, to, rule)
	}
	s.Rules[c.Kind] = rules
	return nil
}

// remove deletes a user rule; server-default rules cannot be deleted, so they are not
// found.
func (s *State) remove(kind, ruleID string) *Error {
	rules := s.Rules[kind]
	at := index(rules, ruleID)
	if at < 0 {
		return notFound()
	}
	s.Rules[kind] = slices.Delete(rules, at, at+1)
	return nil
}

// set changes the enabled flag or the actions of a user or server-default rule.
func (s *State) set(op string, c *Change) *Error {
	if at := index(s.Rules[c.Kind], c.RuleID); at >= 0 {
		r := &s.Rules[c.Kind][at]
		if op == OpEnabled {
			r.Enabled = *c.Enabled
		} else {
			r.Actions = c.Actions
		}
		return nil
	}
	if !IsDefault(c.Kind, c.RuleID) {
		return notFound()
	}
	if s.Defaults[c.Kind] == nil {
		s.Defaults[c.Kind] = map[string]DefaultChange{}
	}
	d := s.Defaults[c.Kind][c.RuleID]
	if op == OpEnabled {
		d.Enabled = c.Enabled
	} else {
		d.Actions = c.Actions
	}
	s.Defaults[c.Kind][c.RuleID] = d
	return nil
}

// tidy drops empty kinds, so a user back to the defaults has the zero State's JSON.
func (s *State) tidy() {
	for k, rules := range s.Rules {
		if len(rules) == 0 {
			delete(s.Rules, k)
		}
	}
	for k, changes := range s.Defaults {
		if len(changes) == 0 {
			delete(s.Defaults, k)
		}
	}
}

func index(rules []Rule, ruleID string) int {
	return slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID })
}
