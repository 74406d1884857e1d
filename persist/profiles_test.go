package persist

import (
	"context"
	"errors"
	"testing"
)

func TestSetProfileField(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	if err := db.CreateUser(ctx, "@alice:test", "", nil); err != nil {
		t.Fatal(err)
	}
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	avatar, name := "mxc://test/a", "Alice"
	for _, tc := range []struct {
		field                ProfileField
		value                *string
		wantName, wantAvatar string
	}{
		// The first update of an avatar keeps the default display name, the localpart.
		{AvatarURL, &avatar, "alice", avatar},
		{DisplayName, &name, name, avatar},
		{AvatarURL, nil, name, "<nil>"},
		{DisplayName, nil, "<nil>", "<nil>"},
	} {
		p, err := db.SetProfileField(ctx, "@alice:test", tc.field, tc.value)
		if err != nil || str(p.DisplayName) != tc.wantName || str(p.AvatarURL) != tc.wantAvatar {
			t.Fatalf("set %s to %s: (%s, %s), %v; want (%s, %s)", tc.field, str(tc.value), str(p.DisplayName), str(p.AvatarURL), err, tc.wantName, tc.wantAvatar)
		}
		if got, err := db.GetProfile(ctx, "@alice:test"); err != nil || str(got.DisplayName) != tc.wantName || str(got.AvatarURL) != tc.wantAvatar {
			t.Fatalf("stored after setting %s: (%s, %s), %v", tc.field, str(got.DisplayName), str(got.AvatarURL), err)
		}
	}
	if _, err := db.SetProfileField(ctx, "@nobody:test", DisplayName, &name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v, want ErrNotFound", err)
	}
}
