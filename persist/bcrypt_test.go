package persist

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Password hashing takes a slot of the process's bound: with every slot taken, a login
// or registration waits for one instead of computing.
func TestPasswordHashingIsBounded(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	newUser(t, db, "@bounded:test", "secret")
	for range cap(db.hashSlots) {
		db.hashSlots <- struct{}{}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := db.CheckPassword(short, "@bounded:test", "secret"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("check with every slot taken: %v, want it to wait until its context ends", err)
	}
	if _, err := db.HashPassword(short, "secret"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hash with every slot taken: %v, want it to wait until its context ends", err)
	}
	done := make(chan error, 1)
	go func() { done <- db.CheckPassword(ctx, "@bounded:test", "secret") }()
	<-db.hashSlots // one slot free
	if err := <-done; err != nil {
		t.Fatalf("check once a slot is free: %v", err)
	}
}
