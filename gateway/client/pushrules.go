package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
)

// pushRulesStore reads the push_rules projection.
type pushRulesStore interface {
	Get(ctx context.Context, user string) (pushrules.State, uint64, error)
}

// pushRulesContent is the body of GET /pushrules/ and the content of m.push_rules.
type pushRulesContent struct {
	Global pushrules.Ruleset `json:"global"`
}

// pushRulesType is the account data type under which clients find their push rules.
const pushRulesType = "m.push_rules"

// maxPushRuleBody bounds one push rule, its actions or its enabled flag.
const maxPushRuleBody = matrix.DefaultBodyLimit

// Synapse serves everything under pushrules/ from one servlet that reads the rest of the
// path itself and answers each malformed path with an error of its own, which clients
// see; so does this. The path without its slash is not served (Go's mux would otherwise
// redirect it to the slash, which Synapse does not).
func (s *Server) registerPushRules(r router) {
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		r.handle(m, "/pushrules", allVersions, func(w http.ResponseWriter, _ *http.Request) {
			matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeUnrecognized, "Unrecognized request"))
		})
	}
	r.handle(http.MethodGet, "/pushrules/", allVersions, s.authed(s.getPushRules))
	r.handle(http.MethodPut, "/pushrules/", allVersions, s.authed(s.putPushRule))
	r.handle(http.MethodDelete, "/pushrules/", allVersions, s.authed(s.deletePushRule))
}

var (
	errPushRulePath     = matrix.Errorf(http.StatusBadRequest, matrix.CodeUnrecognized, "Unrecognized request")
	errPushRulesNoSlash = matrix.Errorf(http.StatusBadRequest, matrix.CodeUnrecognized,
		"Unrecognised request: You probably wanted a trailing slash")
)

// pushRulePath returns the segments of the path after pushrules/, each unescaped on its
// own, so a rule ID holding an escaped slash stays one segment (and is refused for it).
func pushRulePath(r *http.Request) ([]string, error) {
	p := r.URL.EscapedPath()
	parts := strings.Split(p[strings.Index(p, "/pushrules/")+len("/pushrules/"):], "/")
	for i, part := range parts {
		u, err := url.PathUnescape(part)
		if err != nil {
			return nil, errPushRulePath
		}
		parts[i] = u
	}
	return parts, nil
}

// pushRuleTarget reads global/{kind}/{ruleId}[/{attr}] from the path of a PUT or DELETE.
func pushRuleTarget(r *http.Request) (kind, ruleID, attr string, err error) {
	parts, err := pushRulePath(r)
	if err != nil {
		return "", "", "", err
	}
	if parts[0] != "global" || len(parts) < 3 || parts[2] == "" || len(parts) > 4 {
		return "", "", "", errPushRulePath
	}
	if len(parts) == 4 {
		attr = parts[3]
	}
	return parts[1], parts[2], attr, nil
}

func ruleError(e *pushrules.Error) error { return matrix.Errorf(e.Status, e.Code, "%s", e.Message) }

func (s *Server) getPushRules(w http.ResponseWriter, r *http.Request, dev Device) {
	parts, err := pushRulePath(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	state, _, err := s.pushRules.Get(r.Context(), dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	body, err := selectPushRules(state.Format(dev.UserID), parts)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, body)
}

// selectPushRules picks what a GET path names: everything (pushrules/), the global
// ruleset (global/), one kind (global/{kind}/), one rule, or one attribute of a rule
// ({"enabled": ...}, {"actions": ...}, or any other field the rule has, as Synapse
// answers).
func selectPushRules(rules pushrules.Ruleset, parts []string) (any, error) {
	if parts[0] == "" {
		return pushRulesContent{Global: rules}, nil
	}
	if parts[0] != "global" {
		return nil, errPushRulePath
	}
	switch parts = parts[1:]; {
	case len(parts) == 0:
		return nil, errPushRulesNoSlash
	case parts[0] == "":
		return rules, nil
	}
	kind, ok := rules[parts[0]]
	switch {
	case !ok || len(parts) > 3:
		return nil, errPushRulePath
	case len(parts) == 1:
		return nil, errPushRulesNoSlash
	case parts[1] == "":
		return kind, nil
	}
	var rule *pushrules.Rule
	for i := range kind {
		if kind[i].RuleID == parts[1] {
			rule = &kind[i]
		}
	}
	if rule == nil {
		return nil, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "The push rule was not found.")
	}
	if len(parts) == 2 {
		return rule, nil
	}
	raw, err := matrix.Marshal(rule)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	value, ok := fields[parts[2]]
	if !ok {
		return nil, errPushRulePath
	}
	return map[string]json.RawMessage{parts[2]: value}, nil
}

