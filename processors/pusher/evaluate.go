// Package pusher is the pusher role: it evaluates the push rules of a room's local
// members for each event of the EVENTS log and delivers notifications. This file is
// the evaluation: mautrix-go's push rules and conditions, each user's rules compiled
// once, and each condition's outcome for an event computed once and shared by every
// member whose rules hold the same condition.
package pusher

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"go.mau.fi/util/glob"
	"maunium.net/go/mautrix/event"
	mautrix "maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
)

// Rules are one user's push rules ready to evaluate: parsed once into mautrix-go's
// types, the enabled override, content and underride rules in the spec's order (room
// and sender rules are looked up by ID between content and underride).
type Rules struct {
	ruleset                      *mautrix.PushRuleset
	override, content, underride []compiledRule
}

type compiledRule struct {
	rule *mautrix.PushRule
	// legacy marks the rules an event with m.mentions disables (spec, and mautrix-go).
	legacy bool
	conds  []compiledCond
	// pattern is a content rule's pattern as mautrix-go matches it against the body
	// (case-insensitive, whole words), compiled once here: compiled at every match, the
	// content rule with the user's localpart was most of the evaluation's cost. Nil when
	// it does not compile (the rule then never matches, as in the library). literal is
	// the pattern in lower case when it is plain ASCII without glob characters, for a
	// quick test before the regexp.
	pattern *regexp.Regexp
	literal string
}

type compiledCond struct {
	cond *mautrix.PushCondition
	// key identifies the condition's outcome for an event, shared between members;
	// empty when the outcome is the member's own (their display name, their user ID).
	key string
}

// legacyMentionRules are the rules the spec (and mautrix-go) disable for an event with
// m.mentions.
var legacyMentionRules = map[string]bool{".m.rule.contains_display_name": true, ".m.rule.contains_user_name": true, ".m.rule.roomnotif": true}

// Compile parses the push rules userID is served (the state stored for them, with the
// server's defaults) for evaluation.
func Compile(state pushrules.State, userID string) (*Rules, error) {
	raw, err := schemas.Marshal(struct {
		Global pushrules.Ruleset `json:"global"`
	}{state.Format(userID)})
	if err != nil {
		return nil, err
	}
	var content mautrix.EventContent
	if err := json.Unmarshal(raw, &content); err != nil {
		return nil, fmt.Errorf("pusher: push rules of %s: %w", userID, err)
	}
	if content.Ruleset == nil {
		return nil, fmt.Errorf("pusher: push rules of %s: no global ruleset", userID)
	}
	rs := content.Ruleset
	r := &Rules{ruleset: rs}
	own := []string{userID, pushrules.Localpart(userID)}
	for _, c := range []struct {
		rules mautrix.PushRuleArray
		dst   *[]compiledRule
	}{{rs.Override, &r.override}, {rs.Content, &r.content}, {rs.Underride, &r.underride}} {
		for _, rule := range c.rules {
			if !rule.Enabled {
				continue
			}
			cr := compiledRule{rule: rule, legacy: legacyMentionRules[rule.RuleID]}
			if rule.Type == mautrix.ContentRule {
				cr.pattern, cr.literal = contentPattern(rule.Pattern)
			}
			for _, cond := range rule.Conditions {
				k, err := condKey(cond, own)
				if err != nil {
					return nil, err
				}
				cr.conds = append(cr.conds, compiledCond{cond: cond, key: k})
			}
			*c.dst = append(*c.dst, cr)
		}
	}
	return r, nil
}

// condKey is what decides a condition's outcome for an event, or "" when that is the
// member's own: a display name condition, or one naming the user (who gets the only
// such key, so sharing it would only fill the memo).
func condKey(c *mautrix.PushCondition, own []string) (string, error) {
	if c.Kind == mautrix.KindContainsDisplayName {
		return "", nil
	}
	value, err := json.Marshal(c.Value)
	if err != nil {
		return "", err
	}
	for _, o := range own {
		if c.Pattern == o || string(value) == `"`+o+`"` {
			return "", nil
		}
	}
	return string(c.Kind) + "\x00" + c.Key + "\x00" + c.Pattern + "\x00" + string(value) + "\x00" + c.MemberCountCondition + "\x00" + string(c.RelType), nil
}

