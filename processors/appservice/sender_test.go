package appservice

import (
	"testing"
	"time"
)

// TestRoomInterests: a room is of interest while one of the service's users is joined
// (as read, then as membership events say) or while an alias of its namespace was seen
// within aliasRecheck; a room never read is unknown.
func TestRoomInterests(t *testing.T) {
	var r roomInterests
	now := time.Now()
	if _, known, _ := r.of("!a", now); known {
		t.Fatal("a room never read is known")
	}
	r.member("!a", "@bot:hs", true) // not known yet: nothing to apply to
	if _, known, _ := r.of("!a", now); known {
		t.Fatal("a membership made an unknown room known")
	}
	r.learn("!a", nil)
	if interested, known, _ := r.of("!a", now); interested || !known {
		t.Fatalf("a room without the service's users: interested %v, known %v", interested, known)
	}
	r.member("!a", "@bot:hs", true)
	if interested, _, _ := r.of("!a", now); !interested {
		t.Fatal("a room the service's user joined")
	}
	r.member("!a", "@bot:hs", false)
	if interested, _, _ := r.of("!a", now); interested {
		t.Fatal("a room the service's user left")
	}
	r.learn("!b", []string{"@bot:hs"})
	if interested, _, _ := r.of("!b", now); !interested {
		t.Fatal("a room read with the service's user in it")
	}
	r.learn("!c", nil)
	r.setAliased("!c", true, now)
	if interested, _, stale := r.of("!c", now.Add(time.Second)); !interested || stale {
		t.Fatalf("a room with an alias of the namespace: interested %v, stale %v", interested, stale)
	}
	if interested, _, stale := r.of("!c", now.Add(2*aliasRecheck)); interested || !stale {
		t.Fatalf("an alias seen long ago: interested %v, stale %v", interested, stale)
	}
}
