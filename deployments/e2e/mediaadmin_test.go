package e2e

import (
	"net/http"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// The media admin API: an admin lists a user's media and deletes one item or a page
// of them; deleted media is not served any more, and its content becomes an orphan for
// the media jobs only when no other media names the same bytes.
func TestMediaAdmin(t *testing.T) {
	ctx, d, hs, root := withAdmin(t, deploymentOptions{}, nil)
	alice := newUser(ctx, t, hs.url(), "alice")
	upload := func(data string) id.ContentURI {
		t.Helper()
		up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte(data), ContentType: "text/plain", FileName: "f.txt"})
		if err != nil {
			t.Fatal(err)
		}
		return up.ContentURI
	}
	shared1, shared2, unique := upload("same bytes"), upload("same bytes"), upload("only once")
	path := "v1/users/" + alice.UserID.String() + "/media"

	adminCall(ctx, t, hs, alice, "GET", path, nil, http.StatusForbidden)
	list := adminCall(ctx, t, hs, root, "GET", path+"?dir=f", nil, http.StatusOK)
	var listed []string
	for _, m := range list.Get("media").Array() {
		listed = append(listed, m.Get("media_id").Str)
	}
	if want := []string{shared1.FileID, shared2.FileID, unique.FileID}; !slices.Equal(listed, want) || list.Get("total").Int() != 3 ||
		list.Get("media.0.media_length").Int() != 10 || list.Get("media.0.media_type").Str != "text/plain" {
		t.Errorf("alice's media: %s, want %v", list.Raw, want)
	}
	adminCall(ctx, t, hs, root, "GET", path+"?dir=x", nil, http.StatusBadRequest)
	adminCall(ctx, t, hs, root, "DELETE", "v1/media/elsewhere.org/"+unique.FileID, nil, http.StatusBadRequest)
	adminCall(ctx, t, hs, root, "DELETE", "v1/media/"+d.serverName+"/nosuchmedia", nil, http.StatusNotFound)

	orphans := func() []string {
		var shas []string
		d.query(ctx, func(conn *pgx.Conn) error {
			rows, err := conn.Query(ctx, `SELECT sha256 FROM media_orphans`)
			if err != nil {
				return err
			}
			shas, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		return shas
	}
	if del := adminCall(ctx, t, hs, root, "DELETE", "v1/media/"+d.serverName+"/"+shared1.FileID, nil, http.StatusOK); del.Get("total").Int() != 1 {
		t.Errorf("deleting one: %s", del.Raw)
	}
	if got := orphans(); len(got) != 0 {
		t.Errorf("content another media still names became an orphan: %v", got)
	}
	download := func(uri id.ContentURI) int {
		return mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", uri), alice.AccessToken, nil).status
	}
	if s1, s2 := download(shared1), download(shared2); s1 != http.StatusNotFound || s2 != http.StatusOK {
		t.Errorf("downloads after deleting one of two with the same bytes: %d (deleted), %d (kept)", s1, s2)
	}
	// A page of one, oldest first: the second of the shared pair.
	del := adminCall(ctx, t, hs, root, "DELETE", path+"?dir=f&limit=1", nil, http.StatusOK)
	if ids := del.Get("deleted_media").Array(); len(ids) != 1 || ids[0].Str != shared2.FileID {
		t.Errorf("deleting a page: %s", del.Raw)
	}
	adminCall(ctx, t, hs, root, "DELETE", "v1/media/"+d.serverName+"/"+unique.FileID, nil, http.StatusOK)
	if got := orphans(); len(got) != 2 {
		t.Errorf("orphans after deleting every item: %v, want the two contents", got)
	}
	if left := adminCall(ctx, t, hs, root, "GET", path, nil, http.StatusOK); left.Get("total").Int() != 0 {
		t.Errorf("alice's media after the deletions: %s", left.Raw)
	}
	if s := download(unique); s != http.StatusNotFound {
		t.Errorf("a deleted item's download: %d", s)
	}
}
