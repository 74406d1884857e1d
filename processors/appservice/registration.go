// Package appservice is the application service side of Ganglion: the registrations of
// app_service_config_files with their namespaces, and the sender, a durable consumer of
// the EVENTS log per service that delivers what each service is interested in as
// transactions.
package appservice

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
	mautrix "maunium.net/go/mautrix/appservice"
)

// Service is one registered application service, with its namespaces compiled.
type Service struct {
	mautrix.Registration
	// File is the registration file it came from.
	File string
	// SenderID is the service's own user, @sender_localpart:server_name.
	SenderID              string
	users, aliases, rooms []namespace
}

type namespace struct {
	re        *regexp.Regexp
	exclusive bool
}

// ConfigError is a registration that cannot be used, named by file and key.
type ConfigError struct{ File, Key, Reason string }

func (e *ConfigError) Error() string {
	return "appservice: " + e.File + ": " + e.Key + ": " + e.Reason
}

// Services are the registered application services.
type Services struct {
	list    []*Service
	byToken map[string]*Service
	byID    map[string]*Service
}

// Load reads and checks the registration files: each needs an id, an as_token, an
// hs_token and a sender_localpart; ids and tokens are unique; every regex compiles; and
// no two services claim overlapping exclusive namespaces. Every problem found is
// returned, each a *ConfigError.
func Load(files []string, serverName string) (*Services, []error) {
	s := &Services{byToken: map[string]*Service{}, byID: map[string]*Service{}}
	var errs []error
	fail := func(file, key, format string, args ...any) {
		errs = append(errs, &ConfigError{File: file, Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	hsTokens := map[string]string{}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			fail(file, "app_service_config_files", "cannot read the registration: %v", err)
			continue
		}
		svc := &Service{File: file}
		if err := yaml.Unmarshal(raw, &svc.Registration); err != nil {
			fail(file, "(file)", "not a registration: %v", err)
			continue
		}
		bad := len(errs)
		for key, v := range map[string]string{"id": svc.ID, "as_token": svc.AppToken, "hs_token": svc.ServerToken, "sender_localpart": svc.SenderLocalpart} {
			if v == "" {
				fail(file, key, "required")
			}
		}
		if svc.URL != "" {
			if u, err := url.Parse(svc.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				fail(file, "url", "must be an http(s) URL or null, got %q", svc.URL)
			}
		}
		svc.SenderID = "@" + svc.SenderLocalpart + ":" + serverName
		var nerr []error
		svc.users, nerr = compile(file, "namespaces.users", svc.Namespaces.UserIDs)
		errs = append(errs, nerr...)
		svc.aliases, nerr = compile(file, "namespaces.aliases", svc.Namespaces.RoomAliases)
		errs = append(errs, nerr...)
		svc.rooms, nerr = compile(file, "namespaces.rooms", svc.Namespaces.RoomIDs)
		errs = append(errs, nerr...)
		if other, ok := s.byID[svc.ID]; ok && svc.ID != "" {
			fail(file, "id", "%q is also the id of the service in %s", svc.ID, other.File)
		}
		if other, ok := s.byToken[svc.AppToken]; ok && svc.AppToken != "" {
			fail(file, "as_token", "the same as_token as the service in %s", other.File)
		}
		if other, ok := hsTokens[svc.ServerToken]; ok && svc.ServerToken != "" {
			fail(file, "hs_token", "the same hs_token as the service in %s", other)
		}
		if len(errs) > bad {
			continue
		}
		for _, other := range s.list {
			for _, area := range []struct {
				key  string
				a, b []namespace
			}{{"namespaces.users", svc.users, other.users}, {"namespaces.aliases", svc.aliases, other.aliases}, {"namespaces.rooms", svc.rooms, other.rooms}} {
				if a, b, ok := overlap(area.a, area.b); ok {
					fail(file, area.key, "the exclusive regex %q overlaps the exclusive regex %q of the service in %s", a, b, other.File)
				}
			}
		}
		s.list = append(s.list, svc)
		s.byID[svc.ID] = svc
		s.byToken[svc.AppToken] = svc
		hsTokens[svc.ServerToken] = file
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// compile compiles a namespace list. Regexes match from the start of what they test, as
// Synapse's do (not necessarily to its end).
func compile(file, key string, list mautrix.NamespaceList) ([]namespace, []error) {
	var out []namespace
	var errs []error
	for i, ns := range list {
		re, err := regexp.Compile(`^(?:` + ns.Regex + `)`)
		if err != nil || ns.Regex == "" {
			reason := "empty regex"
			if err != nil {
				reason = "invalid regex: " + err.Error()
			}
			errs = append(errs, &ConfigError{File: file, Key: fmt.Sprintf("%s[%d].regex", key, i), Reason: reason})
			continue
		}
		out = append(out, namespace{re: re, exclusive: ns.Exclusive})
	}
	return out, errs
}

// overlap finds two exclusive namespaces, one of a and one of b, that claim a common
// string. It checks by example: one regex matching a string built from the other (the
// shortest way through each alternative), which finds the same and nested namespaces,
// the overlaps configurations have.
func overlap(a, b []namespace) (string, string, bool) {
	for _, x := range a {
		for _, y := range b {
			if !x.exclusive || !y.exclusive {
				continue
			}
			if slices.ContainsFunc(examples(x.re), y.re.MatchString) || slices.ContainsFunc(examples(y.re), x.re.MatchString) {
				return source(x.re), source(y.re), true
			}
		}
	}
	return "", "", false
}

// source is the regex as configured, without what compile added.
func source(re *regexp.Regexp) string {
	return strings.TrimSuffix(strings.TrimPrefix(re.String(), `^(?:`), `)`)
}

// maxExamples bounds the strings built from one regex.
const maxExamples = 64

// examples builds strings the regex matches: the shortest through each alternative.
func examples(re *regexp.Regexp) []string {
	parsed, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return nil
	}
	return build(parsed.Simplify())
}

func build(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral:
		return []string{string(re.Rune)}
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return nil
		}
		return []string{string(re.Rune[0])}
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return []string{"a"}
	case syntax.OpStar, syntax.OpQuest:
		return []string{""}
	case syntax.OpPlus, syntax.OpCapture:
		return build(re.Sub[0])
	case syntax.OpRepeat:
		out := []string{""}
		for range re.Min {
			out = product(out, build(re.Sub[0]))
		}
		return out
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			out = product(out, build(sub))
		}
		return out
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			out = append(out, build(sub)...)
		}
		return out[:min(len(out), maxExamples)]
	}
	return []string{""} // anchors and empty matches
}

