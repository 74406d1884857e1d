package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// redisStreamCheck makes a stream write something (act) and says what Synapse's row of
// that stream looks like (row returns an error for a malformed one, and reports whether
// the row is the one act caused).
type redisStreamCheck struct {
	stream string
	act    func(ctx context.Context, t *testing.T, alice, bob *mautrix.Client, room id.RoomID)
	row    func(fields []json.RawMessage, alice, bob *mautrix.Client, room id.RoomID) (mine bool, err error)
}

// redisStreamChecks are the streams whose Redis traffic TestRedisStreams parses; each
// stream adds its own.
var redisStreamChecks = []redisStreamCheck{{
	stream: "account_data",
	act: func(ctx context.Context, t *testing.T, alice, _ *mautrix.Client, room id.RoomID) {
		if err := alice.SetRoomAccountData(ctx, room, "org.example.redis", map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
	},
	// [user_id, room_id|null, data_type]
	row: func(f []json.RawMessage, alice, _ *mautrix.Client, room id.RoomID) (bool, error) {
		var user, typ string
		var rm *string
		if len(f) != 3 || json.Unmarshal(f[0], &user) != nil || json.Unmarshal(f[1], &rm) != nil || json.Unmarshal(f[2], &typ) != nil {
			return false, fmt.Errorf("want [user_id, room_id|null, data_type]")
		}
		return user == alice.UserID.String() && rm != nil && *rm == room.String() && typ == "org.example.redis", nil
	},
}, {
	stream: "device_lists",
	act: func(ctx context.Context, t *testing.T, _, bob *mautrix.Client, _ id.RoomID) {
		d := newKeyDevice(bob)
		if err := call(ctx, bob, http.MethodPost, map[string]any{"device_keys": d.deviceKeys(t)}, nil, "keys", "upload"); err != nil {
			t.Fatal(err)
		}
	},
	// [user_id, is_signature, hosts_calculated]
	row: func(f []json.RawMessage, _, bob *mautrix.Client, _ id.RoomID) (bool, error) {
		var user string
		var sig, hosts bool
		if len(f) != 3 || json.Unmarshal(f[0], &user) != nil || json.Unmarshal(f[1], &sig) != nil || json.Unmarshal(f[2], &hosts) != nil {
			return false, fmt.Errorf("want [user_id, is_signature, hosts_calculated]")
		}
		return user == bob.UserID.String() && !sig, nil
	},
}, pushRulesRedisCheck, typingRedisCheck, receiptsRedisCheck, presenceRedisCheck, toDeviceRedisCheck}

// TestRedisStreams is issue 6's acceptance 4: a go-redis subscriber parses POSITION and
// RDATA of every per-user stream in Synapse's format, and REPLICATE is answered with
// the position of each stream the process writes.
func TestRedisStreams(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{redis: map[string]any{"enabled": true, "host": "127.0.0.1", "port": 6379}})
	log, rc := subscribe(ctx, t, d.serverName)
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	for _, c := range redisStreamChecks {
		c.act(ctx, t, alice, bob, room)
	}
	if err := rc.Publish(ctx, d.serverName, "REPLICATE ").Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range redisStreamChecks {
		msgs, err := log.waitFor(ctx, func(msgs []string) bool {
			st := parseStream(msgs, c.stream)
			return st.mine(c, alice, bob, room) && st.positionAfterReplicate
		})
		st := parseStream(msgs, c.stream)
		for _, e := range st.errs {
			t.Errorf("%s: %s", c.stream, e)
		}
		if err != nil {
			t.Errorf("%s: no RDATA row of the write, or no POSITION after REPLICATE (%v); saw %d rows, %d positions",
				c.stream, err, len(st.rows), st.positions)
		}
	}
}

// streamTraffic is what one stream's commands on the channel say.
type streamTraffic struct {
	rows                   [][]json.RawMessage
	positions              int
	positionAfterReplicate bool
	errs                   []string
}

func (s *streamTraffic) mine(c redisStreamCheck, alice, bob *mautrix.Client, room id.RoomID) bool {
	for _, r := range s.rows {
		if ok, err := c.row(r, alice, bob, room); err == nil && ok {
			return true
		}
	}
	return false
}

// parseStream reads the commands of one stream: POSITION <stream> <instance> <prev>
// <new> with integer tokens, RDATA <stream> <instance> <token|batch> <row>, the first
// RDATA only after a POSITION, rows as compact JSON arrays.
func parseStream(msgs []string, stream string) *streamTraffic {
	st := &streamTraffic{}
	replicated := false
	for _, m := range msgs {
		name, payload, _ := strings.Cut(m, " ")
		switch name {
		case "REPLICATE":
			replicated = true
		case "POSITION":
			f := strings.Split(payload, " ")
			if len(f) != 4 || f[0] != stream {
				continue
			}
			prev, e1 := strconv.ParseInt(f[2], 10, 64)
			next, e2 := strconv.ParseInt(f[3], 10, 64)
			if e1 != nil || e2 != nil || prev > next || f[1] == "" {
				st.errs = append(st.errs, fmt.Sprintf("%q: bad POSITION", m))
			}
			st.positions++
			st.positionAfterReplicate = st.positionAfterReplicate || replicated
		case "RDATA":
			f := strings.SplitN(payload, " ", 4)
			if len(f) != 4 || f[0] != stream {
				continue
			}
			if st.positions == 0 {
				st.errs = append(st.errs, fmt.Sprintf("%q: RDATA before any POSITION", m))
			}
			if _, err := strconv.ParseInt(f[2], 10, 64); err != nil && f[2] != "batch" {
				st.errs = append(st.errs, fmt.Sprintf("%q: token is neither an integer nor batch", m))
			}
			var row []json.RawMessage
			if err := json.Unmarshal([]byte(f[3]), &row); err != nil {
				st.errs = append(st.errs, fmt.Sprintf("%q: row is not a JSON array", m))
				continue
			}
			st.rows = append(st.rows, row)
		}
	}
	return st
}
