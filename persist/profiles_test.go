package persist

import (
	"context"
	"errors"
	"testing"

	"github.com/ganglionhq/ganglion/schemas"
)

// TestProfiles: each record sets one field; a user who never set one shows their
// localpart as display name, also beside an avatar set first.
func TestProfiles(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	newUser(t, db, "@alice:test", "")
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	if got, err := db.GetProfile(ctx, "@alice:test"); err != nil || str(got.DisplayName) != "alice" || got.AvatarURL != nil {
		t.Fatalf("profile never set: (%s, %s), %v", str(got.DisplayName), str(got.AvatarURL), err)
	}
	avatar, name := "mxc://test/a", "Alice"
	for _, tc := range []struct {
		field                string
		value                *string
		wantName, wantAvatar string
	}{
		// The first update of an avatar keeps the default display name, the localpart.
		{schemas.ProfileAvatarURL, &avatar, "alice", avatar},
		{schemas.ProfileDisplayName, &name, name, avatar},
		{schemas.ProfileAvatarURL, nil, name, "<nil>"},
		{schemas.ProfileDisplayName, nil, "<nil>", "<nil>"},
	} {
		project(t, db, schemas.AccountsRecord{Kind: schemas.AccountProfileSet, User: "@alice:test", Field: tc.field, Value: tc.value})
		if got, err := db.GetProfile(ctx, "@alice:test"); err != nil || str(got.DisplayName) != tc.wantName || str(got.AvatarURL) != tc.wantAvatar {
			t.Fatalf("after setting %s to %s: (%s, %s), %v; want (%s, %s)", tc.field, str(tc.value),
				str(got.DisplayName), str(got.AvatarURL), err, tc.wantName, tc.wantAvatar)
		}
	}
	if _, err := db.GetProfile(ctx, "@nobody:test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v, want ErrNotFound", err)
	}
}