// getPushRulesAccountData serves GET /user/{u}/account_data/m.push_rules: the push
// rules, kept in their own stream, as Synapse serves them there too (and an empty
// object for a room, which has none).
func (s *Server) getPushRulesAccountData(w http.ResponseWriter, r *http.Request, dev Device, room string) {
	if room != "" {
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	state, _, err := s.pushRules.Get(r.Context(), dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, pushRulesContent{Global: state.Format(dev.UserID)})
}

func (s *Server) putPushRule(w http.ResponseWriter, r *http.Request, dev Device) {
	kind, ruleID, attr, err := pushRuleTarget(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	c := &pushrules.Change{Kind: kind, RuleID: ruleID}
	op, err := decodePushRuleChange(r, attr, c)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.changePushRules(w, r, dev, op, c)
}

func (s *Server) deletePushRule(w http.ResponseWriter, r *http.Request, dev Device) {
	kind, ruleID, attr, err := pushRuleTarget(r)
	if err == nil && attr != "" {
		err = errPushRulePath
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.changePushRules(w, r, dev, pushrules.OpDelete, &pushrules.Change{Kind: kind, RuleID: ruleID})
}

// changePushRules forwards a change to the push_rules writer, which applies it to the
// user's latest rules.
func (s *Server) changePushRules(w http.ResponseWriter, r *http.Request, dev Device, op string, c *pushrules.Change) {
	_, err := s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamPushRules, op: op, key: dev.UserID, body: c})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// decodePushRuleChange reads the body of a PUT into c and returns the operation: a
// whole rule (no attr), its enabled flag or its actions. The change it returns has
// passed Change.Check, which the writer applies again.
func decodePushRuleChange(r *http.Request, attr string, c *pushrules.Change) (string, error) {
	op := pushrules.OpPut
	switch attr {
	case "":
		var body struct {
			Actions    json.RawMessage `json:"actions"`
			Conditions json.RawMessage `json:"conditions"`
			Pattern    any             `json:"pattern"`
		}
		if err := matrix.DecodeBody(r, maxPushRuleBody, &body); err != nil {
			return "", err
		}
		switch p := body.Pattern.(type) {
		case nil:
		case string:
			c.Pattern = &p
		default:
			return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "pattern must be a string")
		}
		c.Actions, c.Conditions = body.Actions, body.Conditions
		q := r.URL.Query()
		c.Before, c.After = q.Get("before"), q.Get("after")
	case pushrules.OpEnabled, pushrules.OpActions:
		op = attr
		raw, err := matrix.ReadBody(r, maxPushRuleBody)
		if err != nil {
			return "", err
		}
		var fields map[string]json.RawMessage
		isObject := json.Unmarshal(raw, &fields) == nil && fields != nil
		if op == pushrules.OpActions {
			if !isObject {
				return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Value must be a dict")
			}
			c.Actions = fields["actions"]
			break
		}
		// {"enabled": true} as the spec says, or a bare boolean, which Synapse still
		// takes from older clients.
		if isObject {
			raw = fields["enabled"]
		}
		var value any
		_ = json.Unmarshal(raw, &value)
		if enabled, ok := value.(bool); ok {
			c.Enabled = &enabled
		}
	default:
		return "", errPushRulePath
	}
	if e := c.Check(op); e != nil {
		return "", ruleError(e)
	}
	return op, nil
}
