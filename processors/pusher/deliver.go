package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	mautrix "maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/persist/pushers"
	"github.com/ganglionhq/ganglion/streams"
)

// Delivery to push gateways, with Synapse's backoff: one second doubling on a gateway
// error or an unreachable gateway, and a notification that could not be delivered for
// a day is given up.
const (
	// DeliveryTimeout bounds one request to a push gateway.
	DeliveryTimeout = 10 * time.Second
	firstBackoff    = time.Second
	maxBackoff      = 10 * time.Minute
	giveUpAfter     = 24 * time.Hour
	deliveryPage    = 50
	// maxGatewayAnswer bounds what is read of a gateway's answer.
	maxGatewayAnswer = 64 << 10
)

// ErrBlockedAddress is the error of a request to an address an outbound client may
// not reach.
var ErrBlockedAddress = errors.New("the address is in a blocked IP range")

// NewOutboundClient is the HTTP client pushers reach push gateways with (and the
// appservice sender its services): each request bounded by timeout, and refusing
// addresses in blocked unless they are in allowed (Synapse's ip_range_blacklist and
// ip_range_whitelist), checked on the address actually dialled.
func NewOutboundClient(blocked, allowed []netip.Prefix, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: min(timeout, DeliveryTimeout), Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		ip := ap.Addr().Unmap()
		in := func(ps []netip.Prefix) bool {
			return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(ip) })
		}
		if in(blocked) && !in(allowed) {
			return fmt.Errorf("%w: %s", ErrBlockedAddress, ip)
		}
		return nil
	}}
	transport := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute,
		ResponseHeaderTimeout: timeout}
	return &http.Client{Transport: transport, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// deliverer delivers the notifications of the pushers of this instance's users, one
// worker per pusher with something to deliver: in order for each pusher, and a slow or
// failing gateway holds up only its own pushers.
type deliverer struct {
	db *persist.DB
	// projection is waited for before a notification's event is read.
	projection Projection
	notes      notifications.Store
	pushers    pushers.Store
	client     *http.Client
	// remove deletes a pusher whose pushkey its gateway rejected.
	remove func(ctx context.Context, k pushers.Key) error
	// mine tells the users whose pushers this instance delivers to.
	mine  func(user string) bool
	log   *zap.Logger
	sleep func(ctx context.Context, d time.Duration) error

	workers *streams.Workers[pushers.Key]

	mu sync.Mutex
	// pending are users with notifications whose pushers are still to be kicked;
	// woken tells run.
	pending map[string]bool
	woken   chan struct{}
}

// notify has the pushers of users kicked, off the caller's path (finding them is a
// query).
func (d *deliverer) notify(users []string) {
	d.mu.Lock()
	for _, u := range users {
		d.pending[u] = true
	}
	d.mu.Unlock()
	select {
	case d.woken <- struct{}{}:
	default:
	}
}

// run kicks the pushers of the users notify names until ctx ends; users whose pushers
// could not be read are tried again a moment later.
func (d *deliverer) run(ctx context.Context) {
	for {
		select {
		case <-d.woken:
		case <-ctx.Done():
			return
		}
		d.mu.Lock()
		users := slices.Collect(maps.Keys(d.pending))
		clear(d.pending)
		d.mu.Unlock()
		if len(users) == 0 {
			continue // a wake-up whose users an earlier one took
		}
		if err := d.wake(ctx, users); err != nil {
			d.log.Warn("could not start deliveries; trying again", zap.Error(err))
			if d.sleep(ctx, firstBackoff) != nil {
				return
			}
			d.notify(users)
		}
	}
}

// wake kicks the pushers of users, or with nil the pushers of every user, that are
// this instance's.
func (d *deliverer) wake(ctx context.Context, users []string) error {
	list, err := d.pushers.OfUsers(ctx, users)
	if err != nil {
		return err
	}
	for _, p := range list {
		if d.mine(p.User) {
			d.workers.Kick(ctx, p.Key())
		}
	}
	return nil
}

// pass delivers the pusher's notifications after its delivered position until none is
// left, the pusher is gone, or ctx ends.
func (d *deliverer) pass(ctx context.Context, k pushers.Key) {
	for {
		more, err := d.deliverPage(ctx, k)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("push delivery failed; trying again", zap.String("user", k.User), zap.String("app_id", k.AppID), zap.Error(err))
			if d.sleep(ctx, firstBackoff) != nil {
				return
			}
			continue
		}
		if !more {
			return
		}
	}
}

