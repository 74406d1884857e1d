// Package todevice stores the projection of the to_device stream: the messages waiting
// in each device's inbox and the transaction ids each sending device used.
package todevice

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

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
			mu, md, mm, ms = append(mu, m.User), append(md, m.Device), append(mm, clientMessage(m)), append(ms, int64(seqs[i]))
		}
		if t := r.Txn; t != nil {
			tu, td, tt, ts = append(tu, t.Sender), append(td, t.Device), append(tt, t.Txn), append(ts, int64(seqs[i]))
		}
	}
	if len(mu)+len(tu) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	// Each insert counts its rows per device and names the devices now past the bound.
	var fullInboxes, fullSenders [2][]string
	over := func(full *[2][]string) func(pgx.Rows) error {
		return func(rows pgx.Rows) error {
			var u, d string
			_, err := pgx.ForEachRow(rows, []any{&u, &d}, func() error {
				full[0], full[1] = append(full[0], u), append(full[1], d)
				return nil
			})
			return err
		}
	}
	if len(mu) > 0 {
		b.Queue(`WITH ins AS (
				INSERT INTO device_inbox (user_id, device_id, stream_id, message)
				SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
				ON CONFLICT DO NOTHING RETURNING user_id, device_id),
			counted AS (
				INSERT INTO to_device_sizes (user_id, device_id, messages)
				SELECT user_id, device_id, count(*) FROM ins GROUP BY 1, 2
				ON CONFLICT (user_id, device_id) DO UPDATE SET messages = to_device_sizes.messages + excluded.messages
				RETURNING user_id, device_id, messages)
			SELECT user_id, device_id FROM counted WHERE messages > $5`,
			mu, md, ms, mm, limit).Query(over(&fullInboxes))
	}
	if len(tu) > 0 {
		b.Queue(`WITH ins AS (
				INSERT INTO to_device_txns (sender, device_id, txn_id, stream_id)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
				ON CONFLICT DO NOTHING RETURNING sender, device_id),
			counted AS (
				INSERT INTO to_device_sizes (user_id, device_id, txns)
				SELECT sender, device_id, count(*) FROM ins GROUP BY 1, 2
				ON CONFLICT (user_id, device_id) DO UPDATE SET txns = to_device_sizes.txns + excluded.txns
				RETURNING user_id, device_id, txns)
			SELECT user_id, device_id FROM counted WHERE txns > $5`,
			tu, td, tt, ts, limit).Query(over(&fullSenders))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("todevice: project: %w", err)
	}
	// Past the bound, which most batches never reach, the oldest go.
	var dropped []Dropped
	if len(fullInboxes[0]) > 0 {
		rows, err := tx.Query(ctx, pruneQuery("device_inbox", "user_id", "messages"), fullInboxes[0], fullInboxes[1], limit)
		if err != nil {
			return nil, fmt.Errorf("todevice: bound inboxes: %w", err)
		}
		if dropped, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Dropped]); err != nil {
			return nil, fmt.Errorf("todevice: bound inboxes: %w", err)
		}
	}
	if len(fullSenders[0]) > 0 {
		if _, err := tx.Exec(ctx, pruneQuery("to_device_txns", "sender", "txns"), fullSenders[0], fullSenders[1], limit); err != nil {
			return nil, fmt.Errorf("todevice: bound transactions: %w", err)
		}
	}
	return dropped, nil
}

// clientMessage is a message as /sync returns it, {"type", "sender", "content"}, made
// around its content as it is (the record's decoding checked it).
func clientMessage(m *schemas.ToDeviceMessage) string {
	typ, _ := schemas.Marshal(m.Type)
	sender, _ := schemas.Marshal(m.Sender)
	var b strings.Builder
	b.Grow(len(typ) + len(sender) + len(m.Content) + 32)
	b.WriteString(`{"type":`)
	b.Write(typ)
	b.WriteString(`,"sender":`)
	b.Write(sender)
	b.WriteString(`,"content":`)
	b.Write(m.Content)
	b.WriteByte('}')
	return b.String()
}

