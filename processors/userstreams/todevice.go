package userstreams

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/todevice"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Operations of the to_device stream.
const (
	// OpToDeviceSend delivers one /sendToDevice request: ToDeviceSend. Its write is
	// keyed by the sender, so one writer sees every transaction id of a device.
	OpToDeviceSend = "send"
	// OpToDeviceDelete empties inboxes: ToDeviceDelete. Its write is keyed by the
	// inboxes' owner.
	OpToDeviceDelete = "delete"
)

// ToDeviceSend is the body of OpToDeviceSend, sent by the write's user and device.
type ToDeviceSend struct {
	Type string `json:"type"`
	Txn  string `json:"txn"`
	// Messages maps local users to a content per device ID; a user's only entry "*"
	// means every device of theirs, as in Synapse (beside other entries, "*" names no
	// device). Unknown users and devices are skipped.
	Messages map[string]map[string]json.RawMessage `json:"messages"`
}

// ToDeviceDelete is the body of OpToDeviceDelete: the write user's devices whose inbox
// is emptied up to UpTo, a position the device has synced past; with UpTo 0 the devices
// are gone, and everything of theirs goes, the transaction ids they used included.
type ToDeviceDelete struct {
	Devices []string `json:"devices"`
	UpTo    uint64   `json:"up_to,omitempty"`
}

// txnKey is the last part of the subject that holds a sending device's transaction
// ids, beside the inbox subjects (user, device).
const txnKey = "txn"

// ToDevice is the to_device stream: one subject per (user, device) holding the messages
// waiting for that device, bounded by Topology.ToDeviceLimit, and one per sending device
// holding the transaction ids it used. A device's messages are purged from the log and
// deleted from Postgres once it has synced past them.
type ToDevice struct {
	DB       *persist.DB
	Store    todevice.Store
	JS       jetstream.JetStream
	Topology streams.Topology
	Log      *zap.Logger

	// log is the stream's JetStream handle, looked up on the first purge; Prepare runs
	// under the writer's lock, so it needs none of its own.
	log jetstream.Stream
	// recent are the transaction ids of the latest sends, among them every one whose
	// records may not be projected yet (the stream is Pipelined).
	recent *streams.Recent[schemas.ToDeviceTxn, struct{}]
}

func (*ToDevice) Name() string { return schemas.StreamToDevice }

// Pipeline: a to-device message is read back only through /sync, by another device,
// and a send's Prepare reads only transaction ids from Postgres, those not projected
// yet being in recent.
func (t *ToDevice) Pipeline(unprojected int) {
	t.recent = streams.NewRecent[schemas.ToDeviceTxn, struct{}](unprojected)
}

// Settled forgets the transaction ids held: some may be of sends whose records never
// reached the log, and Postgres now holds those that did.
func (t *ToDevice) Settled() { t.forgetRecent() }

// forgetRecent empties recent, once Postgres holds every transaction id in it.
func (t *ToDevice) forgetRecent() {
	if t.recent != nil {
		t.recent = streams.NewRecent[schemas.ToDeviceTxn, struct{}](t.recent.Cap())
	}
}

// Flushes: a deletion for devices that are gone deletes all of their rows, so the
// projections in flight must be in first. One up to a position leaves them alone:
// the position is visible, so projected, and the rows in flight are past it.
func (t *ToDevice) Flushes(w *schemas.StreamWrite) bool {
	if w.Op != OpToDeviceDelete {
		return false
	}
	var body ToDeviceDelete
	return json.Unmarshal(w.Body, &body) != nil || body.UpTo == 0
}

