package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Room deletion through the admin API: local members leave and are moved to a new room,
// the room loses its aliases and listing, is blocked against later joins, and is
// purged: Postgres holds nothing of it (receipts and tags included) and the log keeps
// only its purged batch. Without purge, the room's history stays.
func TestAdminRoomDeletion(t *testing.T) {
	ctx, d, hs, root := withAdmin(t, deploymentOptions{externalNATS: true}, nil)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "doomed", Visibility: "public",
		Invite: []id.UserID{carol.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	msg, err := sendText(ctx, alice, room, "d1", "bad content")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, room, msg, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.AddTag(ctx, room, "u.evidence", 0.5); err != nil {
		t.Fatal(err)
	}
	kept := createRoomWith(ctx, t, alice, "public_chat", bob)
	if _, err := sendText(ctx, alice, kept, "k1", "stays"); err != nil {
		t.Fatal(err)
	}

	path := "v2/rooms/" + room.String()
	adminCall(ctx, t, hs, alice, "DELETE", path, map[string]any{}, http.StatusForbidden)
	adminCall(ctx, t, hs, root, "DELETE", "v2/rooms/!unknown:"+d.serverName, map[string]any{}, http.StatusNotFound)
	adminCall(ctx, t, hs, root, "DELETE", path, map[string]any{"new_room_user_id": "@nobody:" + d.serverName}, http.StatusBadRequest)
	deleteID := adminCall(ctx, t, hs, root, "DELETE", path, map[string]any{"new_room_user_id": root.UserID, "block": true,
		"room_name": "Moved", "message": "The room is gone"}, http.StatusOK).Get("delete_id").Str
	var status gjson.Result
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		status = adminCall(ctx, t, hs, root, "GET", "v2/rooms/delete_status/"+deleteID, nil, http.StatusOK)
		if status.Get("status").Str != "shutting_down" {
			break
		}
	}
	if status.Get("status").Str != "complete" {
		t.Fatalf("the deletion: %s", status.Raw)
	}
	var kicked []string
	for _, u := range status.Get("shutdown_room.kicked_users").Array() {
		kicked = append(kicked, u.Str)
	}
	slices.Sort(kicked)
	want := []string{alice.UserID.String(), bob.UserID.String(), carol.UserID.String()}
	slices.Sort(want)
	newRoom := id.RoomID(status.Get("shutdown_room.new_room_id").Str)
	if !slices.Equal(kicked, want) || newRoom == "" || status.Get("shutdown_room.local_aliases.0").Str != "#doomed:"+d.serverName {
		t.Errorf("what the deletion did: %s", status.Raw)
	}
	if byRoom := adminCall(ctx, t, hs, root, "GET", path+"/delete_status", nil, http.StatusOK); byRoom.Get("results.0.delete_id").Str != deleteID {
		t.Errorf("the room's deletions: %s", byRoom.Raw)
	}

	// The members are in the new room, which has the message; not in the old one. The
	// server wrote their leaves and joins: their reads do not wait for those.
	for _, c := range []*mautrix.Client{alice, bob, carol} {
		eventually(t, string(c.UserID)+"'s rooms", func() error {
			joined, err := c.JoinedRooms(ctx)
			if err != nil {
				return err
			}
			if slices.Contains(joined.JoinedRooms, room) || !slices.Contains(joined.JoinedRooms, newRoom) {
				return fmt.Errorf("%v", joined.JoinedRooms)
			}
			return nil
		})
	}
	_, err = bob.JoinRoomByID(ctx, room)
	wantError(t, "a join of the blocked room", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = alice.ResolveAlias(ctx, id.RoomAlias("#doomed:"+d.serverName))
	wantError(t, "the deleted room's alias", err, http.StatusNotFound, "M_NOT_FOUND")
	if list, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{}); err != nil || slices.ContainsFunc(list.Chunk, func(r *mautrix.PublicRoomInfo) bool { return r.RoomID == room }) {
		t.Errorf("the deleted room in the directory: %v", err)
	}

	_, err = sendText(ctx, alice, room, "d2", "anyone there?")
	wantError(t, "a send to the purged room", err, http.StatusNotFound, "M_NOT_FOUND")

	// Postgres holds nothing of it, once the purged batch is projected; the other room
	// is untouched.
	eventually(t, "the purged room's rows", func() error {
		var left []string
		d.query(ctx, func(conn *pgx.Conn) error {
			for _, table := range []string{"events", "current_state", "rooms", "receipts", "account_data", "event_search", "intent_results"} {
				var n int
				if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE room_id = $1`, room).Scan(&n); err != nil {
					return err
				}
				if n != 0 {
					left = append(left, fmt.Sprintf("%s: %d", table, n))
				}
			}
			return nil
		})
		if len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
	d.query(ctx, func(conn *pgx.Conn) error {
		var purged, blocked, keptEvents int
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM purged_rooms WHERE room_id = $1), (SELECT count(*) FROM blocked_rooms WHERE room_id = $1),
			(SELECT count(*) FROM events WHERE room_id = $2)`, room, kept).Scan(&purged, &blocked, &keptEvents); err != nil {
			return err
		}
		if purged != 1 || blocked != 1 || keptEvents == 0 {
			t.Errorf("purged %d, blocked %d, the other room's events %d", purged, blocked, keptEvents)
		}
		return nil
	})
	// The log keeps only the purged batch of the room.
	stream, err := d.js.Stream(ctx, d.topology().EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	subject := d.topology().EventSubject(room.String())
	eventually(t, "the room's log messages", func() error {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return err
		}
		last, err := stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return err
		}
		if info.State.Subjects[subject] != 1 || !gjson.GetBytes(last.Data, "purged").Bool() {
			return fmt.Errorf("%d messages, the last %s", info.State.Subjects[subject], last.Data)
		}
		return nil
	})

	// Version 1, without purge: the members leave, the history stays.
	res := adminCall(ctx, t, hs, root, "DELETE", "v1/rooms/"+kept.String(), map[string]any{"purge": false}, http.StatusOK)
	if n := len(res.Get("kicked_users").Array()); n != 2 || res.Get("new_room_id").Type != gjson.Null {
		t.Errorf("a deletion without purge: %s", res.Raw)
	}
	d.query(ctx, func(conn *pgx.Conn) error {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE room_id = $1`, kept).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			t.Error("a deletion without purge removed the history")
		}
		return nil
	})
	_, err = sendText(ctx, alice, kept, "k2", "still here?")
	wantError(t, "a send to a room alice was removed from", err, http.StatusForbidden, "M_FORBIDDEN")
}
