package persist

import (
	"context"
	"fmt"
	"time"
)

// ErrOtherLog is wrapped by CheckLog's refusals.
var ErrOtherLog = fmt.Errorf("persist: the database does not project this events log")

// wayOut tells the operator what to do with a database that does not match the log.
const wayOut = "drop the database to start over, or rebuild a fresh database from this log with `ganglion replay`"

// CheckLog makes sure the database projects the events log named stream, created at
// created and ending at lastSeq. A database that has projected no log yet records this
// one. One that records another log, or whose positions are past the log's end (a NATS
// store restored from an older backup), is refused with an error that names both and
// the way out: served silently, it would never show another event.
//
// lastSeq reads the log's last sequence. It is called after the database's positions are
// read, since writers append meanwhile: a log end read first could fall behind a
// position read after it.
func (db *DB) CheckLog(ctx context.Context, stream string, created time.Time, lastSeq func(context.Context) (uint64, error)) error {
	if _, err := db.Pool.Exec(ctx, `INSERT INTO log_identity (stream_name, created_ns) VALUES ($1, $2)
		ON CONFLICT (only_row) DO NOTHING`, stream, created.UnixNano()); err != nil {
		return fmt.Errorf("persist: record the events log: %w", err)
	}
	var (
		name, dbName string
		ns, ahead    int64
	)
	err := db.Pool.QueryRow(ctx, `SELECT stream_name, created_ns, current_database(),
		COALESCE((SELECT max(stream_id) FROM stream_positions WHERE stream_name = $1), 0)
		FROM log_identity`, EventsStream).Scan(&name, &ns, &dbName, &ahead)
	if err != nil {
		return fmt.Errorf("persist: read the events log identity: %w", err)
	}
	if name != stream || ns != created.UnixNano() {
		return fmt.Errorf("%w: database %s projects the events log %s created %s, but NATS holds %s created %s (a deleted or replaced NATS store, or another deployment's database); %s",
			ErrOtherLog, dbName, name, time.Unix(0, ns).UTC().Format(time.RFC3339Nano), stream, created.UTC().Format(time.RFC3339Nano), wayOut)
	}
	last, err := lastSeq(ctx)
	if err != nil {
		return err
	}
	if uint64(ahead) > last {
		return fmt.Errorf("%w: database %s has projected the events log %s up to sequence %d, but the log ends at %d (a NATS store restored from an older backup?); %s",
			ErrOtherLog, dbName, stream, ahead, last, wayOut)
	}
	return nil
}
