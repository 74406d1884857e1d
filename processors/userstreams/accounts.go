package userstreams

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Operations of the accounts stream. Those about a user are keyed (sharded) by the
// user ID and act on the write's User; those about an alias are keyed by the alias.
const (
	// OpRegister creates the user, with its first device unless the registration
	// inhibits login: Register.
	OpRegister = "register"
	// OpLogin gives the user a device with a new access token, or a known device a
	// new token that replaces its earlier ones: NewDevice.
	OpLogin = "login"
	// OpSetPassword replaces the user's password hash: SetPassword.
	OpSetPassword = "set_password"
	// OpDeleteDevices deletes those of the devices that exist, or all of the user's,
	// with their tokens (logout, logout/all, device deletion): DeleteDevices. The
	// answer (schemas.DevicesDeletedAnswer) lists them.
	OpDeleteDevices = "delete_devices"
	// OpRenameDevice sets a device's display name; an unknown device is 404:
	// RenameDevice.
	OpRenameDevice = "rename_device"
	// OpSetProfile sets one profile field: SetProfile.
	OpSetProfile = "set_profile"
	// OpCreateFilter stores a filter and answers its ID (schemas.FilterAnswer); a
	// filter equal to a stored one gets the stored one's ID: CreateFilter.
	OpCreateFilter = "create_filter"
	// OpForgetRoom records that the user forgot a room: ForgetRoom.
	OpForgetRoom = "forget_room"
	// OpCreateAlias points an alias at an existing room; a held alias is 409:
	// AliasChange.
	OpCreateAlias = "create_alias"
	// OpClaimAlias claims an alias for a room about to be created; an alias another
	// room holds is 400 M_ROOM_IN_USE: AliasChange.
	OpClaimAlias = "claim_alias"
	// OpReleaseAlias frees an alias the room claimed, if it still holds it: the room
	// was not created: AliasChange.
	OpReleaseAlias = "release_alias"
	// OpDeleteAlias frees an alias, for its creator or a moderator of its room:
	// AliasChange without a room.
	OpDeleteAlias = "delete_alias"
	// OpSetPusher sets a pusher of the requesting device, which must exist:
	// SetPusher.
	OpSetPusher = "set_pusher"
	// OpDeletePusher deletes the user's pusher of an app_id and pushkey, if any:
	// schemas.Pusher with those two fields.
	OpDeletePusher = "delete_pusher"
	// OpListRoom lists a room in the room directory, or takes it out, keyed by the
	// room: ListRoom. The gateway checked that the user may.
	OpListRoom = "list_room"
	// OpBlockRoom blocks a room, keyed by the room, for the admin who asks: ListRoom
	// (its Public unused).
	OpBlockRoom = "block_room"
	// OpRefresh exchanges a refresh token of the user's device for a new access token
	// and refresh token; one already exchanged, or of another device, is 401
	// M_UNKNOWN_TOKEN: Refresh.
	OpRefresh = "refresh"
	// OpReport records the user's report of a room or of one of its events: Report.
	// The gateway checked that the room exists and the user may see the event.
	OpReport = "report"
	// OpCreateOpenIDToken gives the user an OpenID token: OpenIDToken.
	OpCreateOpenIDToken = "create_openid_token"
	// OpSetAdmin makes the user a server admin, or not: SetAdmin.
	OpSetAdmin = "set_admin"
	// OpDeactivate deactivates the user: no password, no devices; the user ID stays
	// taken: Deactivate.
	OpDeactivate = "deactivate"
	// OpReserveMedia reserves a media ID for an asynchronous upload; past the user's
	// MaxPending unused reservations it is 429 M_LIMIT_EXCEEDED: ReserveMedia. The
	// answer (schemas.MediaReservedAnswer) says when the reservation lapses.
	OpReserveMedia = "reserve_media"
	// OpDeleteMedia deletes the user's media item, reserved or uploaded; one the user
	// does not hold is 404: DeleteMedia.
	OpDeleteMedia = "delete_media"
	// OpUploadMedia stores uploaded media, into the user's reservation when Reserved:
	// UploadMedia.
	OpUploadMedia = "upload_media"
)

