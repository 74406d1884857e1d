package todevice

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
)

// TestKnownTxnsReadsOnlyWhatItAsks: the retry lookup of a busy sending device reads the
// rows it names, not every transaction of the device, even when its table grew from
// empty on the same connection without statistics (a young server). Two plans did:
// one made for the empty table and kept scanned all of it, and the index on the
// pruning order read every transaction of the device (15 ms a batch at 1,500 rows).
func TestKnownTxnsReadsOnlyWhatItAsks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "1") // the lookups share one connection, and its cached plans
	u.RawQuery = q.Encode()
	db, err := persist.Open(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := Store{Pool: db.Pool}
	const sender, device = "@s:h", "D"
	lookup := []schemas.ToDeviceTxn{{Sender: sender, Device: device, Txn: "t7"}, {Sender: sender, Device: device, Txn: "new"}}
	for range 10 {
		if known, err := s.KnownTxns(ctx, lookup); err != nil || len(known) != 0 {
			t.Fatalf("empty table: %v %v", known, err)
		}
	}
	const rows = 20_000
	var recs []*schemas.ToDeviceRecord
	var seqs []uint64
	for i := range rows {
		recs = append(recs, &schemas.ToDeviceRecord{V: schemas.ToDeviceVersion,
			Txn: &schemas.ToDeviceTxn{Sender: sender, Device: device, Txn: fmt.Sprintf("t%d", i)}})
		seqs = append(seqs, uint64(i+1))
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := Project(ctx, tx, recs, seqs, rows)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		known, err := s.KnownTxns(ctx, lookup)
		if err != nil || len(known) != 1 || !known[lookup[0]] {
			t.Fatalf("known %v, %v; want only %v", known, err, lookup[0])
		}
	}
	var read int64
	err = db.Pool.QueryRow(ctx, `SELECT pg_stat_force_next_flush()`).Scan(new(any))
	if err == nil {
		err = db.Pool.QueryRow(ctx, `SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relname = 'to_device_txns'`).Scan(&read)
	}
	if err != nil {
		t.Fatal(err)
	}
	if read >= rows {
		t.Errorf("the lookups read %d rows of to_device_txns; want those they name", read)
	}
}
