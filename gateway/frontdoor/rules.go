package frontdoor

import (
	"net/http"
	"regexp"
	"strings"
)

// Group names a set of upstreams that takes one kind of request, as the upstream blocks
// of Synapse's worker documentation do. Listeners join groups with their `routes` key
// (see deployments/config); a group nobody joined takes its Fallback's upstreams.
type Group string

// The groups of the seed's generic-worker table, its stream writers and its media
// repository.
const (
	// Client takes every request no other group claims, round robin.
	Client Group = "client"
	// Sync takes /sync with a since token and /events, by user.
	Sync Group = "sync"
	// InitialSync takes /sync without since and /initialSync, by user: the expensive
	// ones, which an operator may isolate.
	InitialSync Group = "initial_sync"
	// Pagination takes /messages, by room.
	Pagination Group = "pagination"
	// Login takes login and registration.
	Login Group = "login"
	// Federation takes the federation and key APIs, round robin.
	Federation Group = "federation"
	// FederationInbound takes inbound transactions (/send/), by origin server, so one
	// server's transactions stay in order on one process.
	FederationInbound Group = "federation_inbound"
	// Media takes the media repository's endpoints and its admin API.
	Media Group = "media"
	// The stream writers' endpoints go to the writer of their stream.
	Typing      Group = "typing"
	ToDevice    Group = "to_device"
	AccountData Group = "account_data"
	Receipts    Group = "receipts"
	Presence    Group = "presence"
	PushRules   Group = "push_rules"
)

// Groups lists every group, in the order the nginx configuration declares them.
var Groups = []Group{Client, Sync, InitialSync, Pagination, Login, Federation, FederationInbound, Media,
	Typing, ToDevice, AccountData, Receipts, Presence, PushRules}

// Fallback is the group whose upstreams take a group's requests when no listener joined
// it. Federation has none: without a federation listener those requests are refused.
var Fallback = map[Group]Group{
	Sync: Client, InitialSync: Sync, Pagination: Client, Login: Client, Media: Client,
	FederationInbound: Federation,
	Typing:            Client, ToDevice: Client, AccountData: Client, Receipts: Client, Presence: Client, PushRules: Client,
}

// KnownGroup reports whether name is a group.
func KnownGroup(name string) bool {
	for _, g := range Groups {
		if string(g) == name {
			return true
		}
	}
	return false
}

// Key says what keeps a group's requests on one upstream.
type Key int

const (
	// RoundRobin spreads requests evenly.
	RoundRobin Key = iota
	// ByUser hashes the user's localpart, read from the access token.
	ByUser
	// ByRoom hashes the room ID in the path.
	ByRoom
	// ByOrigin hashes the origin server of the X-Matrix authorization.
	ByOrigin
)

// Rule sends the paths Pattern matches to Group. Patterns are both Go and PCRE regular
// expressions, since the nginx configuration uses them as they are.
type Rule struct {
	Pattern *regexp.Regexp
	Group   Group
	Key     Key
}

// refusedPattern matches Synapse's internal replication API, which a front door never
// forwards.
var refusedPattern = regexp.MustCompile(`^/_synapse/replication/`)

// syncPattern is /sync, which goes to InitialSync instead of Sync without a since token.
var syncPattern = regexp.MustCompile(`^/_matrix/client/(r0|v3)/sync$`)