func product(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if len(out) == maxExamples {
				return out
			}
			out = append(out, x+y)
		}
	}
	return out
}

// All lists the services, in the order of their files.
func (s *Services) All() []*Service {
	if s == nil {
		return nil
	}
	return s.list
}

// ByToken returns the service whose as_token tok is.
func (s *Services) ByToken(tok string) (*Service, bool) {
	if s == nil {
		return nil, false
	}
	svc, ok := s.byToken[tok]
	return svc, ok
}

// ByID returns the service with the id.
func (s *Services) ByID(id string) (*Service, bool) {
	if s == nil {
		return nil, false
	}
	svc, ok := s.byID[id]
	return svc, ok
}

// ExclusiveUser returns the service holding userID in an exclusive namespace.
func (s *Services) ExclusiveUser(userID string) (*Service, bool) {
	return s.exclusive(userID, func(svc *Service) []namespace { return svc.users })
}

// ExclusiveAlias returns the service holding alias in an exclusive namespace.
func (s *Services) ExclusiveAlias(alias string) (*Service, bool) {
	return s.exclusive(alias, func(svc *Service) []namespace { return svc.aliases })
}

func (s *Services) exclusive(v string, area func(*Service) []namespace) (*Service, bool) {
	for _, svc := range s.All() {
		if slices.ContainsFunc(area(svc), func(ns namespace) bool { return ns.exclusive && ns.re.MatchString(v) }) {
			return svc, true
		}
	}
	return nil, false
}

func matches(list []namespace, v string) bool {
	return slices.ContainsFunc(list, func(ns namespace) bool { return ns.re.MatchString(v) })
}

// OwnsUser reports whether the service may act as userID: its sender, or a user of its
// users namespace.
func (svc *Service) OwnsUser(userID string) bool {
	return userID == svc.SenderID || matches(svc.users, userID)
}

// OwnsAlias reports whether alias is in the service's aliases namespace.
func (svc *Service) OwnsAlias(alias string) bool { return matches(svc.aliases, alias) }

// hasAliases reports whether the service has an aliases namespace.
func (svc *Service) hasAliases() bool { return len(svc.aliases) > 0 }

// OwnsRoom reports whether roomID is in the service's rooms namespace.
func (svc *Service) OwnsRoom(roomID string) bool { return matches(svc.rooms, roomID) }

// Ephemeral reports whether the service asked for ephemeral events (receive_ephemeral,
// or MSC2409's earlier name).
func (svc *Service) Ephemeral() bool { return svc.EphemeralEvents || svc.SoruEphemeralEvents }

// ErrNoURL is the error of a request to a service registered without a url.
var ErrNoURL = errors.New("appservice: the service has no url")
