package eventbuild

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// The content keys a redaction keeps, by event type, under the redaction rules of
// room versions 6 and 7 (the library's "V2"), 8 (MSC3083: join rules keep allow), 9
// and 10 (MSC3375: members keep join_authorised_via_users_server), and 11 and 12
// (MSC2176 and MSC3821: power levels keep invite, a redaction keeps redacts; a create
// event keeps all its content, see rules.redactV5).
var (
	keptV2 = map[string][]string{
		"m.room.member":             {"membership"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule"},
		"m.room.power_levels":       {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"},
		"m.room.history_visibility": {"history_visibility"},
	}
	keptV3 = map[string][]string{
		"m.room.member":             {"membership"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule", "allow"},
		"m.room.power_levels":       {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"},
		"m.room.history_visibility": {"history_visibility"},
	}
	keptV4 = map[string][]string{
		"m.room.member":             {"membership", "join_authorised_via_users_server"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule", "allow"},
		"m.room.power_levels":       {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"},
		"m.room.history_visibility": {"history_visibility"},
	}
	keptV5 = map[string][]string{
		"m.room.member":             {"membership", "join_authorised_via_users_server"},
		"m.room.join_rules":         {"join_rule", "allow"},
		"m.room.power_levels":       {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default", "invite"},
		"m.room.history_visibility": {"history_visibility"},
		"m.room.redaction":          {"redacts"},
	}
)

func contains[K string | []byte](keys []string, key K) bool {
	for _, k := range keys {
		if string(key) == k {
			return true
		}
	}
	return false
}

// checkHead checks, before any work, what the library refuses whatever the content.
func checkHead(e *Event, r rules) error {
	if r.domainless && e.Type == "m.room.create" && e.StateKey != nil && e.RoomID != "" {
		return fmt.Errorf("%w: a create event has no room ID in room version 12", ErrInvalid)
	}
	if e.Depth < -maxSafeInteger || e.Depth > maxSafeInteger {
		return fmt.Errorf("%w: depth %d out of the range ±(2^53−1)", ErrInvalid, e.Depth)
	}
	// The library writes the time as an unsigned number of milliseconds.
	if ts := e.Time.UnixMilli(); ts < 0 || ts > maxSafeInteger {
		return fmt.Errorf("%w: origin_server_ts %d out of the range 0 to 2^53−1", ErrInvalid, ts)
	}
	return nil
}

// checkRoomID checks the room ID as the library does when it reads the built event.
func checkRoomID(e *Event, r rules) error {
	if !r.domainless {
		return checkID(e.RoomID, "room", '!')
	}
	isCreate := e.Type == "m.room.create" && e.StateKey != nil && *e.StateKey == ""
	if !isCreate && !strings.HasPrefix(e.RoomID, "!") {
		return fmt.Errorf("%w: room ID %q does not start with !", ErrInvalid, e.RoomID)
	}
	return nil
}

// checkFields checks the sizes and the sender as the library's CheckFields does, in its
// order, on the strings as the event carries them.
func checkFields(e *Event, size int) error {
	if size > maxEventSize {
		return fmt.Errorf("%w: the event has %d bytes, more than %d", ErrTooLarge, size, maxEventSize)
	}
	if utf8.RuneCountInString(e.Type) > maxIDSize {
		return fmt.Errorf("%w: the type has more than %d code points", ErrTooLarge, maxIDSize)
	}
	if e.StateKey != nil && utf8.RuneCountInString(*e.StateKey) > maxIDSize {
		return fmt.Errorf("%w: the state key has more than %d code points", ErrTooLarge, maxIDSize)
	}
	if encodedLen(e.Type) > maxIDSize {
		return fmt.Errorf("%w: the type has more than %d bytes", ErrTooLarge, maxIDSize)
	}
	if e.StateKey != nil && encodedLen(*e.StateKey) > maxIDSize {
		return fmt.Errorf("%w: the state key has more than %d bytes", ErrTooLarge, maxIDSize)
	}
	return checkID(e.Sender, "user", '@')
}

// checkID checks a user or room ID (one with a server name) as the library does.
func checkID(id, kind string, sigil byte) error {
	if !strings.Contains(id, ":") {
		return fmt.Errorf("%w: %s ID %q has no server name", ErrInvalid, kind, id)
	}
	if id[0] != sigil {
		return fmt.Errorf("%w: %s ID %q does not start with %c", ErrInvalid, kind, id, sigil)
	}
	if utf8.RuneCountInString(id) > maxIDSize {
		return fmt.Errorf("%w: %s ID has more than %d code points", ErrTooLarge, kind, maxIDSize)
	}
	if encodedLen(id) > maxIDSize {
		return fmt.Errorf("%w: %s ID has more than %d bytes", ErrTooLarge, kind, maxIDSize)
	}
	return nil
}

// encodedLen is the length of s once each byte that is not UTF-8 has become U+FFFD.
func encodedLen(s string) int {
	if utf8.ValidString(s) {
		return len(s)
	}
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += len("\uFFFD")
		} else {
			n += size
		}
		i += size
	}
	return n
}