// ReserveMedia is the body of OpReserveMedia.
type ReserveMedia struct {
	ID string `json:"id"`
	// LifetimeMS is how long the reservation stays unused before it lapses.
	LifetimeMS    int64 `json:"lifetime_ms"`
	MaxPending    int   `json:"max_pending"`
	Authenticated bool  `json:"authenticated,omitempty"`
}

// UploadMedia is the body of OpUploadMedia. The media's file is in the media store.
type UploadMedia struct {
	Media schemas.Media `json:"media"`
	// Reserved uploads into the user's reservation of Media.ID (PUT /upload/{server}/{id}):
	// 404 when there is none, or it lapsed; 403 when another user holds it; 409
	// M_CANNOT_OVERWRITE_MEDIA when it was uploaded already.
	Reserved bool `json:"reserved,omitempty"`
}

// SetPusher is the body of OpSetPusher, checked by the gateway (kind, data.url).
type SetPusher struct {
	Pusher schemas.Pusher `json:"pusher"`
	Append bool           `json:"append,omitempty"`
}

// NewDevice is a device with its first access token, given as the token's SHA-256, and
// for a refreshable token the SHA-256 of its refresh token and how long it lasts.
type NewDevice struct {
	ID          string  `json:"id"`
	DisplayName *string `json:"display_name,omitempty"`
	TokenHash   []byte  `json:"token_hash"`
	RefreshHash []byte  `json:"refresh_hash,omitempty"`
	LifetimeMS  int64   `json:"lifetime_ms,omitempty"`
}

// ListRoom is the body of OpListRoom.
type ListRoom struct {
	Room   string `json:"room"`
	Public bool   `json:"public"`
}

// Refresh is the body of OpRefresh: the device's refresh token Used is exchanged for
// NewDevice's tokens (ID names the device; no display name).
type Refresh struct {
	Used []byte    `json:"used"`
	New  NewDevice `json:"new"`
}

// Register is the body of OpRegister. PasswordHash is the bcrypt hash the gateway
// computed (empty for an account without a password); Device is nil when the
// registration inhibits login; Admin makes a server admin (the admin API's
// registration).
type Register struct {
	PasswordHash string     `json:"password_hash,omitempty"`
	Device       *NewDevice `json:"device,omitempty"`
	Admin        bool       `json:"admin,omitempty"`
}

