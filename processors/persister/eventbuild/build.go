// Package eventbuild builds, hashes and signs this server's Matrix events of room
// versions 6 to 12, and computes their event IDs, producing byte for byte what
// gomatrixserverlib's EventBuilder.Build produces for the same input, in one pass over
// the content and with scratch space reused between builds (the library re-encodes
// the event several times over, through reflection).
//
// The event is canonical JSON (keys sorted by code point, no whitespace) with the keys
// auth_events, content, depth, hashes, origin (this server), origin_server_ts,
// prev_events, prev_state ([] on state events), redacts (before room version 11, when set),
// room_id (absent on a version 12 create event), sender, signatures, state_key (state
// events) and type. hashes.sha256 is the SHA-256 of the event without hashes and
// signatures; the signature covers the event redacted by the room version's rules,
// without signatures; the event ID is "$" and the URL-safe SHA-256 of those same signed
// bytes (the reference hash). In room version 12 the room ID is "!" and the create
// event's ID without its "$", and auth_events never lists the create event: the caller
// chooses the auth events and the builder writes what it is given.
//
// Where gomatrixserverlib builds an event from content that the spec and Synapse
// refuse, Build refuses the content with ErrBadJSON, rather than sign an event other
// servers reject:
//   - numbers that are not integers within ±(2^53−1): the library refuses most, but
//     lets through fractions and exponents of zero (0.0, -0.0, 0e5) and exponents with
//     a capital E (1E2, 5E-1);
//   - strings that are not UTF-8 (the library copies them into the event, and turns
//     them into U+FFFD in the redacted copy it signs);
//   - \u escapes of UTF-16 surrogates that do not pair (the library drops a lone one,
//     and makes one U+FFFD of two escapes that do not pair);
//   - duplicate keys in an object (the library writes both);
//   - keys holding ", \ or a control character: the library writes keys unescaped,
//     which is not JSON or, where a backslash makes an escape, another key;
//   - content that is not an object (the library accepts null).
//
// Nesting is bounded as the library bounds it: 9,999 levels, the content object
// counting as one. The event's own strings (type, state_key, sender, room_id, redacts,
// event IDs) are written as the library writes them, bytes that are not UTF-8 becoming
// U+FFFD.
package eventbuild

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"
)

var (
	// ErrBadJSON is content that is not canonical JSON's kind of JSON object.
	ErrBadJSON = errors.New("bad JSON")
	// ErrTooLarge is an event over 65,536 bytes, or a type, state key, sender or room ID
	// over 255 bytes or code points.
	ErrTooLarge = errors.New("too large")
	// ErrInvalid is an event field other than content that the event cannot carry: a
	// sender or room ID that is not one, a room ID where there must be none, a depth or
	// time outside what canonical JSON holds, a room version not supported.
	ErrInvalid = errors.New("invalid event")
)

// The limits of gomatrixserverlib's CheckFields, taken from Synapse.
const (
	maxEventSize = 65536
	maxIDSize    = 255
)

// Supports reports whether Build builds events of roomVersion.
func Supports(roomVersion string) bool {
	_, ok := rulesFor(roomVersion)
	return ok
}

// rules are what the supported room versions differ in. All of them have event IDs
// that are URL-safe hashes (format 3) and enforce canonical JSON's integers.
type rules struct {
	// kept lists the content keys a redaction keeps, by event type.
	kept map[string][]string
	// redactV5 marks the redaction rules of room version 11 (MSC2176): a redaction
	// also drops origin and prev_state, and keeps all of a create event's content.
	redactV5 bool
	// redactsInContent: from version 11, a redaction's target is content.redacts.
	redactsInContent bool
	// domainless: in version 12 room IDs have no server name and the create event
	// carries none.
	domainless bool
}

func rulesFor(roomVersion string) (rules, bool) {
	switch roomVersion {
	case "6", "7":
		return rules{kept: keptV2}, true
	case "8":
		return rules{kept: keptV3}, true
	case "9", "10":
		return rules{kept: keptV4}, true
	case "11":
		return rules{kept: keptV5, redactV5: true, redactsInContent: true}, true
	case "12":
		return rules{kept: keptV5, redactV5: true, redactsInContent: true, domainless: true}, true
	}
	return rules{}, false
}

// A Signer builds events as one server, signing them with one key.
type Signer struct {
	key ed25519.PrivateKey
	// origin is `,"origin":<server name>`, written into every event.
	origin []byte
	// signatures is `,"signatures":{<server name>:{<key ID>:"`, which the signature
	// follows.
	signatures []byte
}

