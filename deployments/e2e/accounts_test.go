package e2e

import (
	"context"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
)

// checkAccountsAcross: a login through one gateway gives a token that works at once on
// the other; a profile and a filter written through one are read through the other; a
// logout through the other ends the device there at once.
func checkAccountsAcross(ctx context.Context, t *testing.T, c streamClients) {
	localpart := c.alice.UserID.Localpart()
	here := login(ctx, t, c.alice.HomeserverURL.String(), localpart, "")
	there := at(here, c.bob.HomeserverURL.String())
	if who, err := there.Whoami(ctx); err != nil || who.DeviceID != here.DeviceID {
		t.Fatalf("a login's token on the other gateway: %+v, %v", who, err)
	}
	name := "Alice " + randomLetters(6)
	if err := there.SetDisplayName(ctx, name); err != nil {
		t.Fatal(err)
	}
	if p, err := here.GetProfile(ctx, here.UserID); err != nil || p.DisplayName != name {
		t.Errorf("a display name set through the other gateway: %+v, %v", p, err)
	}
	filter, err := here.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	var stored mautrix.Filter
	if _, err := there.MakeRequest(ctx, http.MethodGet, there.BuildClientURL("v3", "user", there.UserID, "filter", filter.FilterID), nil, &stored); err != nil ||
		stored.Room == nil || stored.Room.Timeline == nil || stored.Room.Timeline.Limit != 7 {
		t.Errorf("a filter uploaded through the other gateway: %+v, %v", stored, err)
	}
	if _, err := there.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = there.Whoami(ctx)
	wantError(t, "a token logged out on this gateway", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}
