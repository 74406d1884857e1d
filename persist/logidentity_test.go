package persist

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckLog(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	created := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	if err := db.CheckLog(ctx, "G_EVENTS", created, logEnd(0)); err != nil {
		t.Fatalf("a fresh database takes the log: %v", err)
	}
	if err := db.AdvanceStreamPosition(ctx, EventsStream, "w1", 40); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckLog(ctx, "G_EVENTS", created, logEnd(40)); err != nil {
		t.Fatalf("the same log again: %v", err)
	}
	for _, tc := range []struct {
		name    string
		stream  string
		created time.Time
		last    uint64
		want    []string
	}{
		{"a new store", "G_EVENTS", created.Add(time.Hour), 3, []string{"G_EVENTS created 2026-12-01T10:00:00.123456789Z", "created 2026-12-01T11:00:00.123456789Z", "ganglion replay"}},
		{"another namespace", "H_EVENTS", created, 40, []string{"projects the events log G_EVENTS", "NATS holds H_EVENTS"}},
		{"an older backup", "G_EVENTS", created, 39, []string{"up to sequence 40", "ends at 39", "drop the database"}},
	} {
		err := db.CheckLog(ctx, tc.stream, tc.created, logEnd(tc.last))
		if !errors.Is(err, ErrOtherLog) {
			t.Fatalf("%s: %v, want ErrOtherLog", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
	}
}

// logEnd is a log whose last sequence is n.
func logEnd(n uint64) func(context.Context) (uint64, error) {
	return func(context.Context) (uint64, error) { return n, nil }
}
