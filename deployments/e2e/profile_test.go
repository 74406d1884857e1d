package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

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

// TestProfileAnnouncedAfterClientLeaves: a client that goes away while its profile
// change is being announced still gets it announced in every room it is joined to.
func TestProfileAnnouncedAfterClientLeaves(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	rooms := make([]id.RoomID, 40)
	for i := range rooms {
		rooms[i] = createRoomWith(ctx, t, alice, "")
	}
	reqCtx, leave := context.WithCancel(ctx)
	defer leave()
	answered := make(chan error, 1)
	go func() {
		_, err := alice.MakeRequest(reqCtx, http.MethodPut, alice.BuildClientURL("v3", "profile", alice.UserID, "displayname"),
			map[string]string{"displayname": "Gone"}, nil)
		answered <- err
	}()
	// Leave as soon as the profile is stored, while the rooms are being told.
	for {
		if p, err := alice.GetProfile(ctx, alice.UserID); err == nil && p.DisplayName == "Gone" {
			break
		}
		select {
		case err := <-answered:
			t.Fatalf("the update was answered (%v) before the test saw it stored; nothing left to interrupt", err)
		case <-time.After(time.Millisecond):
		}
	}
	leave()
	<-answered

	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, room := range rooms {
		for {
			var member struct {
				DisplayName string `json:"displayname"`
			}
			if err := alice.StateEvent(ctx, room, event.StateMember, alice.UserID.String(), &member); err == nil && member.DisplayName == "Gone" {
				break
			}
			select {
			case <-waitCtx.Done():
				t.Fatalf("room %s never heard of the new display name", room)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}