// NewSigner returns a Signer for server origin and its key keyID. key must be an
// ed25519 private key (ed25519.Sign panics on anything else).
func NewSigner(origin, keyID string, key ed25519.PrivateKey) *Signer {
	s := &Signer{key: key}
	s.origin = appendString(append(s.origin, `,"origin":`...), origin)
	// A valid server name or key ID needs no escaping as a key, which is as well: the
	// library writes keys unescaped, so only Build would give valid JSON otherwise.
	s.signatures = appendString(append(s.signatures, `,"signatures":{`...), origin)
	s.signatures = appendString(append(s.signatures, `:{`...), keyID)
	s.signatures = append(s.signatures, `:"`...)
	return s
}

// An Event is what Build turns into a signed event.
type Event struct {
	// RoomVersion is one of "6" to "12".
	RoomVersion string
	// RoomID is empty for the create event of room version 12.
	RoomID string
	Sender string
	Type   string
	// StateKey is nil for events that are not state events.
	StateKey *string
	// Content is the event's content as the client sent it: a JSON object.
	Content []byte
	// Redacts is the event a redaction redacts, if not empty. Room version 10 carries
	// it at the top level; later versions in content, where it replaces any "redacts"
	// the content has.
	Redacts string
	// PrevEvents and AuthEvents are event IDs; nil writes [].
	PrevEvents []string
	AuthEvents []string
	Depth      int64
	// Time is origin_server_ts (written in milliseconds).
	Time time.Time
}

// scratch is one build's working space; builds reuse it through scratchPool.
type scratch struct {
	p parser
	// ev is the event as it is written, red its redacted form.
	ev, red []byte
	// kept are the spans of ev holding the content members a redaction keeps.
	kept []span
	sha  hash.Hash
	sum  [sha256.Size]byte
}

var scratchPool = sync.Pool{New: func() any { return &scratch{sha: sha256.New()} }}

// release returns sc to the pool, without the caller's content.
func (sc *scratch) release() {
	sc.p.in = nil
	scratchPool.Put(sc)
}

// Lengths of the unpadded base64 of a SHA-256 hash and of an ed25519 signature.
const (
	hashLen = (sha256.Size*8 + 5) / 6
	sigLen  = (ed25519.SignatureSize*8 + 5) / 6
)

// Build returns the signed event's JSON, which it allocates for the caller, and its
// event ID. Its errors are ErrBadJSON, ErrTooLarge and ErrInvalid, with the reason.
func (s *Signer) Build(e *Event) (json []byte, eventID string, err error) {
	r, ok := rulesFor(e.RoomVersion)
	if !ok {
		return nil, "", fmt.Errorf("%w: room version %q is not supported", ErrInvalid, e.RoomVersion)
	}
	if err := checkHead(e, r); err != nil {
		return nil, "", err
	}
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	root, err := sc.p.parseObject(e.Content)
	if err != nil {
		return nil, "", err
	}
	if err := checkRoomID(e, r); err != nil {
		return nil, "", err
	}
	l := sc.write(s, e, r, root)
	if err := checkFields(e, len(sc.ev)); err != nil {
		return nil, "", err
	}

	// The content hash covers the event without hashes and signatures.
	sc.sha.Reset()
	sc.sha.Write(sc.ev[:l.hashes.start])
	sc.sha.Write(sc.ev[l.hashes.end:l.signatures.start])
	sc.sha.Write(sc.ev[l.signatures.end:])
	base64.RawStdEncoding.Encode(sc.ev[l.hashes.end-2-hashLen:], sc.sha.Sum(sc.sum[:0]))

	// The signature and the reference hash both cover the redacted event without
	// signatures: the library signs it, and later hashes the redacted signed event
	// with its signatures removed again, which is the same bytes.
	sc.red = append(sc.red[:0], sc.ev[:l.content.start]...)
	sc.red = append(sc.red, '{')
	for i, k := range sc.kept {
		if i > 0 {
			sc.red = append(sc.red, ',')
		}
		sc.red = append(sc.red, sc.ev[k.start:k.end]...)
	}
	sc.red = append(sc.red, '}')
	from := l.content.end
	for _, cut := range [...]span{l.origin, l.prevState, l.redacts, l.signatures} {
		if cut.end > cut.start {
			sc.red = append(sc.red, sc.ev[from:cut.start]...)
			from = cut.end
		}
	}
	sc.red = append(sc.red, sc.ev[from:]...)
	sig := ed25519.Sign(s.key, sc.red)
	base64.RawStdEncoding.Encode(sc.ev[l.signatures.end-3-sigLen:], sig)
	ref := sha256.Sum256(sc.red)
	var id [1 + hashLen]byte
	id[0] = '$'
	base64.RawURLEncoding.Encode(id[1:], ref[:])

	return append([]byte(nil), sc.ev...), string(id[:]), nil
}

