package e2e

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestProfiles: a new user's display name is their localpart; setting one is public,
// reaches the member events of their rooms, and only they may change it.
func TestProfiles(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")

	p, err := bob.GetProfile(ctx, alice.UserID)
	if err != nil || p.DisplayName != "alice" {
		t.Fatalf("alice's default profile: %+v, %v", p, err)
	}
	room := createRoomWith(ctx, t, alice, "public_chat", bob)
	if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(ctx, id.ContentURI{Homeserver: d.serverName, FileID: "abc"}); err != nil {
		t.Fatal(err)
	}
	p, err = bob.GetProfile(ctx, alice.UserID)
	if err != nil || p.DisplayName != "Alice A." || p.AvatarURL.FileID != "abc" {
		t.Errorf("alice's profile after setting it: %+v, %v", p, err)
	}
	var member struct {
		DisplayName string `json:"displayname"`
		AvatarURL   string `json:"avatar_url"`
	}
	if err := bob.StateEvent(ctx, room, event.StateMember, alice.UserID.String(), &member); err != nil ||
		member.DisplayName != "Alice A." || member.AvatarURL != "mxc://"+d.serverName+"/abc" {
		t.Errorf("alice's member event in the room: %+v, %v", member, err)
	}
	joined, err := bob.JoinedMembers(ctx, room)
	if err != nil || joined.Joined[alice.UserID].DisplayName != "Alice A." {
		t.Errorf("joined members: %+v, %v", joined, err)
	}
	_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "profile", alice.UserID, "displayname"),
		map[string]string{"displayname": "hijacked"}, nil)
	wantError(t, "bob changes alice's display name", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.GetProfile(ctx, id.UserID("@nobody:"+d.serverName))
	wantError(t, "the profile of an unknown user", err, http.StatusNotFound, "M_NOT_FOUND")
}
