package eventbuild

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// The equivalence test's seed: -seed, or EVENTBUILD_SEED, or the time.
var seedFlag = flag.Uint64("seed", 0, "seed of the randomized equivalence test (0: EVENTBUILD_SEED or the time)")

func testSeed(t *testing.T) uint64 {
	seed := *seedFlag
	if seed == 0 {
		if env := os.Getenv("EVENTBUILD_SEED"); env != "" {
			var err error
			if seed, err = strconv.ParseUint(env, 10, 64); err != nil {
				t.Fatalf("EVENTBUILD_SEED: %v", err)
			}
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed %d or EVENTBUILD_SEED=%d)", seed, seed, seed)
	return seed
}

// testKey is a server's identity for the tests.
type testKey struct {
	origin string
	keyID  string
	priv   ed25519.PrivateKey
	signer *Signer
}

func newTestKey(origin, keyID string, seed byte) *testKey {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return &testKey{origin: origin, keyID: keyID, priv: priv, signer: NewSigner(origin, keyID, priv)}
}

// libraryBuild builds e with gomatrixserverlib, as room.go did before this package:
// the redaction target at the top level before version 11, in content from it.
func (k *testKey) libraryBuild(e *Event) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(e.RoomVersion))
	if err != nil {
		return nil, err
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID:   e.Sender,
		RoomID:     e.RoomID,
		Type:       e.Type,
		StateKey:   e.StateKey,
		Content:    spec.RawJSON(e.Content),
		Depth:      e.Depth,
		PrevEvents: orEmpty(e.PrevEvents),
		AuthEvents: orEmpty(e.AuthEvents),
	}
	if e.Redacts != "" {
		if r, _ := rulesFor(e.RoomVersion); !r.redactsInContent {
			proto.Redacts = e.Redacts
		} else if proto.Content, err = withRedacts(e.Content, e.Redacts); err != nil {
			return nil, err
		}
	}
	return verImpl.NewEventBuilderFromProtoEvent(proto).Build(e.Time, spec.ServerName(k.origin), gomatrixserverlib.KeyID(k.keyID), k.priv)
}

// orEmpty gives the library [] for nil: it writes a nil []string as null.
func orEmpty(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// withRedacts sets content.redacts as the persister did before this package.
func withRedacts(content []byte, target string) (spec.RawJSON, error) {
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(content, &m); err != nil {
		return nil, err
	}
	m["redacts"], _ = json.Marshal(target)
	return json.Marshal(m)
}

// verifier checks signatures with the test key only.
type verifier struct{ k *testKey }

func (v verifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	res := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		if string(r.ServerName) != v.k.origin {
			res[i].Error = fmt.Errorf("no key for %s", r.ServerName)
			continue
		}
		res[i].Error = gomatrixserverlib.VerifyJSON(v.k.origin, gomatrixserverlib.KeyID(v.k.keyID), v.k.priv.Public().(ed25519.PublicKey), r.Message)
	}
	return res, nil
}

func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// parts are the event's hash, signature and ID.
type parts struct{ hash, sig, id string }

func (k *testKey) parts(t *testing.T, js []byte, id string) parts {
	var ev struct {
		Hashes     struct{ SHA256 string } `json:"hashes"`
		Signatures map[string]map[string]string
	}
	if err := json.Unmarshal(js, &ev); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	return parts{ev.Hashes.SHA256, ev.Signatures[k.origin][k.keyID], id}
}

// checkContentHash recomputes hashes.sha256 with the library's canonical JSON.
func checkContentHash(js []byte) error {
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(js, &ev); err != nil {
		return err
	}
	var hashes struct{ SHA256 string }
	if err := json.Unmarshal(ev["hashes"], &hashes); err != nil {
		return err
	}
	delete(ev, "hashes")
	delete(ev, "signatures")
	delete(ev, "unsigned")
	unsorted, _ := json.Marshal(ev)
	canonical, err := gomatrixserverlib.CanonicalJSON(unsorted)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(canonical)
	if got := base64.RawStdEncoding.EncodeToString(sum[:]); got != hashes.SHA256 {
		return fmt.Errorf("content hash %s, the event says %s", got, hashes.SHA256)
	}
	return nil
}

// compare builds e both ways and fails unless both give the same event, which the
// library verifies.
func (k *testKey) compare(t *testing.T, e *Event) {
	t.Helper()
	js, id, err := k.signer.Build(e)
	lib, libErr := k.libraryBuild(e)
	if err != nil || libErr != nil {
		t.Fatalf("build: ours %v, library %v\nevent %+v\ncontent %s", err, libErr, e, e.Content)
	}
	if !bytes.Equal(js, lib.JSON()) {
		t.Fatalf("different bytes\nours    %s\nlibrary %s\ncontent %q", js, lib.JSON(), e.Content)
	}
	ours, theirs := k.parts(t, js, id), k.parts(t, lib.JSON(), lib.EventID())
	if ours.hash != theirs.hash || ours.sig != theirs.sig || ours.id != theirs.id {
		t.Fatalf("different hash, signature or ID: ours %+v, library %+v", ours, theirs)
	}
	if err := checkContentHash(js); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(e.RoomVersion))
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(id, js, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), pdu, verifier{k}, userIDForSender); err != nil {
		t.Fatalf("the library does not verify the event: %v: %s", err, js)
	}
}

func TestEquivalence(t *testing.T) {
	seed := testSeed(t)
	// Versions 10 to 12 are the ones rooms are created with; 6 to 9 differ from 10 only
	// in what redactions keep.
	counts := map[string]int{"6": 1000, "7": 1000, "8": 1000, "9": 1000, "10": 10000, "11": 10000, "12": 10000}
	keys := []*testKey{
		newTestKey("example.org", "ed25519:a1", 1),
		newTestKey("localhost:8448", "ed25519:auto", 2),
		newTestKey("[::1]:8448", "ed25519:K_e-y", 3),
	}
	for vi, version := range []string{"6", "7", "8", "9", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			n := counts[version]
			if raceEnabled || testing.Short() {
				// The race detector makes the library's builds ten times slower; the
				// full count runs without it.
				n /= 10
			}
			r := rand.New(rand.NewPCG(seed, uint64(vi)))
			kinds := map[string]int{}
			for range n {
				k := keys[r.IntN(len(keys))]
				g := &gen{r: r, version: version, server: k.origin}
				kind, e := g.event()
				kinds[kind]++
				k.compare(t, e)
			}
			t.Logf("room version %s: %d events identical, by kind %v", version, n, kinds)
		})
	}
}

// TestRoomV12 builds a version 12 room's create event and an event in the room whose ID
// it gives.
func TestRoomV12(t *testing.T) {
	k := newTestKey("example.org", "ed25519:a1", 1)
	empty := ""
	create := &Event{RoomVersion: "12", Sender: "@alice:example.org", Type: "m.room.create", StateKey: &empty,
		Content: []byte(`{"room_version":"12"}`), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1, Time: time.UnixMilli(1700000000000)}
	k.compare(t, create)
	_, createID, err := k.signer.Build(create)
	if err != nil {
		t.Fatal(err)
	}
	alice := "@alice:example.org"
	join := &Event{RoomVersion: "12", RoomID: "!" + createID[1:], Sender: alice, Type: "m.room.member", StateKey: &alice,
		Content: []byte(`{"membership":"join"}`), PrevEvents: []string{createID}, AuthEvents: []string{}, Depth: 2, Time: time.UnixMilli(1700000000001)}
	k.compare(t, join)
	create.RoomID = join.RoomID
	if _, _, err := k.signer.Build(create); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a version 12 create event with a room ID: %v", err)
	}
}