// Report is the body of OpReport; EventID is empty for a report of the room.
type Report struct {
	Room    string `json:"room"`
	EventID string `json:"event_id,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Score   *int   `json:"score,omitempty"`
}

// OpenIDToken is the body of OpCreateOpenIDToken: the token's SHA-256 and when it
// expires, in milliseconds.
type OpenIDToken struct {
	TokenHash []byte `json:"token_hash"`
	Expires   int64  `json:"expires"`
}

// DeleteMedia is the body of OpDeleteMedia.
type DeleteMedia struct {
	ID string `json:"id"`
}

// Deactivate is the body of OpDeactivate; Erase erases the user's events for those
// who join their rooms later.
type Deactivate struct {
	Erase bool `json:"erase,omitempty"`
}

// SetAdmin is the body of OpSetAdmin.
type SetAdmin struct {
	Admin bool `json:"admin"`
}

// SetPassword is the body of OpSetPassword.
type SetPassword struct {
	PasswordHash string `json:"password_hash,omitempty"`
}

// DeleteDevices is the body of OpDeleteDevices.
type DeleteDevices struct {
	Devices []string `json:"devices,omitempty"`
	// All deletes every device of the user (logout/all).
	All bool `json:"all,omitempty"`
}

// RenameDevice is the body of OpRenameDevice; a nil DisplayName keeps the device's
// name, as PUT /devices/{deviceId} without one does in Synapse.
type RenameDevice struct {
	Device      string  `json:"device"`
	DisplayName *string `json:"display_name"`
}

// SetProfile is the body of OpSetProfile: Field is schemas.ProfileDisplayName or
// schemas.ProfileAvatarURL, a nil Value unsets it.
type SetProfile struct {
	Field string  `json:"field"`
	Value *string `json:"value"`
}

// CreateFilter is the body of OpCreateFilter: the client's filter, a JSON object.
type CreateFilter struct {
	Filter json.RawMessage `json:"filter"`
}

// ForgetRoom is the body of OpForgetRoom: the membership event the user forgot.
type ForgetRoom struct {
	Room    string `json:"room"`
	EventID string `json:"event_id"`
}

// AliasChange is the body of the alias operations; Room is empty for OpDeleteAlias.
type AliasChange struct {
	Alias string `json:"alias"`
	Room  string `json:"room,omitempty"`
	// Moderator, on OpDeleteAlias, says the gateway found the deleting user's power
	// level enough to change the room's canonical alias: they may delete an alias
	// another user created, as Synapse allows.
	Moderator bool `json:"moderator,omitempty"`
}

// StaleClaim is how long an alias claimed for a room that does not exist stays held:
// longer than a create_room intent stays on the bus (10 minutes, published within its
// 30 s deadline after the claim), so past it the create that the claim was for can no
// longer be handled, and the alias is free again.
const StaleClaim = 15 * time.Minute

// Accounts is the accounts stream: users and their password hashes, devices and
// access tokens, profiles, filters, forgotten rooms and the local room directory.
// The gateway has checked who may ask for what; the writer decides what must be
// unique or must exist (a user ID, an alias, a device), against Postgres and the
// writes before it in the batch, which is why each user and each alias has one writer.
type Accounts struct {
	Store accounts.Store
	// Now is the writer's clock (time.Now when nil): the time in its records and the
	// age of alias claims.
	Now func() time.Time
}

func (*Accounts) Name() string { return schemas.StreamAccounts }

func (a *Accounts) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	ids := make([]string, len(batch))
	for i, w := range batch {
		ids[i] = w.ID
	}
	known, err := a.Store.KnownWrites(ctx, ids)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	p := &accountsBatch{store: a.Store, ctx: ctx, now: now, users: map[string]*userView{}, aliases: map[string]*aliasView{},
		media: map[string]*mediaView{}, refreshed: map[string]bool{}}
	out := make([]Outcome, len(batch))
	first := map[string]int{}
	for i, w := range batch {
		if answer, ok := known[w.ID]; ok {
			out[i] = Outcome{Answer: &schemas.IntentResult{Body: answer}}
			continue
		}
		if j, ok := first[w.ID]; ok {
			// Another copy of a write of this batch: the same answer, appended once.
			ans := schemas.IntentResult{}
			if out[j].Answer != nil {
				ans = *out[j].Answer
			}
			out[i] = Outcome{Answer: &ans}
			continue
		}
		first[w.ID] = i
		if out[i], err = p.prepare(w); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// accountsBatch is what the writes of one batch decided so far, over what Postgres
// holds.
type accountsBatch struct {
	store   accounts.Store
	ctx     context.Context
	now     time.Time
	users   map[string]*userView
	aliases map[string]*aliasView
	media   map[string]*mediaView
	// refreshed are the refresh tokens this batch exchanged.
	refreshed map[string]bool
}

// userView is a user as the batch leaves them.
type userView struct {
	exists  bool
	devices map[string]bool
	// filters are those this batch created, next the ID the next one takes (-1 until
	// read from Postgres).
	filters []createdFilter
	next    int64
	// pending counts the user's unused media reservations (-1 until read).
	pending int
}

type createdFilter struct {
	id     int64
	filter json.RawMessage
}

// aliasView is who holds an alias as the batch leaves it.
type aliasView struct {
	held bool
	accounts.AliasHolder
}

func (p *accountsBatch) prepare(w *schemas.StreamWrite) (Outcome, error) {
	switch w.Op {
	case OpCreateAlias, OpClaimAlias, OpReleaseAlias, OpDeleteAlias:
		var body AliasChange
		if err := decodeStrict(w.Body, &body); err != nil || body.Alias == "" || (body.Room == "") != (w.Op == OpDeleteAlias) {
			return badBody(w.Op), nil
		}
		if body.Alias != w.Key {
			return wrongShard(), nil
		}
		return p.aliasWrite(w, body)
	case OpListRoom:
		var body ListRoom
		if err := decodeStrict(w.Body, &body); err != nil || body.Room == "" {
			return badBody(w.Op), nil
		}
		if body.Room != w.Key {
			return wrongShard(), nil
		}
		return p.record(w, body.Room, schemas.AccountsRecord{Kind: schemas.AccountRoomListed, Room: body.Room, Public: body.Public}), nil
	case OpBlockRoom:
		var body ListRoom
		if err := decodeStrict(w.Body, &body); err != nil || body.Room == "" {
			return badBody(w.Op), nil
		}
		if body.Room != w.Key {
			return wrongShard(), nil
		}
		return p.record(w, body.Room, schemas.AccountsRecord{Kind: schemas.AccountRoomBlocked, Room: body.Room}), nil
	}
	if w.Key != w.User {
		return wrongShard(), nil
	}
	u, err := p.user(w.User)
	if err != nil {
		return Outcome{}, err
	}
	switch w.Op {
	case OpRegister:
		var body Register
		if decodeStrict(w.Body, &body) != nil || body.Device != nil && !validDevice(body.Device) {
			return badBody(w.Op), nil
		}
		if u.exists {
			return Refuse(http.StatusBadRequest, "M_USER_IN_USE", "User ID already taken"), nil
		}
		u.exists = true
		r := schemas.AccountsRecord{Kind: schemas.AccountUserCreated, PasswordHash: body.PasswordHash, Admin: body.Admin}
		if d := body.Device; d != nil {
			u.devices[d.ID] = true
			r.Device, r.DisplayName = d.ID, d.DisplayName
			p.tokens(&r, d)
		}
		return p.record(w, w.User, r), nil
	case OpLogin:
		var body NewDevice
		if decodeStrict(w.Body, &body) != nil || !validDevice(&body) {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		r := schemas.AccountsRecord{Kind: schemas.AccountDeviceCreated, Device: body.ID, DisplayName: body.DisplayName}
		p.tokens(&r, &body)
		if u.devices[body.ID] {
			// A login as a known device keeps its display name.
			r.Kind, r.DisplayName = schemas.AccountTokenAdded, nil
		}
		u.devices[body.ID] = true
		return p.record(w, w.User, r), nil
	case OpSetPassword:
		var body SetPassword
		if decodeStrict(w.Body, &body) != nil {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountPasswordChanged, PasswordHash: body.PasswordHash}), nil
	case OpRefresh:
		var body Refresh
		if decodeStrict(w.Body, &body) != nil || !validDevice(&body.New) || body.New.RefreshHash == nil || len(body.Used) != sha256.Size {
			return badBody(w.Op), nil
		}
		return p.refresh(w, u, body)
	case OpSetAdmin:
		var body SetAdmin
		if decodeStrict(w.Body, &body) != nil {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountAdminSet, Admin: body.Admin}), nil
	case OpReport:
		var body Report
		if decodeStrict(w.Body, &body) != nil || body.Room == "" {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountContentReported, Room: body.Room,
			EventID: body.EventID, Reason: body.Reason, Score: body.Score}), nil
	case OpCreateOpenIDToken:
		var body OpenIDToken
		if decodeStrict(w.Body, &body) != nil || len(body.TokenHash) != sha256.Size || body.Expires <= 0 {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountOpenIDTokenCreated, TokenHash: body.TokenHash,
			Expires: body.Expires}), nil
	case OpDeactivate:
		var body Deactivate
		if decodeStrict(w.Body, &body) != nil {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		clear(u.devices)
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountUserDeactivated, Erase: body.Erase}), nil
	case OpDeleteDevices:
		var body DeleteDevices
		if decodeStrict(w.Body, &body) != nil {
			return badBody(w.Op), nil
		}
		var gone []string
		for d := range u.devices {
			if body.All || slices.Contains(body.Devices, d) {
				gone = append(gone, d)
			}
		}
		if len(gone) == 0 {
			return Outcome{Answer: &schemas.IntentResult{Body: schemas.AccountsAnswer(&schemas.AccountsRecord{
				Kind: schemas.AccountDevicesDeleted, Devices: []string{}})}}, nil
		}
		slices.Sort(gone)
		for _, d := range gone {
			delete(u.devices, d)
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountDevicesDeleted, Devices: gone}), nil
	case OpRenameDevice:
		var body RenameDevice
		if decodeStrict(w.Body, &body) != nil || body.Device == "" {
			return badBody(w.Op), nil
		}
		if !u.devices[body.Device] {
			return unknownDevice(), nil
		}
		if body.DisplayName == nil {
			return Outcome{}, nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountDeviceRenamed, Device: body.Device, DisplayName: body.DisplayName}), nil
	case OpSetProfile:
		var body SetProfile
		if decodeStrict(w.Body, &body) != nil || body.Field != schemas.ProfileDisplayName && body.Field != schemas.ProfileAvatarURL {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountProfileSet, Field: body.Field, Value: body.Value}), nil
	case OpCreateFilter:
		var body CreateFilter
		if decodeStrict(w.Body, &body) != nil || !schemas.IsObject(body.Filter) {
			return badBody(w.Op), nil
		}
		if !u.exists {
			return unknownUser(), nil
		}
		return p.createFilter(w, u, body.Filter)
	case OpSetPusher:
		var body SetPusher
		if decodeStrict(w.Body, &body) != nil || body.Pusher.AppID == "" || body.Pusher.Pushkey == "" ||
			body.Pusher.Kind == "" || !schemas.IsObject(body.Pusher.Data) {
			return badBody(w.Op), nil
		}
		if !u.devices[w.Device] {
			// Deleted since the request was authenticated: its pusher would go with it.
			return Refuse(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "the device setting the pusher is gone"), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountPusherSet, Device: w.Device,
			Pusher: &body.Pusher, Append: body.Append}), nil
	case OpDeletePusher:
		var body schemas.Pusher
		if decodeStrict(w.Body, &body) != nil || body.AppID == "" || body.Pushkey == "" {
			return badBody(w.Op), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountPusherDeleted,
			Pusher: &schemas.Pusher{AppID: body.AppID, Pushkey: body.Pushkey}}), nil
	case OpReserveMedia:
		var body ReserveMedia
		if decodeStrict(w.Body, &body) != nil || !schemas.ValidMediaID(body.ID) || body.LifetimeMS <= 0 {
			return badBody(w.Op), nil
		}
		return p.reserveMedia(w, u, body)
	case OpUploadMedia:
		var body UploadMedia
		if decodeStrict(w.Body, &body) != nil || !schemas.ValidMediaID(body.Media.ID) || !schemas.ValidSHA256(body.Media.SHA256) ||
			body.Media.ContentType == "" || body.Media.Size < 0 || body.Media.Expires != 0 {
			return badBody(w.Op), nil
		}
		return p.uploadMedia(w, body)
	case OpDeleteMedia:
		var body DeleteMedia
		if decodeStrict(w.Body, &body) != nil || !schemas.ValidMediaID(body.ID) {
			return badBody(w.Op), nil
		}
		return p.deleteMedia(w, u, body.ID)
	case OpForgetRoom:
		var body ForgetRoom
		if decodeStrict(w.Body, &body) != nil || body.Room == "" || body.EventID == "" {
			return badBody(w.Op), nil
		}
		return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountRoomForgotten, Room: body.Room, EventID: body.EventID}), nil
	}
	return Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown accounts operation %q", w.Op), nil
}

// createFilter answers the ID of a stored filter equal (as JSON) to filter, as
// Synapse does since clients upload the same filter at every start, or stores it
// under the user's next ID.
func (p *accountsBatch) createFilter(w *schemas.StreamWrite, u *userView, filter json.RawMessage) (Outcome, error) {
	for _, f := range u.filters {
		if jsonEqual(f.filter, filter) {
			return Outcome{Answer: &schemas.IntentResult{Body: schemas.AccountsAnswer(&schemas.AccountsRecord{
				Kind: schemas.AccountFilterCreated, FilterID: f.id})}}, nil
		}
	}
	stored, next, err := p.store.Filter(p.ctx, w.User, filter)
	if err != nil {
		return Outcome{}, err
	}
	if stored != nil {
		return Outcome{Answer: &schemas.IntentResult{Body: schemas.AccountsAnswer(&schemas.AccountsRecord{
			Kind: schemas.AccountFilterCreated, FilterID: *stored})}}, nil
	}
	id := max(next, u.next)
	u.next = id + 1
	u.filters = append(u.filters, createdFilter{id: id, filter: filter})
	return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountFilterCreated, FilterID: id, Filter: filter}), nil
}

// tokens puts d's access token, and its refresh token with the expiry, in r.
func (p *accountsBatch) tokens(r *schemas.AccountsRecord, d *NewDevice) {
	r.TokenHash = d.TokenHash
	if d.RefreshHash != nil {
		r.RefreshHash, r.Expires = d.RefreshHash, p.now.Add(time.Duration(d.LifetimeMS)*time.Millisecond).UnixMilli()
	}
}

// refresh exchanges a refresh token once: the token must be the device's, and not
// exchanged before in this batch (an exchange replaces the device's tokens).
func (p *accountsBatch) refresh(w *schemas.StreamWrite, u *userView, body Refresh) (Outcome, error) {
	used := string(body.Used)
	user, device, err := p.store.RefreshToken(p.ctx, body.Used)
	if err != nil && !errors.Is(err, accounts.ErrNotFound) {
		return Outcome{}, err
	}
	if err != nil || user != w.User || device != body.New.ID || !u.devices[device] || p.refreshed[used] {
		return Refuse(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "unknown refresh token"), nil
	}
	p.refreshed[used] = true
	r := schemas.AccountsRecord{Kind: schemas.AccountTokenAdded, Device: device}
	p.tokens(&r, &body.New)
	return p.record(w, w.User, r), nil
}

func (p *accountsBatch) reserveMedia(w *schemas.StreamWrite, u *userView, body ReserveMedia) (Outcome, error) {
	if u.pending < 0 {
		n, err := p.store.PendingMedia(p.ctx, w.User, p.now)
		if err != nil {
			return Outcome{}, err
		}
		u.pending = n
	}
	if u.pending >= body.MaxPending {
		return Refuse(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many unused media reservations"), nil
	}
	m, err := p.mediaView(body.ID)
	if err != nil {
		return Outcome{}, err
	}
	if m.found {
		return Refuse(http.StatusConflict, "M_UNKNOWN", "media ID %s is taken", body.ID), nil
	}
	expires := p.now.Add(time.Duration(body.LifetimeMS) * time.Millisecond)
	u.pending++
	m.found, m.MediaHolder = true, accounts.MediaHolder{User: w.User, Expires: expires}
	return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountMediaReserved,
		Media: &schemas.Media{ID: body.ID, Expires: expires.UnixMilli(), Authenticated: body.Authenticated}}), nil
}

func (p *accountsBatch) uploadMedia(w *schemas.StreamWrite, body UploadMedia) (Outcome, error) {
	m, err := p.mediaView(body.Media.ID)
	if err != nil {
		return Outcome{}, err
	}
	switch {
	case !body.Reserved && m.found:
		return Refuse(http.StatusConflict, "M_UNKNOWN", "media ID %s is taken", body.Media.ID), nil
	case body.Reserved && (!m.found || !m.Uploaded && !p.now.Before(m.Expires)):
		return Refuse(http.StatusNotFound, "M_NOT_FOUND", "no reservation of media %s", body.Media.ID), nil
	case body.Reserved && m.User != w.User:
		return Refuse(http.StatusForbidden, "M_FORBIDDEN", "media %s was reserved by another user", body.Media.ID), nil
	case body.Reserved && m.Uploaded:
		return Refuse(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media %s is already uploaded", body.Media.ID), nil
	}
	if body.Reserved {
		if u := p.users[w.User]; u != nil && u.pending > 0 {
			u.pending--
		}
	}
	m.found, m.MediaHolder = true, accounts.MediaHolder{User: w.User, Uploaded: true}
	media := body.Media
	return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountMediaUploaded, Media: &media}), nil
}

func (p *accountsBatch) deleteMedia(w *schemas.StreamWrite, u *userView, id string) (Outcome, error) {
	m, err := p.mediaView(id)
	if err != nil {
		return Outcome{}, err
	}
	if !m.found || m.User != w.User {
		return Refuse(http.StatusNotFound, "M_NOT_FOUND", "no media %s of %s", id, w.User), nil
	}
	if !m.Uploaded && u.pending > 0 {
		u.pending--
	}
	m.found = false
	return p.record(w, w.User, schemas.AccountsRecord{Kind: schemas.AccountMediaDeleted, Media: &schemas.Media{ID: id}}), nil
}

func (p *accountsBatch) aliasWrite(w *schemas.StreamWrite, body AliasChange) (Outcome, error) {
	v, err := p.alias(body.Alias)
	if err != nil {
		return Outcome{}, err
	}
	// An alias is held by a room that exists, and for StaleClaim by one being created.
	holds := v.held && (v.RoomExists || p.now.Sub(v.ClaimedAt) < StaleClaim)
	take := func(kind string) Outcome {
		v.held, v.AliasHolder = true, accounts.AliasHolder{Room: body.Room, Creator: w.User, ClaimedAt: p.now, RoomExists: kind == schemas.AccountAliasCreated}
		return p.record(w, body.Alias, schemas.AccountsRecord{Kind: kind, Alias: body.Alias, Room: body.Room})
	}
	switch w.Op {
	case OpCreateAlias:
		if holds {
			return Refuse(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", body.Alias), nil
		}
		return take(schemas.AccountAliasCreated), nil
	case OpClaimAlias:
		// Claiming again for the same room renews the claim.
		if holds && v.Room != body.Room {
			return Refuse(http.StatusBadRequest, "M_ROOM_IN_USE", "room alias %s already taken", body.Alias), nil
		}
		return take(schemas.AccountAliasClaimed), nil
	case OpReleaseAlias:
		if !v.held || v.Room != body.Room {
			return Outcome{}, nil
		}
		v.held = false
		return p.record(w, body.Alias, schemas.AccountsRecord{Kind: schemas.AccountAliasReleased, Alias: body.Alias, Room: body.Room}), nil
	default: // OpDeleteAlias
		if !holds {
			return Refuse(http.StatusNotFound, "M_NOT_FOUND", "room alias %s not found", body.Alias), nil
		}
		if v.Creator != w.User && !body.Moderator {
			return Refuse(http.StatusForbidden, "M_FORBIDDEN", "only the alias's creator, or a user who may change the room's canonical alias, may delete it"), nil
		}
		v.held = false
		return p.record(w, body.Alias, schemas.AccountsRecord{Kind: schemas.AccountAliasDeleted, Alias: body.Alias}), nil
	}
}

// record is the Outcome of a write that makes r: one record, whole, on key's subject.
func (p *accountsBatch) record(w *schemas.StreamWrite, key string, r schemas.AccountsRecord) Outcome {
	r.V, r.Write, r.TS, r.User = schemas.AccountsVersion, w.ID, p.now.UnixMilli(), w.User
	data, _ := schemas.Marshal(r) // an AccountsRecord always marshals
	return Outcome{
		Records: []Record{{Key: []string{key}, Data: data, Wake: []string{w.User}}},
		Answer:  &schemas.IntentResult{Body: schemas.AccountsAnswer(&r)},
	}
}

func (p *accountsBatch) user(id string) (*userView, error) {
	if u, ok := p.users[id]; ok {
		return u, nil
	}
	exists, devices, err := p.store.User(p.ctx, id)
	if err != nil {
		return nil, err
	}
	u := &userView{exists: exists, devices: map[string]bool{}, next: -1, pending: -1}
	for _, d := range devices {
		u.devices[d] = true
	}
	p.users[id] = u
	return u, nil
}

// mediaView is a media ID as the batch leaves it.
type mediaView struct {
	found bool
	accounts.MediaHolder
}

func (p *accountsBatch) mediaView(id string) (*mediaView, error) {
	if v, ok := p.media[id]; ok {
		return v, nil
	}
	h, err := p.store.Media(p.ctx, id)
	if err != nil && !errors.Is(err, accounts.ErrNotFound) {
		return nil, err
	}
	v := &mediaView{found: err == nil, MediaHolder: h}
	p.media[id] = v
	return v, nil
}

func (p *accountsBatch) alias(alias string) (*aliasView, error) {
	if v, ok := p.aliases[alias]; ok {
		return v, nil
	}
	h, err := p.store.Alias(p.ctx, alias)
	if err != nil && !errors.Is(err, accounts.ErrNotFound) {
		return nil, err
	}
	v := &aliasView{held: err == nil, AliasHolder: h}
	p.aliases[alias] = v
	return v, nil
}

func (a *Accounts) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded := make([]*schemas.AccountsRecord, len(recs))
	seqs := make([]uint64, len(recs))
	for i, m := range recs {
		r, err := schemas.DecodeAccounts(m.Data)
		if err != nil {
			return err
		}
		decoded[i], seqs[i] = r, m.Seq
	}
	return accounts.Project(ctx, tx, decoded, seqs)
}

// Row is nil: Synapse has no accounts stream, and its workers log an error for every
// row or position of a stream they do not know, so this stream stays off Redis.
func (a *Accounts) Row(streams.RawMessage) any { return nil }

func validDevice(d *NewDevice) bool {
	return d.ID != "" && len(d.TokenHash) == sha256.Size &&
		(d.RefreshHash == nil || len(d.RefreshHash) == sha256.Size && d.LifetimeMS > 0)
}

// decodeStrict decodes a write's body, refusing unknown fields: bodies come from
// gateways of this build, and a field this writer does not know would be ignored
// silently.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// jsonEqual compares two JSON values as Postgres compares jsonb: by value, whatever
// the spelling.
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func badBody(op string) Outcome {
	return Refuse(http.StatusBadRequest, "M_BAD_JSON", "malformed %s write", op)
}

// wrongShard refuses a write whose shard key is not what it is about: its writer
// could not decide its uniqueness.
func wrongShard() Outcome {
	return Refuse(http.StatusBadRequest, "M_INVALID_PARAM", "the write's key is not the user or alias it is about")
}

func unknownUser() Outcome   { return Refuse(http.StatusNotFound, "M_NOT_FOUND", "unknown user") }
func unknownDevice() Outcome { return Refuse(http.StatusNotFound, "M_NOT_FOUND", "unknown device") }
