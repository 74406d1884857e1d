package persist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// EventReport is a user's report of an event, as Synapse's admin API lists it.
type EventReport struct {
	ID             int64   `json:"id"`
	ReceivedTS     int64   `json:"received_ts"`
	RoomID         string  `json:"room_id"`
	Name           *string `json:"name"`
	EventID        string  `json:"event_id"`
	UserID         string  `json:"user_id"`
	Reason         *string `json:"reason"`
	Score          *int    `json:"score"`
	Sender         *string `json:"sender"`
	CanonicalAlias *string `json:"canonical_alias"`
	// EventJSON is the reported event, in the details of one report only.
	EventJSON json.RawMessage `json:"event_json,omitempty"`
}

// EventReportFilter narrows the event reports listed.
type EventReportFilter struct {
	RoomID, UserID string
	// Oldest lists the oldest first; the newest come first otherwise.
	Oldest bool
}

var eventReportColumns = `c.id, c.received_at, c.room_id, c.event_id, c.reporter, c.reason, c.score,
	(SELECT sender FROM events e WHERE e.event_id = c.event_id), ` +
	stateOf("c.room_id", "m.room.name", "name") + `, ` + stateOf("c.room_id", "m.room.canonical_alias", "alias")

func scanEventReport(row pgx.Row, extra ...any) (EventReport, error) {
	var r EventReport
	var at time.Time
	err := row.Scan(append([]any{&r.ID, &at, &r.RoomID, &r.EventID, &r.UserID, &r.Reason, &r.Score, &r.Sender,
		&r.Name, &r.CanonicalAlias}, extra...)...)
	r.ReceivedTS = at.UnixMilli()
	return r, err
}

// EventReports lists a page of event reports and how many match in all.
func (db *DB) EventReports(ctx context.Context, offset, limit int, f EventReportFilter) ([]EventReport, int, error) {
	order := "DESC"
	if f.Oldest {
		order = "ASC"
	}
	where := `c.event_id IS NOT NULL AND ($1 = '' OR c.room_id = $1) AND ($2 = '' OR c.reporter LIKE '%' || $2 || '%')`
	var total int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM content_reports c WHERE `+where, f.RoomID, f.UserID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("persist: event reports: %w", err)
	}
	rows, err := db.Pool.Query(ctx, `SELECT `+eventReportColumns+` FROM content_reports c WHERE `+where+`
		ORDER BY c.id `+order+` OFFSET $3 LIMIT $4`, f.RoomID, f.UserID, offset, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("persist: event reports: %w", err)
	}
	reports, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (EventReport, error) { return scanEventReport(row) })
	if err != nil {
		return nil, 0, fmt.Errorf("persist: event reports: %w", err)
	}
	return reports, total, nil
}

// GetEventReport returns one event report with the reported event; ErrNotFound when
// there is none with that ID.
func (db *DB) GetEventReport(ctx context.Context, id int64) (EventReport, error) {
	var js []byte
	r, err := scanEventReport(db.Pool.QueryRow(ctx, `SELECT `+eventReportColumns+`,
			(SELECT json FROM events e WHERE e.event_id = c.event_id)
		FROM content_reports c WHERE c.id = $1 AND c.event_id IS NOT NULL`, id), &js)
	if errors.Is(err, pgx.ErrNoRows) {
		return EventReport{}, ErrNotFound
	}
	if err != nil {
		return EventReport{}, fmt.Errorf("persist: event report: %w", err)
	}
	r.EventJSON = js
	return r, nil
}

// RoomExists reports whether this server knows room.
func (db *DB) RoomExists(ctx context.Context, room string) (bool, error) {
	var ok bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM rooms WHERE room_id = $1)`, room).Scan(&ok); err != nil {
		return false, fmt.Errorf("persist: room exists: %w", err)
	}
	return ok, nil
}
