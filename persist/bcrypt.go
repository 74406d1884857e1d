package persist

import (
	"context"
	"crypto/rand"
	"runtime"

	"golang.org/x/crypto/bcrypt"
)

// newHashSlots bounds the bcrypt computations of one process to its cores. A hash at
// cost 12 keeps a core busy for a quarter of a second; unbounded, a flood of logins or
// registrations would take every core from every other request. Over the bound, a
// computation waits for a slot (or for its request to end).
func newHashSlots() chan struct{} { return make(chan struct{}, runtime.GOMAXPROCS(0)) }

// withHashSlot runs f, a bcrypt computation, once a slot is free.
func (db *DB) withHashSlot(ctx context.Context, f func() error) error {
	select {
	case db.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-db.hashSlots }()
	return f()
}

// HashPassword returns the bcrypt hash of password at the configured cost. Gateways
// hash a new password before it goes to the accounts stream, which, like Postgres,
// never holds a password itself.
func (db *DB) HashPassword(ctx context.Context, password string) ([]byte, error) {
	var h []byte
	err := db.withHashSlot(ctx, func() (err error) {
		h, err = bcrypt.GenerateFromPassword(bcryptInput(password), db.bcryptCost())
		return err
	})
	return h, err
}

// passwordMatches reports whether hash is password's bcrypt hash; it fails only when ctx
// ends while waiting for a slot.
func (db *DB) passwordMatches(ctx context.Context, hash []byte, password string) (bool, error) {
	var ok bool
	err := db.withHashSlot(ctx, func() error {
		ok = db.compare(hash, bcryptInput(password)) == nil
		return nil
	})
	return ok, err
}

// dummyHash returns a bcrypt hash at the configured cost of a random password, made
// once per cost.
func (db *DB) dummyHash() []byte {
	d := &db.dummy
	d.mu.Lock()
	defer d.mu.Unlock()
	if cost := db.bcryptCost(); d.hash == nil || d.cost != cost {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret) // crypto/rand.Read never fails
		// It fails only for a cost out of range, which bcryptCost rules out, or a
		// password over 72 bytes.
		d.hash, _ = bcrypt.GenerateFromPassword(secret, cost)
		d.cost = cost
	}
	return d.hash
}
