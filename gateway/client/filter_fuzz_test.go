package client

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzFilter: any filter body is either refused with a Matrix error or accepted with
// bounded limits, and a type pattern matches exactly what the same pattern as a
// regular expression (with '*' as ".*" and everything else literal) matches.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"room":{"timeline":{"limit":5,"types":["m.*"],"not_senders":["@a:b"]}}}`,
		`{"room":{"rooms":["!a:b"],"state":{"lazy_load_members":true}}}`, `{"room":{"rooms":["nope"]}}`,
		`{"presence":{"types":[]},"account_data":{"limit":-1}}`, `{"event_format":"x"}`, `[]`, `{"room":{"timeline":{"types":"x"}}}`,
	} {
		f.Add(s, "m.room.message")
	}
	f.Fuzz(func(t *testing.T, body, typ string) {
		flt, err := parseFilter([]byte(body))
		if err != nil {
			checkDecodeError(t, []byte(body), err)
			return
		}
		if l := flt.timelineLimit(); l < 0 || l > maxTimelineLimit {
			t.Fatalf("timeline limit %d out of bounds", l)
		}
		// Event types are valid UTF-8 (the persister refuses others); the regular
		// expression reads invalid bytes as U+FFFD, which would match differently.
		if flt.Room == nil || flt.Room.Timeline == nil || flt.Room.Timeline.Types == nil || !utf8.ValidString(typ) {
			return
		}
		for _, p := range *flt.Room.Timeline.Types {
			re := regexp.MustCompile("^(?s:" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + ")$")
			if got, want := matchType(p, typ), re.MatchString(typ); got != want {
				t.Fatalf("matchType(%q, %q) = %v, want %v", p, typ, got, want)
			}
		}
	})
}
