// Package todevice stores the projection of the to_device stream: the messages waiting
// in each device's inbox and the transaction ids each sending device used.
package todevice

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/schemas"
)

// Store reads and deletes the to-device tables.
type Store struct{ Pool *pgxpool.Pool }

// Message is one message of an inbox, as /sync returns it, with its stream position.
type Message struct {
	Pos  uint64
	JSON json.RawMessage
}

// Dropped counts the oldest messages of one device's inbox that a projection dropped to
// keep it within its bound.
type Dropped struct {
	User, Device string
	Count        int
}

// Project stores records appended at positions seqs and keeps every inbox, and every
// sending device's transactions, to the limit newest (as the log's subjects are). It
// returns the inboxes it cut. Replaying records already stored changes nothing.
func Project(ctx context.Context, tx pgx.Tx, recs []*schemas.ToDeviceRecord, seqs []uint64, limit int64) ([]Dropped, error) {
	var mu, md, mm, tu, td, tt []string
	var ms, ts []int64
	for i, r := range recs {
		if m := r.Message; m != nil {
			msg, err := schemas.Marshal(struct {
				Type    string          `json:"type"`
				Sender  string          `json:"sender"`
				Content json.RawMessage `json:"content"`
			}{m.Type, m.Sender, m.Content})
			if err != nil {
				return nil, fmt.Errorf("todevice: project: %w", err)
			}
			mu, md, mm, ms = append(mu, m.User), append(md, m.Device), append(mm, string(msg)), append(ms, int64(seqs[i]))
		}
		if t := r.Txn; t != nil {
			tu, td, tt, ts = append(tu, t.Sender), append(td, t.Device), append(tt, t.Txn), append(ts, int64(seqs[i]))
		}
	}
	b := &pgx.Batch{}
	var dropped []Dropped
	if len(mu) > 0 {
		b.Queue(`INSERT INTO device_inbox (user_id, device_id, stream_id, message)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::json[])
			ON CONFLICT DO NOTHING`, mu, md, ms, mm)
		// Past the bound, the oldest go: everything at or below the newest row beyond it.
		b.Queue(`DELETE FROM device_inbox i USING (
				SELECT d.u, d.dv, (SELECT x.stream_id FROM device_inbox x WHERE x.user_id = d.u AND x.device_id = d.dv
					ORDER BY x.stream_id DESC OFFSET $3 LIMIT 1) AS cut
				FROM (SELECT DISTINCT u, dv FROM unnest($1::text[], $2::text[]) AS t(u, dv)) d) c
			WHERE i.user_id = c.u AND i.device_id = c.dv AND i.stream_id <= c.cut
			RETURNING i.user_id, i.device_id`, mu, md, limit).Query(func(rows pgx.Rows) error {
			counts := map[[2]string]int{}
			var u, d string
			_, err := pgx.ForEachRow(rows, []any{&u, &d}, func() error {
				counts[[2]string{u, d}]++
				return nil
			})
			for k, n := range counts {
				dropped = append(dropped, Dropped{User: k[0], Device: k[1], Count: n})
			}
			return err
		})
	}
	if len(tu) > 0 {
		b.Queue(`INSERT INTO to_device_txns (sender, device_id, txn_id, stream_id)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
			ON CONFLICT DO NOTHING`, tu, td, tt, ts)
		b.Queue(`DELETE FROM to_device_txns i USING (
				SELECT d.u, d.dv, (SELECT x.stream_id FROM to_device_txns x WHERE x.sender = d.u AND x.device_id = d.dv
					ORDER BY x.stream_id DESC OFFSET $3 LIMIT 1) AS cut
				FROM (SELECT DISTINCT u, dv FROM unnest($1::text[], $2::text[]) AS t(u, dv)) d) c
			WHERE i.sender = c.u AND i.device_id = c.dv AND i.stream_id <= c.cut`, tu, td, limit)
	}
	if b.Len() == 0 {
		return nil, nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("todevice: project: %w", err)
	}
	return dropped, nil
}