// pruneQuery deletes, from those of the devices $1, $2 that hold more than $3 rows of
// table (counted in to_device_sizes.<size>), the oldest rows past the bound, and returns
// how many it deleted per device. Only the rows to delete are read.
func pruneQuery(table, owner, size string) string {
	return `WITH cut AS MATERIALIZED (
			SELECT z.user_id, z.device_id, z.` + size + ` - $3 AS excess,
				(SELECT x.stream_id FROM ` + table + ` x WHERE x.` + owner + ` = z.user_id AND x.device_id = z.device_id
					ORDER BY x.stream_id OFFSET z.` + size + ` - $3 - 1 LIMIT 1) AS last
			FROM to_device_sizes z
			WHERE z.` + size + ` > $3 AND (z.user_id, z.device_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))),
		del AS (
			DELETE FROM ` + table + ` i USING cut
			WHERE i.` + owner + ` = cut.user_id AND i.device_id = cut.device_id AND i.stream_id <= cut.last),
		upd AS (
			UPDATE to_device_sizes z SET ` + size + ` = $3 FROM cut
			WHERE z.user_id = cut.user_id AND z.device_id = cut.device_id)
		SELECT user_id, device_id, excess FROM cut`
}

// Inbox returns the messages of a device's inbox with positions in (after, upTo],
// oldest first: at most maxCount of them, and no more once maxBytes are reached (but
// always the first). more tells whether messages of the range were left for later.
func (s Store) Inbox(ctx context.Context, user, device string, after, upTo uint64, maxCount, maxBytes int) (msgs []Message, more bool, err error) {
	rows, err := s.Pool.Query(ctx, `SELECT stream_id, message, more FROM (
			SELECT stream_id, message,
				sum(octet_length(message)) OVER w - octet_length(message) AS before,
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
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if upTo == 0 {
			b := &pgx.Batch{}
			b.Queue(`DELETE FROM device_inbox WHERE user_id = $1 AND device_id = ANY($2)`, user, devices)
			b.Queue(`DELETE FROM to_device_txns WHERE sender = $1 AND device_id = ANY($2)`, user, devices)
			b.Queue(`DELETE FROM to_device_sizes WHERE user_id = $1 AND device_id = ANY($2)`, user, devices)
			return tx.SendBatch(ctx, b).Close()
		}
		b := &pgx.Batch{}
		b.Queue(`WITH del AS (
				DELETE FROM device_inbox WHERE user_id = $1 AND device_id = ANY($2) AND stream_id <= $3 RETURNING device_id)
			UPDATE to_device_sizes z SET messages = z.messages - d.n
			FROM (SELECT device_id, count(*) AS n FROM del GROUP BY 1) d
			WHERE z.user_id = $1 AND z.device_id = d.device_id`, user, devices, int64(upTo))
		b.Queue(`DELETE FROM to_device_sizes WHERE user_id = $1 AND device_id = ANY($2) AND messages = 0 AND txns = 0`, user, devices)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("todevice: delete: %w", err)
	}
	return nil
}

// KnownTxns returns those of txns already stored. It looks them up by txn_key, written
// as migration 0015 makes it.
func (s Store) KnownTxns(ctx context.Context, txns []schemas.ToDeviceTxn) (map[schemas.ToDeviceTxn]bool, error) {
	known := map[schemas.ToDeviceTxn]bool{}
	if len(txns) == 0 {
		return known, nil
	}
	senders, devices, ids := make([]string, len(txns)), make([]string, len(txns)), make([]string, len(txns))
	for i, t := range txns {
		senders[i], devices[i], ids[i] = t.Sender, t.Device, t.Txn
	}
	// Planned at every call (QueryExecModeExec), not once per connection: a plan made
	// while the table was young scans all of it, and keeps doing so as it grows.
	rows, err := s.Pool.Query(ctx, `SELECT x.s, x.d, x.t FROM unnest($1::text[], $2::text[], $3::text[]) AS x(s, d, t)
		WHERE EXISTS (SELECT 1 FROM to_device_txns
			WHERE txn_key = length(x.s)::text || ' ' || length(x.d)::text || ' ' || x.s || x.d || x.t)`,
		pgx.QueryExecModeExec, senders, devices, ids)
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