// deliverPage delivers the next page of the pusher's notifications and reports
// whether there may be more.
func (d *deliverer) deliverPage(ctx context.Context, k pushers.Key) (bool, error) {
	p, ok, err := d.pushers.Get(ctx, k)
	if err != nil || !ok {
		return false, err
	}
	from, _, err := d.pushers.Delivered(ctx, k)
	if err != nil {
		return false, err
	}
	list, err := d.notes.After(ctx, k.User, from, deliveryPage)
	if err != nil {
		return false, err
	}
	for _, n := range list {
		// A pusher gets what happens after it was set.
		if n.TS >= p.TS {
			rejected, err := d.deliver(ctx, p, n)
			if err != nil {
				return false, err
			}
			if rejected {
				d.log.Info("push gateway rejected the pushkey; removing the pusher", zap.String("user", k.User), zap.String("app_id", k.AppID))
				return false, d.remove(ctx, k)
			}
		}
		if err := d.pushers.SetDelivered(ctx, k, n.Pos); err != nil {
			return false, err
		}
	}
	return len(list) == deliveryPage, nil
}

// deliver posts one notification to the pusher's gateway until the gateway takes it
// (2xx: rejected says whether it named the pushkey rejected), refuses it for good
// (4xx: given up), or a day has gone; only ctx's end is an error.
func (d *deliverer) deliver(ctx context.Context, p pushers.Stored, n notifications.Notification) (rejected bool, err error) {
	d.projection.WaitPosition(ctx, n.Pos.Seq)
	if err := ctx.Err(); err != nil {
		return false, err
	}
	body, err := d.body(ctx, p, n)
	if err != nil {
		return false, err
	}
	var url struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(p.Data, &url)
	first := time.Now()
	backoff := firstBackoff
	for {
		status, answer, err := d.post(ctx, url.URL, body)
		switch {
		case err == nil && status/100 == 2:
			var a struct {
				Rejected []string `json:"rejected"`
			}
			_ = json.Unmarshal(answer, &a)
			return slices.Contains(a.Rejected, p.Pushkey), nil
		case err == nil && status/100 == 4:
			d.log.Warn("push gateway refused a notification; giving it up", zap.String("user", p.User),
				zap.String("event_id", n.EventID), zap.Int("status", status))
			return false, nil
		case ctx.Err() != nil:
			return false, ctx.Err()
		case time.Since(first) > giveUpAfter:
			d.log.Warn("push gateway unreachable for a day; giving up a notification", zap.String("user", p.User),
				zap.String("event_id", n.EventID))
			return false, nil
		}
		d.log.Info("push gateway failed; backing off", zap.String("user", p.User), zap.Int("status", status),
			zap.Error(err), zap.Duration("backoff", backoff))
		if err := d.sleep(ctx, backoff); err != nil {
			return false, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (d *deliverer) post(ctx context.Context, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(res.Body, maxGatewayAnswer))
	return res.StatusCode, answer, err
}

// pushBody is the Push Gateway API's request.
type pushBody struct {
	Notification pushNotification `json:"notification"`
}

type pushNotification struct {
	EventID           string          `json:"event_id"`
	RoomID            string          `json:"room_id"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Membership        string          `json:"membership,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Prio              string          `json:"prio"`
	Counts            pushCounts      `json:"counts"`
	Devices           []pushDevice    `json:"devices"`
}

type pushCounts struct {
	Unread int `json:"unread"`
}

type pushDevice struct {
	AppID     string          `json:"app_id"`
	Pushkey   string          `json:"pushkey"`
	PushkeyTS int64           `json:"pushkey_ts"`
	Data      json.RawMessage `json:"data,omitempty"`
	Tweaks    map[string]any  `json:"tweaks,omitempty"`
}

// body builds the notification for the pusher: the event, who sent it and where, the
// user's unread count (rooms with unread notifications, as Synapse counts by default),
// and the device with the tweaks of the matching rule; only the event's and room's IDs,
// the counts and the device with format event_id_only.
func (d *deliverer) body(ctx context.Context, p pushers.Stored, n notifications.Notification) ([]byte, error) {
	var actions mautrix.PushActionArray
	if err := json.Unmarshal(n.Actions, &actions); err != nil {
		return nil, fmt.Errorf("pusher: stored actions of %s: %w", n.EventID, err)
	}
	tweaks := map[string]any{}
	for _, a := range actions {
		if a.Action != mautrix.ActionSetTweak {
			continue
		}
		v := a.Value
		if v == nil && a.Tweak == mautrix.TweakHighlight {
			v = true
		}
		tweaks[string(a.Tweak)] = v
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(p.Data, &data); err != nil {
		return nil, fmt.Errorf("pusher: data of a pusher of %s: %w", p.User, err)
	}
	delete(data, "url")
	dev := pushDevice{AppID: p.AppID, Pushkey: p.Pushkey, PushkeyTS: p.TS / 1000, Tweaks: tweaks}
	if len(data) > 0 {
		dev.Data, _ = json.Marshal(data)
	}
	unread, err := d.unreadRooms(ctx, p.User)
	if err != nil {
		return nil, err
	}
	out := pushNotification{EventID: n.EventID, RoomID: n.RoomID, Prio: "low", Counts: pushCounts{Unread: unread}, Devices: []pushDevice{dev}}
	var format struct {
		Format string `json:"format"`
	}
	_ = json.Unmarshal(p.Data, &format)
	ev, err := d.db.GetEvent(ctx, n.EventID)
	if err != nil {
		return nil, err
	}
	var fields struct {
		Type     string          `json:"type"`
		Sender   string          `json:"sender"`
		StateKey *string         `json:"state_key"`
		Content  json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(ev.JSON, &fields); err != nil {
		return nil, fmt.Errorf("pusher: event %s: %w", n.EventID, err)
	}
	if fields.Type == "m.room.encrypted" || tweaks["highlight"] == true || tweaks["sound"] != nil {
		out.Prio = "high"
	}
	if format.Format == "event_id_only" {
		return json.Marshal(pushBody{Notification: out})
	}
	out.Type, out.Sender, out.Content = fields.Type, fields.Sender, fields.Content
	if fields.Type == "m.room.member" && fields.StateKey != nil && *fields.StateKey == p.User {
		out.UserIsTarget = true
		var m struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(fields.Content, &m)
		out.Membership = m.Membership
	}
	state, err := d.db.CurrentState(ctx, n.RoomID)
	if err != nil {
		return nil, err
	}
	for _, se := range state {
		var c struct {
			Name        string `json:"name"`
			Alias       string `json:"alias"`
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(contentOf(se.JSON), &c)
		switch {
		case se.Type == "m.room.name":
			out.RoomName = c.Name
		case se.Type == "m.room.canonical_alias":
			out.RoomAlias = c.Alias
		case se.Type == "m.room.member" && se.StateKey != nil && *se.StateKey == fields.Sender:
			out.SenderDisplayName = c.DisplayName
		}
	}
	return json.Marshal(pushBody{Notification: out})
}

// contentOf is an event's content.
func contentOf(eventJSON []byte) json.RawMessage {
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(eventJSON, &e)
	return e.Content
}

// unreadRooms counts the user's joined rooms with unread notifications.
func (d *deliverer) unreadRooms(ctx context.Context, user string) (int, error) {
	rooms, err := d.db.RoomsOfUser(ctx, user, "join")
	if err != nil {
		return 0, err
	}
	counts, err := d.notes.Counts(ctx, user, rooms)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, threads := range counts {
		for _, c := range threads {
			if c.Notifications > 0 {
				n++
				break
			}
		}
	}
	return n, nil
}