// Inbox returns the messages of a device's inbox with positions in (after, upTo],
// oldest first: at most maxCount of them, and no more once maxBytes are reached (but
// always the first). more tells whether messages of the range were left for later.
func (s Store) Inbox(ctx context.Context, user, device string, after, upTo uint64, maxCount, maxBytes int) (msgs []Message, more bool, err error) {
	rows, err := s.Pool.Query(ctx, `SELECT stream_id, message, more FROM (
			SELECT stream_id, message,
				sum(octet_length(message::text)) OVER w - octet_length(message::text) AS before,
				lead(stream_id) OVER w IS NOT NULL AS more
			FROM device_inbox
			WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4
			WINDOW w AS (ORDER BY stream_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
			ORDER BY stream_id LIMIT $5) m
		WHERE before < $6 ORDER BY stream_id`, user, device, int64(after), int64(upTo), maxCount, maxBytes)
	if err != nil {
		return nil, false, fmt.Errorf("todevice: inbox: %w", err)
	}
	var pos int64
	var msg []byte
	_, err = pgx.ForEachRow(rows, []any{&pos, &msg, &more}, func() error {
		msgs = append(msgs, Message{Pos: uint64(pos), JSON: json.RawMessage(msg)})
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("todevice: inbox: %w", err)
	}
	return msgs, more, nil
}

// Pending returns those of the user's devices that have something a deletion up to
// upTo would remove: inbox messages at or below upTo, or, with upTo 0 (the devices are
// gone), any message or transaction id at all.
func (s Store) Pending(ctx context.Context, user string, devices []string, upTo uint64) ([]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT d FROM unnest($2::text[]) AS d
		WHERE EXISTS (SELECT 1 FROM device_inbox WHERE user_id = $1 AND device_id = d AND ($3::bigint = 0 OR stream_id <= $3))
		   OR ($3 = 0 AND EXISTS (SELECT 1 FROM to_device_txns WHERE sender = $1 AND device_id = d))`,
		user, devices, int64(upTo))
	if err != nil {
		return nil, fmt.Errorf("todevice: pending: %w", err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("todevice: pending: %w", err)
	}
	return pending, nil
}

// Delete removes the user's devices' inbox messages up to upTo; with upTo 0 (the devices
// are gone) every message and every transaction id of theirs.
func (s Store) Delete(ctx context.Context, user string, devices []string, upTo uint64) error {
	if _, err := s.Pool.Exec(ctx, `DELETE FROM device_inbox WHERE user_id = $1 AND device_id = ANY($2) AND ($3::bigint = 0 OR stream_id <= $3)`,
		user, devices, int64(upTo)); err != nil {
		return fmt.Errorf("todevice: delete inbox: %w", err)
	}
	if upTo > 0 {
		return nil
	}
	if _, err := s.Pool.Exec(ctx, `DELETE FROM to_device_txns WHERE sender = $1 AND device_id = ANY($2)`, user, devices); err != nil {
		return fmt.Errorf("todevice: delete transactions: %w", err)
	}
	return nil
}

// KnownTxns returns those of txns already stored.
func (s Store) KnownTxns(ctx context.Context, txns []schemas.ToDeviceTxn) (map[schemas.ToDeviceTxn]bool, error) {
	known := map[schemas.ToDeviceTxn]bool{}
	if len(txns) == 0 {
		return known, nil
	}
	senders, devices, ids := make([]string, len(txns)), make([]string, len(txns)), make([]string, len(txns))
	for i, t := range txns {
		senders[i], devices[i], ids[i] = t.Sender, t.Device, t.Txn
	}
	rows, err := s.Pool.Query(ctx, `SELECT x.s, x.d, x.t FROM unnest($1::text[], $2::text[], $3::text[]) AS x(s, d, t)
		WHERE EXISTS (SELECT 1 FROM to_device_txns WHERE sender = x.s AND device_id = x.d AND txn_id = x.t)`,
		senders, devices, ids)
	if err != nil {
		return nil, fmt.Errorf("todevice: known transactions: %w", err)
	}
	var t schemas.ToDeviceTxn
	_, err = pgx.ForEachRow(rows, []any{&t.Sender, &t.Device, &t.Txn}, func() error {
		known[t] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("todevice: known transactions: %w", err)
	}
	return known, nil
}
