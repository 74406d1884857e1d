package userstreams

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/receipts"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// OpReceiptPut sets receipts of one user in one room (the write's key): ReceiptPut.
const OpReceiptPut = "put"

// ReceiptPut is the body of OpReceiptPut: the receipts of one request (read_markers may
// send m.read and m.read.private at once).
type ReceiptPut struct {
	Receipts []ReceiptWrite `json:"receipts"`
}

// ReceiptWrite is one receipt: the gateway has checked that the event is in the room
// and found its position in the EVENTS log.
type ReceiptWrite struct {
	Type     string `json:"type"`
	EventID  string `json:"event_id"`
	Thread   string `json:"thread,omitempty"`
	EventSeq uint64 `json:"event_seq"`
	EventIdx int    `json:"event_idx"`
}

// Receipts is the receipts stream: the latest m.read and m.read.private receipt of each
// (room, user, thread). Sharded by room. The gateway has checked membership, the event
// and the thread; the writer keeps each receipt moving forward only: a receipt for an
// event at or before the current receipt's event is ignored, as Synapse ignores it.
type Receipts struct {
	Store receipts.Store
}

func (*Receipts) Name() string { return schemas.StreamReceipts }

func (rs *Receipts) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	out := make([]Outcome, len(batch))
	bodies := make([]ReceiptPut, len(batch))
	var keys []receipts.Key
	for i, w := range batch {
		if w.Op != OpReceiptPut {
			out[i] = Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown receipts operation %q", w.Op)
			continue
		}
		if err := json.Unmarshal(w.Body, &bodies[i]); err != nil || !strings.HasPrefix(w.Key, "!") || !validReceipts(bodies[i].Receipts) {
			out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "receipts need a room, a known type and an event")
			bodies[i].Receipts = nil
			continue
		}
		for _, r := range bodies[i].Receipts {
			keys = append(keys, receipts.Key{Room: w.Key, Type: r.Type, User: w.User, Thread: r.Thread})
		}
	}
	// Where each receipt stands, as this batch leaves it.
	current, err := rs.Store.EventPositions(ctx, keys)
	if err != nil {
		return nil, err
	}
	for i, w := range batch {
		for _, r := range bodies[i].Receipts {
			k := receipts.Key{Room: w.Key, Type: r.Type, User: w.User, Thread: r.Thread}
			at := persist.Pos{Seq: r.EventSeq, Idx: r.EventIdx}
			if cur, ok := current[k]; ok && !cur.Less(at) {
				continue // not ahead of the current receipt: ignored, as Synapse does
			}
			current[k] = at
			data, err := schemas.Marshal(schemas.ReceiptRecord{V: schemas.ReceiptsVersion, Room: k.Room, Type: k.Type,
				User: k.User, Thread: k.Thread, EventID: r.EventID, EventSeq: r.EventSeq, EventIdx: r.EventIdx, TS: w.IssuedAtMS})
			if err != nil {
				return nil, err
			}
			// A private receipt concerns its owner only; the others every member.
			wake := []string{k.Room}
			if k.Type == schemas.ReceiptReadPrivate {
				wake = []string{k.User}
			}
			out[i].Records = append(out[i].Records, Record{Key: []string{k.Room, k.Type, k.User, k.Thread}, Data: data, Wake: wake})
		}
	}
	return out, nil
}

func validReceipts(rs []ReceiptWrite) bool {
	if len(rs) == 0 {
		return false
	}
	for _, r := range rs {
		if (r.Type != schemas.ReceiptRead && r.Type != schemas.ReceiptReadPrivate) || !strings.HasPrefix(r.EventID, "$") {
			return false
		}
	}
	return true
}

func (rs *Receipts) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded, seqs, err := decodeReceipts(recs)
	if err != nil {
		return err
	}
	return receipts.Project(ctx, tx, decoded, seqs)
}

// QueueProject: a receipt's projection is one statement (Queuer).
func (rs *Receipts) QueueProject(b *pgx.Batch, recs []streams.RawMessage) error {
	decoded, seqs, err := decodeReceipts(recs)
	if err != nil {
		return err
	}
	receipts.QueueProject(b, decoded, seqs)
	return nil
}

func decodeReceipts(recs []streams.RawMessage) ([]*schemas.ReceiptRecord, []uint64, error) {
	decoded := make([]*schemas.ReceiptRecord, 0, len(recs))
	seqs := make([]uint64, 0, len(recs))
	for _, m := range recs {
		r, err := schemas.DecodeReceipt(m.Data)
		if err != nil {
			return nil, nil, err
		}
		decoded = append(decoded, r)
		seqs = append(seqs, m.Seq)
	}
	return decoded, seqs, nil
}

func (rs *Receipts) Row(m streams.RawMessage) any {
	r, err := schemas.DecodeReceipt(m.Data)
	if err != nil {
		return nil
	}
	return schemas.ReceiptRow{Room: r.Room, Type: r.Type, User: r.User, EventID: r.EventID, Thread: r.Thread, TS: r.TS}
}
