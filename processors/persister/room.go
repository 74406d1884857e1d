package persister

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/ganglionhq/ganglion/processors/persister/eventbuild"
	"github.com/ganglionhq/ganglion/schemas"
)

// room is the writer's in-memory view of a room it owns: the head of its log subject
// and DAG, and its current state for the auth rules. Only the persister's loop touches it.
type room struct {
	id          string
	version     gomatrixserverlib.IRoomVersion
	lastSeq     uint64
	lastEventID string
	depth       int64
	state       authState
	// senders remembers who sent the room's latest events, for the redaction rule
	// (only the sender may redact below the redact level) on events Postgres may not
	// have yet: they are projected behind their answers.
	senders recentSenders
	// seenAll is set when every intent of the room handled before this writer held it
	// is in the filter of stored intent ids (seen): the room was created here, or its
	// last event when loaded was projected before the filter was built. Its later
	// intents are this writer's (another writer's append makes this one's fail as
	// behind, and the room is loaded again).
	seenAll bool
}

// recentSenders maps the IDs of a room's latest events to their senders; past
// recentSendersMax the oldest are forgotten, and found in Postgres instead.
type recentSenders struct {
	by    map[string]string
	order []string
	next  int
}

const recentSendersMax = 256

func (s *recentSenders) add(eventID, sender string) {
	if s.by == nil {
		s.by = make(map[string]string)
	}
	if len(s.order) < recentSendersMax {
		s.order = append(s.order, eventID)
	} else {
		delete(s.by, s.order[s.next])
		s.order[s.next] = eventID
		s.next = (s.next + 1) % recentSendersMax
	}
	s.by[eventID] = sender
}

func (s *recentSenders) get(eventID string) (string, bool) {
	sender, ok := s.by[eventID]
	return sender, ok
}

// authState is the current state keyed by (type, state_key); it answers the auth rules.
type authState map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU

func (a authState) get(typ, key string) (gomatrixserverlib.PDU, error) {
	return a[gomatrixserverlib.StateKeyTuple{EventType: typ, StateKey: key}], nil
}
func (a authState) Create() (gomatrixserverlib.PDU, error)    { return a.get(spec.MRoomCreate, "") }
func (a authState) JoinRules() (gomatrixserverlib.PDU, error) { return a.get(spec.MRoomJoinRules, "") }
func (a authState) PowerLevels() (gomatrixserverlib.PDU, error) {
	return a.get(spec.MRoomPowerLevels, "")
}
func (a authState) Member(k spec.SenderID) (gomatrixserverlib.PDU, error) {
	return a.get(spec.MRoomMember, string(k))
}
func (a authState) ThirdPartyInvite(k string) (gomatrixserverlib.PDU, error) {
	return a.get(spec.MRoomThirdPartyInvite, k)
}
func (a authState) Valid() bool { return true }

// userIDForSender maps sender IDs to user IDs; they are the same in the room versions
// we create (pseudo-IDs arrive with later room versions).
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// undo records how to take back events applied to a room whose append failed.
type undo struct {
	lastSeq     uint64
	lastEventID string
	depth       int64
	prev        map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU
}

func (r *room) checkpoint() *undo {
	return &undo{lastSeq: r.lastSeq, lastEventID: r.lastEventID, depth: r.depth,
		prev: map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}}
}

// keep folds a later checkpoint into u, so rolling u back also undoes what came after it.
func (u *undo) keep(later *undo) {
	for k, v := range later.prev {
		if _, seen := u.prev[k]; !seen {
			u.prev[k] = v
		}
	}
}

func (r *room) rollback(u *undo) {
	r.lastSeq, r.lastEventID, r.depth = u.lastSeq, u.lastEventID, u.depth
	for k, pdu := range u.prev {
		if pdu == nil {
			delete(r.state, k)
		} else {
			r.state[k] = pdu
		}
	}
}