// layout locates the parts of the written event that hashing, redacting and signing
// leave out or fill in; the span of a member starts at the comma before it. origin
// and prevState are empty when the room version's redaction keeps them, and redacts
// when the event has no top-level redacts.
type layout struct {
	content    span // the content object
	hashes     span
	origin     span // redacted away by the version 11 rules
	prevState  span // redacted away by the version 11 rules
	redacts    span // the top-level redacts, which every redaction drops
	signatures span
}

// write writes the event into sc.ev, with room for the hash and the signature, the
// content members a redaction keeps into sc.kept, and returns where the parts are.
func (sc *scratch) write(s *Signer, e *Event, r rules, root int32) layout {
	var l layout
	ev := append(sc.ev[:0], `{"auth_events":`...)
	ev = appendIDs(ev, e.AuthEvents)
	ev = append(ev, `,"content":`...)
	l.content.start = int32(len(ev))
	ev = sc.writeContent(ev, e, r, root)
	l.content.end = int32(len(ev))
	ev = append(ev, `,"depth":`...)
	ev = strconv.AppendInt(ev, e.Depth, 10)

	l.hashes.start = int32(len(ev))
	ev = append(ev, `,"hashes":{"sha256":"`...)
	ev = append(ev, make([]byte, hashLen)...)
	ev = append(ev, `"}`...)
	l.hashes.end = int32(len(ev))

	l.origin.start = int32(len(ev))
	ev = append(ev, s.origin...)
	l.origin.end = int32(len(ev))
	ev = append(ev, `,"origin_server_ts":`...)
	ev = strconv.AppendInt(ev, e.Time.UnixMilli(), 10)
	ev = append(ev, `,"prev_events":`...)
	ev = appendIDs(ev, e.PrevEvents)
	if e.StateKey != nil {
		// Long dropped from the protocol, but Synapse expects the key on state
		// events, and the library writes it.
		l.prevState.start = int32(len(ev))
		ev = append(ev, `,"prev_state":[]`...)
		l.prevState.end = int32(len(ev))
	}
	if !r.redactV5 {
		// The older redaction rules keep both.
		l.origin, l.prevState = span{}, span{}
	}
	if e.Redacts != "" && !r.redactsInContent {
		l.redacts.start = int32(len(ev))
		ev = appendString(append(ev, `,"redacts":`...), e.Redacts)
		l.redacts.end = int32(len(ev))
	}
	if e.RoomID != "" {
		ev = appendString(append(ev, `,"room_id":`...), e.RoomID)
	}
	ev = appendString(append(ev, `,"sender":`...), e.Sender)

	l.signatures.start = int32(len(ev))
	ev = append(ev, s.signatures...)
	ev = append(ev, make([]byte, sigLen)...)
	ev = append(ev, `"}}`...)
	l.signatures.end = int32(len(ev))

	if e.StateKey != nil {
		ev = appendString(append(ev, `,"state_key":`...), *e.StateKey)
	}
	ev = appendString(append(ev, `,"type":`...), e.Type)
	sc.ev = append(ev, '}')
	return l
}

// appendIDs appends a list of event IDs.
func appendIDs(dst []byte, ids []string) []byte {
	dst = append(dst, '[')
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, id)
	}
	return append(dst, ']')
}

// writeContent appends the canonical content, with the redaction target in it when
// the version puts it there, noting in sc.kept the members a redaction keeps.
func (sc *scratch) writeContent(dst []byte, e *Event, r rules, root int32) []byte {
	keep, all := r.kept[e.Type], r.redactV5 && e.Type == "m.room.create"
	sc.kept = sc.kept[:0]
	p := &sc.p
	inject := r.redactsInContent && e.Redacts != ""
	dst = append(dst, '{')
	open := len(dst)
	for c := p.nodes[root].child; c != none || inject; {
		if len(dst) > open {
			dst = append(dst, ',')
		}
		start := len(dst)
		var kept bool
		if inject && (c == none || string(p.key(c)) >= "redacts") {
			// The target goes where its key sorts, replacing the content's own.
			inject = false
			if c != none && string(p.key(c)) == "redacts" {
				c = p.nodes[c].next
			}
			dst = appendString(append(dst, `"redacts":`...), e.Redacts)
			kept = all || contains(keep, "redacts")
		} else {
			kept = all || contains(keep, p.key(c))
			dst = p.writeMember(dst, c)
			c = p.nodes[c].next
		}
		if kept {
			sc.kept = append(sc.kept, span{int32(start), int32(len(dst))})
		}
	}
	return append(dst, '}')
}