// Rules are the seed's routing table, first match wins; what none matches goes to
// Client, round robin.
var Rules = func() []Rule {
	type table struct {
		group    Group
		key      Key
		patterns []string
	}
	var out []Rule
	for _, t := range []table{
		{Sync, ByUser, []string{syncPattern.String(), `^/_matrix/client/(api/v1|r0|v3)/events$`}},
		{InitialSync, ByUser, []string{
			`^/_matrix/client/(api/v1|r0|v3)/initialSync$`,
			`^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$`,
		}},
		{FederationInbound, ByOrigin, []string{`^/_matrix/federation/v1/send/`}},
		{Media, RoundRobin, []string{
			`^/_matrix/media/`,
			`^/_matrix/client/v1/media/`,
			`^/_matrix/federation/v1/media/`,
			`^/_synapse/admin/v1/purge_media_cache$`,
			`^/_synapse/admin/v1/room/.*/media.*$`,
			`^/_synapse/admin/v1/user/.*/media.*$`,
			`^/_synapse/admin/v1/media/.*$`,
			`^/_synapse/admin/v1/quarantine_media/.*$`,
			`^/_synapse/admin/v1/users/.*/media$`,
		}},
		{Federation, RoundRobin, []string{`^/_matrix/federation/`, `^/_matrix/key/`}},
		{Typing, RoundRobin, []string{`^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/typing`}},
		{ToDevice, RoundRobin, []string{`^/_matrix/client/(r0|v3|unstable)/sendToDevice/`}},
		{AccountData, RoundRobin, []string{
			`^/_matrix/client/(r0|v3|unstable)/.*/tags`,
			`^/_matrix/client/(r0|v3|unstable)/.*/account_data`,
		}},
		{Receipts, RoundRobin, []string{
			`^/_matrix/client/(r0|v3|unstable)/rooms/.*/receipt`,
			`^/_matrix/client/(r0|v3|unstable)/rooms/.*/read_markers`,
		}},
		{Presence, RoundRobin, []string{`^/_matrix/client/(api/v1|r0|v3|unstable)/presence/`}},
		{PushRules, RoundRobin, []string{`^/_matrix/client/(api/v1|r0|v3|unstable)/pushrules/`}},
		{Login, RoundRobin, []string{
			`^/_matrix/client/(api/v1|r0|v3|unstable)/login$`,
			`^/_matrix/client/(r0|v3|unstable)/register$`,
			`^/_matrix/client/(r0|v3|unstable)/register/available$`,
			`^/_matrix/client/v1/register/m.login.registration_token/validity$`,
			`^/_matrix/client/(r0|v3|unstable)/password_policy$`,
		}},
		{Pagination, ByRoom, []string{roomMessagesPattern.String()}},
	} {
		for _, p := range t.patterns {
			out = append(out, Rule{Pattern: regexp.MustCompile(p), Group: t.group, Key: t.key})
		}
	}
	return out
}()

// roomMessagesPattern is /messages, whose second group is the room ID.
var roomMessagesPattern = regexp.MustCompile(`^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/([^/]+)/messages$`)

// Route is where one request goes.
type Route struct {
	Group Group
	// Key is what the upstream is chosen by ("" for round robin).
	Key string
	// Refused is a path no upstream is asked for (internal endpoints).
	Refused bool
	// LongPoll is a request that may wait for MaxLongPoll before it answers.
	LongPoll bool
}

// Classify returns the route of r.
func Classify(r *http.Request) Route {
	path := r.URL.Path
	if refusedPattern.MatchString(path) {
		return Route{Refused: true}
	}
	for _, rule := range Rules {
		if !rule.Pattern.MatchString(path) {
			continue
		}
		rt := Route{Group: rule.Group, LongPoll: rule.Group == Sync || rule.Group == InitialSync}
		if syncPattern.MatchString(path) && r.URL.Query().Get("since") == "" {
			rt.Group = InitialSync
		}
		switch rule.Key {
		case ByUser:
			rt.Key = UserKey(r)
		case ByRoom:
			rt.Key = roomMessagesPattern.FindStringSubmatch(path)[2]
		case ByOrigin:
			rt.Key = Origin(r.Header.Get("Authorization"))
		}
		return rt
	}
	return Route{Group: Client}
}

// UserKey identifies the user of a request from their access token without a lookup:
// Ganglion's tokens (like Synapse's) are "syt_<base64 localpart>_<random>", so the
// localpart keeps every device of a user on one upstream. Other tokens key by
// themselves; no token keys by nothing.
func UserKey(r *http.Request) string {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		token = r.URL.Query().Get("access_token")
	}
	if rest, ok := strings.CutPrefix(token, "syt_"); ok {
		if local, _, ok := strings.Cut(rest, "_"); ok {
			return local
		}
	}
	return token
}

// Origin returns the origin parameter of an X-Matrix Authorization header, or "" when
// there is none. Values may be quoted; the scheme name is case-insensitive.
func Origin(authorization string) string {
	scheme, params, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return ""
	}
	for param := range strings.SplitSeq(params, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(param), "=")
		if ok && strings.EqualFold(name, "origin") {
			return strings.Trim(value, `"`)
		}
	}
	return ""
}