func (t *ToDevice) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	out := make([]Outcome, len(batch))
	sends := make([]*ToDeviceSend, len(batch))
	var txns []schemas.ToDeviceTxn
	recipients := map[string]bool{}
	for i, w := range batch {
		switch w.Op {
		case OpToDeviceSend:
			var body ToDeviceSend
			if err := json.Unmarshal(w.Body, &body); err != nil || body.Type == "" || body.Txn == "" || w.Device == "" {
				out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "a to-device send needs a device, a type, a transaction id and messages")
				continue
			}
			sends[i] = &body
			txns = append(txns, schemas.ToDeviceTxn{Sender: w.User, Device: w.Device, Txn: body.Txn})
			for u := range body.Messages {
				recipients[u] = true
			}
		case OpToDeviceDelete:
			var body ToDeviceDelete
			if err := json.Unmarshal(w.Body, &body); err != nil || len(body.Devices) == 0 {
				out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "a to-device deletion needs devices")
				continue
			}
			// Positions up to UpTo are visible, so projected, whichever writer appended
			// them: the rows to delete are all there. Records of this batch come after.
			if err := t.delete(ctx, w.User, body); err != nil {
				return nil, err
			}
		default:
			out[i] = Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown to-device operation %q", w.Op)
		}
	}
	if len(txns) == 0 {
		return out, nil
	}
	// Two independent lookups: side by side, the batch waits for one round trip.
	var known map[schemas.ToDeviceTxn]bool
	var devices map[string][]string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { known, err = t.knownTxns(gctx, txns); return err })
	g.Go(func() (err error) {
		devices, err = t.DB.DeviceIDs(gctx, slices.Sorted(maps.Keys(recipients)))
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, body := range sends {
		if body == nil {
			continue
		}
		txn := schemas.ToDeviceTxn{Sender: batch[i].User, Device: batch[i].Device, Txn: body.Txn}
		if known[txn] {
			continue // a retry: answered as the first time, delivering nothing
		}
		known[txn] = true // and so is a second copy in this batch
		if t.recent != nil {
			t.recent.Add(txn, struct{}{})
		}
		out[i].Records = t.records(txn, body, devices)
	}
	return out, nil
}

// knownTxns are those of txns already sent: in recent, or else in Postgres. A
// transaction id leaves recent only after its records are projected.
func (t *ToDevice) knownTxns(ctx context.Context, txns []schemas.ToDeviceTxn) (map[schemas.ToDeviceTxn]bool, error) {
	if t.recent == nil {
		return t.Store.KnownTxns(ctx, txns)
	}
	var ask []schemas.ToDeviceTxn
	for _, txn := range txns {
		if _, ok := t.recent.Get(txn); !ok {
			ask = append(ask, txn)
		}
	}
	known := map[schemas.ToDeviceTxn]bool{}
	if len(ask) > 0 {
		var err error
		if known, err = t.Store.KnownTxns(ctx, ask); err != nil {
			return nil, err
		}
	}
	for _, txn := range txns {
		if _, ok := t.recent.Get(txn); ok {
			known[txn] = true
		}
	}
	return known, nil
}

// records are the messages of one send, recipients and devices in a stable order (so a
// send handled again makes the same records, deduplicated by their ids), then its
// transaction id, last: once that is in the log, so is every message before it.
func (t *ToDevice) records(txn schemas.ToDeviceTxn, body *ToDeviceSend, devices map[string][]string) []Record {
	var recs []Record
	add := func(user, device string, content json.RawMessage) {
		data, _ := schemas.Marshal(schemas.ToDeviceRecord{V: schemas.ToDeviceVersion, Message: &schemas.ToDeviceMessage{
			User: user, Device: device, Sender: txn.Sender, Type: body.Type, Content: content}})
		recs = append(recs, Record{Key: []string{user, device}, Data: data, Wake: []string{user}})
	}
	for _, user := range slices.Sorted(maps.Keys(body.Messages)) {
		byDevice, have := body.Messages[user], devices[user]
		if all, ok := byDevice["*"]; ok && len(byDevice) == 1 {
			for _, d := range have {
				add(user, d, all)
			}
			continue
		}
		for _, d := range slices.Sorted(maps.Keys(byDevice)) {
			if _, ok := slices.BinarySearch(have, d); ok {
				add(user, d, byDevice[d])
			}
		}
	}
	data, _ := schemas.Marshal(schemas.ToDeviceRecord{V: schemas.ToDeviceVersion, Txn: &txn})
	return append(recs, Record{Key: []string{txn.Sender, txn.Device, txnKey}, Data: data})
}

// delete purges the devices' messages (and, for devices that are gone, their
// transaction ids) from the log, then deletes their rows: rows kept after a failed purge
// are deleted by the next deletion, while the reverse would let a replay bring back
// messages already delivered.
func (t *ToDevice) delete(ctx context.Context, user string, body ToDeviceDelete) error {
	if t.log == nil {
		st, err := t.JS.Stream(ctx, t.Topology.UserStreamName(schemas.StreamToDevice))
		if err != nil {
			return fmt.Errorf("to-device stream: %w", err)
		}
		t.log = st
	}
	for _, d := range body.Devices {
		inbox := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(t.Topology.UserStreamSubject(schemas.StreamToDevice, user, d))}
		if body.UpTo > 0 {
			// Everything below the sequence goes.
			inbox = append(inbox, jetstream.WithPurgeSequence(body.UpTo+1))
		}
		if err := t.log.Purge(ctx, inbox...); err != nil {
			return fmt.Errorf("purge the inbox of %s %s: %w", user, d, err)
		}
		if body.UpTo == 0 {
			if err := t.log.Purge(ctx, jetstream.WithPurgeSubject(t.Topology.UserStreamSubject(schemas.StreamToDevice, user, d, txnKey))); err != nil {
				return fmt.Errorf("purge the transactions of %s %s: %w", user, d, err)
			}
		}
	}
	if body.UpTo == 0 {
		// The devices' transaction ids may be used again. Every one held is projected
		// (Flushes), so Postgres tells the others.
		t.forgetRecent()
	}
	return t.Store.Delete(ctx, user, body.Devices, body.UpTo)
}

func (t *ToDevice) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded := make([]*schemas.ToDeviceRecord, 0, len(recs))
	seqs := make([]uint64, 0, len(recs))
	for _, m := range recs {
		r, err := schemas.DecodeToDevice(m.Data)
		if err != nil {
			return err
		}
		decoded = append(decoded, r)
		seqs = append(seqs, m.Seq)
	}
	dropped, err := todevice.Project(ctx, tx, decoded, seqs, t.Topology.ToDeviceLimit())
	if err != nil {
		return err
	}
	for _, d := range dropped {
		t.Log.Warn("to-device inbox full: dropped its oldest messages", zap.String("user_id", d.User),
			zap.String("device_id", d.Device), zap.Int("dropped", d.Count), zap.Int64("limit", t.Topology.ToDeviceLimit()))
	}
	return nil
}

func (t *ToDevice) Row(m streams.RawMessage) any {
	r, err := schemas.DecodeToDevice(m.Data)
	if err != nil || r.Message == nil {
		return nil
	}
	return schemas.ToDeviceRow{Entity: r.Message.User}
}
