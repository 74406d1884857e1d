// Package appservices stores what the application service sender keeps per service:
// transaction IDs, the transaction awaiting its 200, and how far the log was delivered.
package appservices

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/persist"
)

// Store reads and writes appservice_txns.
type Store struct{ Pool *pgxpool.Pool }

// State is a service's transactions.
type State struct {
	LastTxnID uint64
	// Delivered is the position in the events log up to which (inclusive) every event
	// the service is interested in was delivered.
	Delivered persist.Pos
	// Pending is the transaction sent and not yet answered 200; nil when none.
	Pending *Txn
}

// Txn is a transaction: its ID, its body, and the last event position it carries.
type Txn struct {
	ID   uint64
	Body []byte
	Last persist.Pos
}

// Load returns the service's state. A service seen for the first time starts its
// transaction IDs at the time in milliseconds, so they keep increasing even across a
// database rebuilt by a replay; ok is false then.
func (s Store) Load(ctx context.Context, service string) (st State, ok bool, err error) {
	var pendingID, pendingSeq *int64
	var pendingIdx *int32
	var body []byte
	var last, dseq int64
	var didx int32
	err = s.Pool.QueryRow(ctx, `SELECT last_txn_id, delivered_seq, delivered_idx, pending_txn_id, pending_body, pending_seq, pending_idx
		FROM appservice_txns WHERE service_id = $1`, service).Scan(&last, &dseq, &didx, &pendingID, &body, &pendingSeq, &pendingIdx)
	if errors.Is(err, pgx.ErrNoRows) {
		return State{LastTxnID: uint64(time.Now().UnixMilli())}, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("appservices: load %s: %w", service, err)
	}
	st = State{LastTxnID: uint64(last), Delivered: persist.Pos{Seq: uint64(dseq), Idx: int(didx)}}
	if pendingID != nil && pendingSeq != nil && pendingIdx != nil {
		st.Pending = &Txn{ID: uint64(*pendingID), Body: body, Last: persist.Pos{Seq: uint64(*pendingSeq), Idx: int(*pendingIdx)}}
	}
	return st, true, nil
}

// Save writes the service's state.
func (s Store) Save(ctx context.Context, service string, st State) error {
	var pendingID, pendingSeq *int64
	var pendingIdx *int32
	var body []byte
	if p := st.Pending; p != nil {
		id, seq, idx := int64(p.ID), int64(p.Last.Seq), int32(p.Last.Idx)
		pendingID, pendingSeq, pendingIdx, body = &id, &seq, &idx, p.Body
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO appservice_txns (service_id, last_txn_id, delivered_seq, delivered_idx, pending_txn_id, pending_body, pending_seq, pending_idx)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (service_id) DO UPDATE SET last_txn_id = excluded.last_txn_id, delivered_seq = excluded.delivered_seq,
			delivered_idx = excluded.delivered_idx, pending_txn_id = excluded.pending_txn_id, pending_body = excluded.pending_body,
			pending_seq = excluded.pending_seq, pending_idx = excluded.pending_idx`,
		service, int64(st.LastTxnID), int64(st.Delivered.Seq), int32(st.Delivered.Idx), pendingID, body, pendingSeq, pendingIdx)
	if err != nil {
		return fmt.Errorf("appservices: save %s: %w", service, err)
	}
	return nil
}