// apply makes pdu the room's new tip and, for state events, current state.
func (r *room) apply(pdu gomatrixserverlib.PDU, u *undo) {
	r.lastEventID, r.depth = pdu.EventID(), pdu.Depth()
	r.senders.add(pdu.EventID(), string(pdu.SenderID()))
	if sk := pdu.StateKey(); sk != nil {
		k := gomatrixserverlib.StateKeyTuple{EventType: pdu.Type(), StateKey: *sk}
		if _, seen := u.prev[k]; !seen {
			u.prev[k] = r.state[k]
		}
		r.state[k] = pdu
	}
}

// refusal is an intent the room's rules refuse; it is answered, not retried.
type refusal struct{ schemas.ResultError }

func (e *refusal) Error() string { return e.Message }

func refuse(status int, code, format string, args ...any) error {
	return &refusal{schemas.ResultError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}}
}

// signer builds and signs events as this server.
type signer struct {
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        []byte
	// own builds the events of room versions 6 to 12, each in a fraction of the
	// library's time; the library builds those of versions 1 to 5, whose events and
	// rules differ more (event ID formats, no canonical JSON integers).
	own *eventbuild.Signer
}

func newSigner(serverName spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) signer {
	return signer{serverName: serverName, keyID: keyID, key: key,
		own: eventbuild.NewSigner(string(serverName), string(keyID), key)}
}

// build turns a proto event into a signed event on top of the room's tip and checks it
// against the auth rules and the room's current state.
func (s *signer) build(r *room, sender string, pe *schemas.ProtoEvent, now time.Time) (gomatrixserverlib.PDU, error) {
	prev := []string{}
	if r.lastEventID != "" {
		prev = []string{r.lastEventID}
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, Type: pe.Type, StateKey: pe.StateKey, Content: spec.RawJSON(pe.Content)})
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "M_BAD_JSON", "%s", err.Error())
	}
	refs, err := needed.AuthEventReferences(r.state)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "M_BAD_JSON", "%s", err.Error())
	}
	var pdu gomatrixserverlib.PDU
	if eventbuild.Supports(string(r.version.Version())) {
		pdu, err = s.buildOwn(r, sender, pe, prev, refs, now)
	} else {
		pdu, err = s.buildWithLibrary(r, sender, pe, prev, refs, now)
	}
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, r.state, userIDForSender); err != nil {
		return nil, refuse(http.StatusForbidden, "M_FORBIDDEN", "%s", err.Error())
	}
	return pdu, nil
}

// buildOwn builds with eventbuild, which computes the event ID once; the library takes
// the event as built, without hashing or signing it again. In room version 12 the
// caller would leave the create event out of auth_events (eventbuild writes what it is
// given); createRoom offers no version 12 rooms.
func (s *signer) buildOwn(r *room, sender string, pe *schemas.ProtoEvent, prev, auth []string, now time.Time) (gomatrixserverlib.PDU, error) {
	js, eventID, err := s.own.Build(&eventbuild.Event{
		RoomVersion: string(r.version.Version()),
		RoomID:      r.id,
		Sender:      sender,
		Type:        pe.Type,
		StateKey:    pe.StateKey,
		Content:     pe.Content,
		Redacts:     redactsOf(pe),
		PrevEvents:  prev,
		AuthEvents:  auth,
		Depth:       r.depth + 1,
		Time:        now,
	})
	if err != nil {
		if errors.Is(err, eventbuild.ErrTooLarge) {
			return nil, refuse(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "%s", err.Error())
		}
		return nil, refuse(http.StatusBadRequest, "M_BAD_JSON", "%s", err.Error())
	}
	pdu, err := r.version.NewEventFromTrustedJSONWithEventID(eventID, js, false)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "M_BAD_JSON", "%s", err.Error())
	}
	return pdu, nil
}