// contentPattern compiles a content rule's glob pattern as mautrix-go matches it
// against the body: case-insensitive, on word boundaries.
func contentPattern(pattern string) (*regexp.Regexp, string) {
	var buf strings.Builder
	buf.WriteString(`(?i)\b`)
	if glob.ToRegexPattern(pattern, &buf) != nil {
		return nil, ""
	}
	buf.WriteString(`\b`)
	re, err := regexp.Compile(buf.String())
	if err != nil {
		return nil, ""
	}
	literal := ""
	if isASCII(pattern) && !strings.ContainsAny(pattern, "*?[]\\") {
		literal = strings.ToLower(pattern)
	}
	return re, literal
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Evaluation is one event evaluated for the members of its room: the room as it is at
// the event, and the outcomes of the conditions evaluated so far. Not for concurrent
// use.
type Evaluation struct {
	evt     *event.Event
	members int
	levels  *event.PowerLevelsEventContent
	matched map[string]bool
	// body and lowerBody are the event's body, and it in lower case when it is ASCII
	// (for content rules' quick test).
	body           string
	hasBody, ascii bool
	lowerBody      string
	mentions       bool
}

// NewEvaluation starts the evaluation of evt in a room of members joined members with
// those power levels (nil: a room without any, where every level is 0 and a
// notification needs 50, so no one may notify the room).
func NewEvaluation(evt *event.Event, members int, levels *event.PowerLevelsEventContent) *Evaluation {
	if levels == nil {
		levels = &event.PowerLevelsEventContent{}
	}
	e := &Evaluation{evt: evt, members: members, levels: levels, matched: map[string]bool{}}
	e.body, e.hasBody = evt.Content.Raw["body"].(string)
	if e.ascii = e.hasBody && isASCII(e.body); e.ascii {
		e.lowerBody = strings.ToLower(e.body)
	}
	_, e.mentions = evt.Content.Raw["m.mentions"]
	return e
}

// memberRoom is the room as mautrix-go's conditions ask about it, for one member.
type memberRoom struct {
	e           *Evaluation
	displayName string
}

func (m memberRoom) GetOwnDisplayname() string                      { return m.displayName }
func (m memberRoom) GetMemberCount() int                            { return m.e.members }
func (m memberRoom) GetPowerLevels() *event.PowerLevelsEventContent { return m.e.levels }

// Actions are the actions of the first rule of r that matches the event for a member
// with displayName, as mautrix-go's PushRuleset.GetActions gives them; nil when none
// matches.
func (e *Evaluation) Actions(r *Rules, displayName string) mautrix.PushActionArray {
	if rule := e.Rule(r, displayName); rule != nil {
		return rule.Actions
	}
	return nil
}

// Rule is the first of r's rules that matches the event for a member with displayName,
// or nil.
func (e *Evaluation) Rule(r *Rules, displayName string) *mautrix.PushRule {
	room := memberRoom{e: e, displayName: displayName}
	if rule := e.first(r.override, room); rule != nil {
		return rule
	}
	if rule := e.first(r.content, room); rule != nil {
		return rule
	}
	if rule := r.ruleset.Room.GetMatchingRule(room, e.evt); rule != nil {
		return rule
	}
	if rule := r.ruleset.Sender.GetMatchingRule(room, e.evt); rule != nil {
		return rule
	}
	return e.first(r.underride, room)
}

func (e *Evaluation) first(rules []compiledRule, room memberRoom) *mautrix.PushRule {
	for i := range rules {
		if e.match(&rules[i], room) {
			return rules[i].rule
		}
	}
	return nil
}

// match is mautrix-go's PushRule.Match for an enabled rule, with a content rule's
// pattern compiled beforehand and each shared condition's outcome remembered.
func (e *Evaluation) match(cr *compiledRule, room memberRoom) bool {
	if cr.legacy && e.mentions {
		return false
	}
	if cr.rule.Type == mautrix.ContentRule {
		if !e.hasBody || cr.pattern == nil {
			return false
		}
		if cr.literal != "" && e.ascii && !strings.Contains(e.lowerBody, cr.literal) {
			return false // a whole-word match needs the word
		}
		return cr.pattern.MatchString(e.body)
	}
	for _, c := range cr.conds {
		if !e.condition(c, room) {
			return false
		}
	}
	return true
}

func (e *Evaluation) condition(c compiledCond, room memberRoom) bool {
	if c.key == "" {
		return c.cond.Match(room, e.evt)
	}
	m, ok := e.matched[c.key]
	if !ok {
		m = c.cond.Match(room, e.evt)
		e.matched[c.key] = m
	}
	return m
}
