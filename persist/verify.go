package persist

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// NotRebuilt are the tables a replay does not rebuild from the logs, and why: a
// database rebuilt by replay equals the original in every other table.
var NotRebuilt = map[string]string{
	"schema_migrations": "the migrator's bookkeeping: applied_at is when this database's schema was made",
	"uia_sessions":      "user-interactive auth sessions last minutes, are not user data and are in no log",
	"pusher_delivery":   "how far push gateways were sent to: bookkeeping, and a replay sets every pusher at the log's end",
	"appservice_txns":   "transactions sent to application services: bookkeeping; after a replay a service starts at the log's end with transaction IDs from the clock, above every earlier one",
}

// NotRebuiltColumns are the columns, as table.column, written straight to Postgres and
// not user data, which a replay leaves at their defaults.
var NotRebuiltColumns = map[string]string{
	"devices.last_seen":    "bumped by token lookups (at most once a minute), not by the log",
	"devices.last_seen_ip": "set by token lookups with last_seen, not by the log",
}

// Digest sums up one table: its rows, and a checksum of them per room for a table with
// a room_id column ("" is the whole table otherwise).
type Digest struct {
	Rows  int64
	Rooms map[string]string
}

// Digests returns the digest of every table a replay rebuilds (NotRebuilt aside), each
// row being its columns (NotRebuiltColumns aside) as Postgres prints them.
func (db *DB) Digests(ctx context.Context) (map[string]Digest, error) {
	rows, err := db.Pool.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name IN
			(SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE')
		ORDER BY table_name, ordinal_position`)
	if err != nil {
		return nil, err
	}
	columns := map[string][]string{}
	for rows.Next() {
		var table, column string
		if err := rows.Scan(&table, &column); err != nil {
			return nil, err
		}
		if _, skip := NotRebuilt[table]; skip {
			continue
		}
		if _, skip := NotRebuiltColumns[table+"."+column]; !skip {
			columns[table] = append(columns[table], column)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := map[string]Digest{}
	for _, table := range slices.Sorted(maps.Keys(columns)) {
		cols := columns[table]
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = pgx.Identifier{c}.Sanitize()
		}
		room := "''"
		if slices.Contains(cols, "room_id") {
			room = "room_id::text"
		}
		q := fmt.Sprintf(`SELECT coalesce(room, ''), count(*), md5(string_agg(h, '' ORDER BY h))
			FROM (SELECT %s AS room, md5(ROW(%s)::text) AS h FROM %s) rows GROUP BY 1`,
			room, strings.Join(quoted, ", "), pgx.Identifier{table}.Sanitize())
		rs, err := db.Pool.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("persist: digest of %s: %w", table, err)
		}
		d := Digest{Rooms: map[string]string{}}
		for rs.Next() {
			var room, sum string
			var n int64
			if err := rs.Scan(&room, &n, &sum); err != nil {
				return nil, err
			}
			d.Rows += n
			d.Rooms[room] = sum
		}
		if err := rs.Err(); err != nil {
			return nil, err
		}
		out[table] = d
	}
	return out, nil
}

// Difference is one place where two databases' digests differ: a table, and the room
// within it ("" for a table without rooms, or for the table's row count).
type Difference struct {
	Table, Room, What string
}

// CompareDigests lists the differences between two databases' digests, a the original
// and b the rebuilt one.
func CompareDigests(a, b map[string]Digest) []Difference {
	var out []Difference
	for _, table := range slices.Sorted(maps.Keys(a)) {
		orig := a[table]
		rebuilt, ok := b[table]
		if !ok {
			out = append(out, Difference{Table: table, What: "missing from the rebuilt database"})
			continue
		}
		if orig.Rows != rebuilt.Rows {
			out = append(out, Difference{Table: table, What: fmt.Sprintf("%d rows, rebuilt %d", orig.Rows, rebuilt.Rows)})
		}
		for _, room := range slices.Sorted(maps.Keys(orig.Rooms)) {
			if rebuilt.Rooms[room] != orig.Rooms[room] {
				out = append(out, Difference{Table: table, Room: room, What: "rows differ"})
			}
		}
		for room := range rebuilt.Rooms {
			if _, ok := orig.Rooms[room]; !ok {
				out = append(out, Difference{Table: table, Room: room, What: "rows only in the rebuilt database"})
			}
		}
	}
	for table := range b {
		if _, ok := a[table]; !ok {
			out = append(out, Difference{Table: table, What: "only in the rebuilt database"})
		}
	}
	return out
}
