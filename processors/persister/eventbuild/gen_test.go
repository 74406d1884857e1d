package eventbuild

import (
	"encoding/base64"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// gen makes random events of the kinds the server creates, their content written as
// a client might write it: keys in any order, whitespace, optional escapes.
type gen struct {
	r       *rand.Rand
	version string
	server  string
}

// Text pieces that exercise the canonical form: escapes, HTML characters, U+2028/9,
// non-BMP, right-to-left, combining marks, controls, DEL, the largest code point.
var textPieces = []string{
	"hello", "world", " ", "a", "Z", "0", "42", "!", "?", ".", ",", ":", ";", "#", "@",
	"<", ">", "&", "'", `"`, `\`, "/", "\n", "\t", "\r", "\b", "\f", "\x00", "\x01", "\x1f", "\x7f",
	"é", "ß", "ñ", "Ω", "ж", "中文", "日本語", "한국어",
	"😀", "👩‍💻", "🏳️‍🌈", "𝄞", "\U0010FFFF", "\U00020000",
	"שלום", "مرحبا", "\u200f", "\u202e",
	"e\u0301", "a\u0308\u0323", "\u0301",
	"\u2028", "\u2029", "\ufeff", "\ufffd", "\u00a0", "\u0085",
}

func (g *gen) text(max int) string {
	var b strings.Builder
	for n := g.r.IntN(max + 1); n > 0; n-- {
		b.WriteString(textPieces[g.r.IntN(len(textPieces))])
	}
	return b.String()
}

// keyText is text a key may hold: nothing that needs escaping.
func (g *gen) keyText() string {
	for {
		s := g.text(3)
		if s != "" && !strings.ContainsAny(s, "\"\\\x00\x01\x1f\n\t\r\b\f") {
			return s
		}
	}
}

// ws writes optional whitespace.
func (g *gen) ws(b []byte) []byte {
	if g.r.IntN(4) != 0 {
		return b
	}
	for n := g.r.IntN(3) + 1; n > 0; n-- {
		b = append(b, " \t\n\r"[g.r.IntN(4)])
	}
	return b
}

// str writes s as a JSON string, choosing among the ways JSON allows for each
// character.
func (g *gen) str(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		hexCase := "0123456789abcdef"
		if g.r.IntN(2) == 0 {
			hexCase = "0123456789ABCDEF"
		}
		u := func(b []byte, c rune) []byte {
			return append(b, '\\', 'u', hexCase[c>>12&0xF], hexCase[c>>8&0xF], hexCase[c>>4&0xF], hexCase[c&0xF])
		}
		switch {
		case r == '"' || r == '\\' || r < ' ':
			short := map[rune]byte{'"': '"', '\\': '\\', '\b': 'b', '\f': 'f', '\n': 'n', '\r': 'r', '\t': 't'}
			if c, ok := short[r]; ok && g.r.IntN(2) == 0 {
				b = append(b, '\\', c)
			} else {
				b = u(b, r)
			}
		case r == '/' && g.r.IntN(2) == 0:
			b = append(b, '\\', '/')
		case g.r.IntN(6) == 0:
			if r >= 0x10000 {
				hi, lo := utf16.EncodeRune(r)
				b = u(u(b, hi), lo)
			} else {
				b = u(b, r)
			}
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// integer picks integers of every size canonical JSON allows, the bounds included.
func (g *gen) integer() int64 {
	switch g.r.IntN(6) {
	case 0:
		return maxSafeInteger
	case 1:
		return -maxSafeInteger
	case 2:
		return 0
	case 3:
		return g.r.Int64N(2*maxSafeInteger+1) - maxSafeInteger
	}
	return g.r.Int64N(201) - 100
}

// value writes a random JSON value nested at most depth more levels.
func (g *gen) value(b []byte, depth int) []byte {
	n := 5
	if depth > 0 {
		n = 7
	}
	switch g.r.IntN(n) {
	case 0:
		return g.str(b, g.text(6))
	case 1:
		return strconv.AppendInt(b, g.integer(), 10)
	case 2:
		return append(b, []string{"true", "false", "null"}[g.r.IntN(3)]...)
	case 3, 4:
		return g.str(b, g.text(2))
	case 5:
		var members []member
		for k := g.r.IntN(5); k > 0; k-- {
			members = append(members, member{g.keyText(), g.value(nil, depth-1)})
		}
		return g.object(b, members)
	}
	b = append(b, '[')
	for k := g.r.IntN(5); k > 0; k-- {
		if b[len(b)-1] != '[' {
			b = append(b, ',')
		}
		b = g.ws(g.value(g.ws(b), depth-1))
	}
	return append(b, ']')
}

type member struct {
	key string
	raw []byte
}

// object writes members in random order, dropping members whose key repeats.
func (g *gen) object(b []byte, members []member) []byte {
	seen := map[string]bool{}
	b = g.ws(append(b, '{'))
	first := true
	for _, i := range g.r.Perm(len(members)) {
		m := members[i]
		if seen[m.key] {
			continue
		}
		seen[m.key] = true
		if !first {
			b = g.ws(append(b, ','))
		}
		first = false
		b = g.ws(g.str(g.ws(b), m.key))
		b = g.ws(append(b, ':'))
		b = g.ws(append(b, m.raw...))
	}
	return g.ws(append(b, '}'))
}

// extras are random members some content gets besides its own.
func (g *gen) extras(members []member) []member {
	for k := g.r.IntN(3); k > 0; k-- {
		members = append(members, member{g.keyText(), g.value(nil, 3)})
	}
	return members
}

func (g *gen) s(s string) []byte   { return g.str(nil, s) }
func (g *gen) i(n int64) []byte    { return strconv.AppendInt(nil, n, 10) }
func (g *gen) raw(s string) []byte { return []byte(s) }

func (g *gen) pick(options ...string) string { return options[g.r.IntN(len(options))] }

// beforeV11 says whether the room version has a creator in create events and a
// redaction's target at the top level.
func (g *gen) beforeV11() bool { return g.version != "11" && g.version != "12" }

func (g *gen) eventID() string {
	var h [32]byte
	for i := range h {
		h[i] = byte(g.r.IntN(256))
	}
	return "$" + base64.RawURLEncoding.EncodeToString(h[:])
}

func (g *gen) eventIDs(max int) []string {
	ids := make([]string, g.r.IntN(max+1))
	for i := range ids {
		ids[i] = g.eventID()
	}
	return ids
}

func (g *gen) userID() string {
	local := g.pick("alice", "bob", "carol", "_bridge_user", "x.y-z=1/2", "long"+strings.Repeat("o", g.r.IntN(60)))
	return "@" + local + ":" + g.server
}

func (g *gen) roomID() string {
	if g.version == "12" {
		return "!" + g.eventID()[1:]
	}
	return "!" + g.pick("abcdef", "OpaqueRoom123", "x") + ":" + g.server
}

// kinds of event, by name, for the counts a test logs.
var kinds = []string{
	"create", "member", "power_levels", "join_rules", "history_visibility", "name",
	"topic", "canonical_alias", "aliases", "redaction", "message", "custom_state", "empty",
}

// event returns a random event of a random kind.
func (g *gen) event() (string, *Event) {
	kind := kinds[g.r.IntN(len(kinds))]
	e := &Event{
		RoomVersion: g.version,
		RoomID:      g.roomID(),
		Sender:      g.userID(),
		PrevEvents:  g.eventIDs(3),
		AuthEvents:  g.eventIDs(4),
		Depth:       g.r.Int64N(1 << 40),
		Time:        time.UnixMilli(g.r.Int64N(1 << 42)),
	}
	if g.r.IntN(20) == 0 {
		e.PrevEvents, e.AuthEvents = nil, nil
	}
	empty := ""
	state := func(typ, key string) {
		e.Type, e.StateKey = typ, &key
	}
	var content []member
	switch kind {
	case "create":
		state("m.room.create", "")
		content = []member{{"room_version", g.s(g.version)}}
		switch {
		case g.beforeV11():
			content = append(content, member{"creator", g.s(e.Sender)})
		case g.version == "12":
			e.RoomID = ""
			e.PrevEvents, e.AuthEvents = []string{}, []string{}
			e.Depth = 1
			if g.r.IntN(2) == 0 {
				content = append(content, member{"additional_creators", g.raw(`["` + g.userID() + `"]`)})
			}
		}
		if g.r.IntN(2) == 0 {
			content = append(content, member{"m.federate", g.raw(g.pick("true", "false"))})
		}
		if g.r.IntN(3) == 0 {
			content = append(content, member{"predecessor", g.object(nil, []member{
				{"room_id", g.s(g.roomID())}, {"event_id", g.s(g.eventID())}})})
		}
		if g.r.IntN(3) == 0 {
			content = append(content, member{"type", g.s("m.space")})
		}
		content = g.extras(content)
	case "member":
		state("m.room.member", g.userID())
		content = []member{{"membership", g.s(g.pick("join", "invite", "leave", "ban", "knock"))}}
		if g.r.IntN(2) == 0 {
			content = append(content, member{"displayname", g.s(g.text(5))})
		}
		if g.r.IntN(2) == 0 {
			content = append(content, member{"avatar_url", g.s("mxc://" + g.server + "/" + g.pick("abc", "AvAtAr"))})
		}
		if g.r.IntN(3) == 0 {
			content = append(content, member{"reason", g.s(g.text(8))})
		}
		if g.r.IntN(3) == 0 {
			content = append(content, member{"join_authorised_via_users_server", g.s(g.userID())})
		}
		if g.r.IntN(4) == 0 {
			content = append(content, member{"is_direct", g.raw(g.pick("true", "false"))})
		}
		if g.r.IntN(8) == 0 {
			content = g.extras(content)
		}
	case "power_levels":
		state("m.room.power_levels", "")
		var users, events []member
		for k := g.r.IntN(5); k > 0; k-- {
			users = append(users, member{g.userID(), g.i(g.integer())})
		}
		for k := g.r.IntN(5); k > 0; k-- {
			events = append(events, member{g.pick("m.room.name", "m.room.topic", "m.room.power_levels", "m.reaction", g.keyText()), g.i(g.integer())})
		}
		for _, k := range []string{"ban", "kick", "redact", "invite", "events_default", "state_default", "users_default"} {
			if g.r.IntN(4) != 0 {
				content = append(content, member{k, g.i(g.integer())})
			}
		}
		content = append(content, member{"users", g.object(nil, users)}, member{"events", g.object(nil, events)})
		if g.r.IntN(2) == 0 {
			content = append(content, member{"notifications", g.object(nil, []member{{"room", g.i(g.integer())}})})
		}
		if g.r.IntN(4) == 0 {
			content = g.extras(content)
		}
	case "join_rules":
		state("m.room.join_rules", "")
		content = []member{{"join_rule", g.s(g.pick("public", "invite", "knock", "restricted", "knock_restricted", "private"))}}
		if g.r.IntN(2) == 0 {
			allow := []byte{'['}
			for k := g.r.IntN(3); k > 0; k-- {
				if len(allow) > 1 {
					allow = append(allow, ',')
				}
				allow = g.object(allow, []member{{"type", g.s("m.room_membership")}, {"room_id", g.s(g.roomID())}})
			}
			content = append(content, member{"allow", append(allow, ']')})
		}
		if g.r.IntN(4) == 0 {
			content = g.extras(content)
		}
	case "history_visibility":
		state("m.room.history_visibility", "")
		content = []member{{"history_visibility", g.s(g.pick("invited", "joined", "shared", "world_readable"))}}
		if g.r.IntN(4) == 0 {
			content = g.extras(content)
		}
	case "name":
		state("m.room.name", "")
		content = []member{{"name", g.s(g.text(10))}}
	case "topic":
		state("m.room.topic", "")
		topic := g.text(12)
		content = []member{{"topic", g.s(topic)}}
		if g.r.IntN(2) == 0 {
			block := g.object(nil, []member{{"body", g.s(topic)}, {"mimetype", g.s(g.pick("text/plain", "text/html"))}})
			content = append(content, member{"m.topic", g.object(nil, []member{{"m.text", append(append([]byte{'['}, block...), ']')}})})
		}
	case "canonical_alias":
		state("m.room.canonical_alias", "")
		if g.r.IntN(5) != 0 {
			content = append(content, member{"alias", g.s("#" + g.pick("room", "ĉambro", "a") + ":" + g.server)})
		}
		if g.r.IntN(2) == 0 {
			content = append(content, member{"alt_aliases", g.raw(`["#x:` + g.server + `","#y:` + g.server + `"]`)})
		}
	case "aliases":
		state("m.room.aliases", g.server)
		content = []member{{"aliases", g.raw(`["#x:` + g.server + `","#\u00e9:` + g.server + `"]`)}}
	case "redaction":
		e.Type = "m.room.redaction"
		target := g.eventID()
		switch {
		case g.beforeV11() || g.r.IntN(2) == 0:
			// The builder puts the target where the version wants it.
			e.Redacts = target
			if !g.beforeV11() && g.r.IntN(3) == 0 {
				content = append(content, member{"redacts", g.s(g.eventID())})
			}
		default:
			content = append(content, member{"redacts", g.s(target)})
		}
		if g.r.IntN(2) == 0 {
			content = append(content, member{"reason", g.s(g.text(6))})
		}
		if g.r.IntN(4) == 0 {
			content = g.extras(content)
		}
	case "message":
		e.Type = g.pick("m.room.message", "m.room.message", "m.reaction", "m.room.encrypted", "org.example.custom")
		content = []member{{"msgtype", g.s(g.pick("m.text", "m.notice", "m.emote"))}, {"body", g.s(g.text(20))}}
		if g.r.IntN(3) == 0 {
			content = append(content, member{"format", g.s("org.matrix.custom.html")}, member{"formatted_body", g.s("<b>" + g.text(5) + "</b> &amp;")})
		}
		if g.r.IntN(3) == 0 {
			content = append(content, member{"m.relates_to", g.object(nil, []member{
				{"rel_type", g.s("m.thread")}, {"event_id", g.s(g.eventID())}, {"is_falling_back", g.raw("true")}})})
		}
		content = g.extras(content)
	case "custom_state":
		// Types and state keys of any text, bytes that are not UTF-8 included.
		e.Type = g.pick("org.example.state", "m.room.create", "m.room.redaction", g.text(4), "\xff\xfe.type")
		key := g.pick("", "k", g.text(4), g.userID(), "bad\xc3(utf8")
		e.StateKey = &key
		if e.Type == "m.room.create" && g.version == "12" {
			e.RoomID = ""
			e.StateKey = &empty
		}
		content = g.extras(nil)
	case "empty":
		e.Type = g.pick("m.room.message", "m.room.create", "m.room.power_levels", "m.room.join_rules", "org.example.empty")
		if g.r.IntN(2) == 0 {
			state(e.Type, "")
		}
		if e.Type == "m.room.create" && e.StateKey != nil && g.version == "12" {
			e.RoomID = ""
		}
	}
	e.Content = g.object(nil, content)
	return kind, e
}