// buildWithLibrary builds the events of room versions before 6 (all of which carry a
// redaction's target at the top level) with gomatrixserverlib.
func (s *signer) buildWithLibrary(r *room, sender string, pe *schemas.ProtoEvent, prev, auth []string, now time.Time) (gomatrixserverlib.PDU, error) {
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID:   sender,
		RoomID:     r.id,
		Type:       pe.Type,
		StateKey:   pe.StateKey,
		Content:    spec.RawJSON(pe.Content),
		Redacts:    redactsOf(pe),
		PrevEvents: prev,
		AuthEvents: auth,
		Depth:      r.depth + 1,
	}
	pdu, err := r.version.NewEventBuilderFromProtoEvent(proto).Build(now, s.serverName, s.keyID, s.key)
	if err != nil {
		var ve gomatrixserverlib.EventValidationError
		if errors.As(err, &ve) && ve.Code == gomatrixserverlib.EventValidationTooLarge {
			return nil, refuse(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "%s", ve.Message)
		}
		return nil, refuse(http.StatusBadRequest, "M_BAD_JSON", "%s", err.Error())
	}
	return pdu, nil
}

// redactsOf is the target of a redaction; other events have none.
func redactsOf(pe *schemas.ProtoEvent) string {
	if pe.Type == spec.MRoomRedaction {
		return pe.Redacts
	}
	return ""
}

// canRedactOthers reports whether sender's power level reaches the room's redact level.
func canRedactOthers(r *room, sender string) bool {
	plEvent, _ := r.state.PowerLevels()
	if plEvent == nil {
		create, _ := r.state.Create()
		return create != nil && string(create.SenderID()) == sender
	}
	pl, err := plEvent.PowerLevels()
	if err != nil {
		return false
	}
	return pl.UserLevel(spec.SenderID(sender)) >= pl.Redact
}

// authoriseJoin returns ev with join_authorised_via_users_server set when ev is a join
// the gateway found allowed into a room whose join rule is restricted and whose sender
// is neither joined nor invited: it names the local member with the highest power
// level who may invite (the lowest user ID among equals), as Synapse picks one. Other
// events are returned as they are.
func authoriseJoin(r *room, server spec.ServerName, sender string, ev *schemas.ProtoEvent) (*schemas.ProtoEvent, error) {
	if !ev.AllowedJoin || ev.Type != spec.MRoomMember || ev.StateKey == nil || *ev.StateKey != sender {
		return ev, nil
	}
	rules, _ := r.state.JoinRules()
	if rules == nil {
		return ev, nil
	}
	if rule, _ := rules.JoinRule(); rule != spec.Restricted && rule != spec.KnockRestricted {
		return ev, nil
	}
	if prev, _ := r.state.Member(spec.SenderID(sender)); prev != nil {
		if m, _ := prev.Membership(); m == spec.Join || m == spec.Invite {
			return ev, nil
		}
	}
	creator := ""
	if create, _ := r.state.Create(); create != nil {
		creator = string(create.SenderID())
	}
	levels, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(r.state, creator)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN", "the room's power levels cannot be read")
	}
	via, best := "", int64(0)
	for key, pdu := range r.state {
		if key.EventType != spec.MRoomMember {
			continue
		}
		user, err := spec.NewUserID(key.StateKey, true)
		if err != nil || user.Domain() != server {
			continue
		}
		if m, _ := pdu.Membership(); m != spec.Join {
			continue
		}
		level := levels.UserLevel(spec.SenderID(key.StateKey))
		if level < levels.Invite || (via != "" && (level < best || level == best && key.StateKey > via)) {
			continue
		}
		via, best = key.StateKey, level
	}
	if via == "" {
		return nil, refuse(http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN", "no member of this server may let you join the room")
	}
	content := map[string]json.RawMessage{}
	if err := json.Unmarshal(ev.Content, &content); err != nil {
		return nil, refuse(http.StatusBadRequest, "M_BAD_JSON", "member content is not an object")
	}
	content["join_authorised_via_users_server"], _ = json.Marshal(via)
	out := *ev
	out.Content, _ = json.Marshal(content)
	return &out, nil
}
