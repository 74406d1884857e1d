package persist

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Transient reports whether err is a failure of the database rather than of the
// request or message that met it: Postgres unreachable, restarting, shutting down, out
// of resources, a serialization conflict or deadlock, a statement or call deadline. Such
// an operation succeeds when tried again later, so callers wait (a writer) or answer
// 503 (a gateway) instead of refusing the input. Errors Postgres raises about the data
// itself (classes 22 data exception, 23 integrity constraint, 54 program limit) are not
// transient: retrying the same input fails the same way. A nil error is not transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "22", "23", "54":
			return false
		}
	}
	// Connection failures, timeouts, a closed or exhausted pool, and every other
	// server error (admin shutdown 57P01, cannot connect now 57P03, serialization
	// failure 40001, ...) are the database's state, not the input's.
	return true
}
