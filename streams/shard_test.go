package streams

import (
	"math"
	"testing"
)

func TestShardIndexVectors(t *testing.T) {
	t.Parallel()
	// The first three keys are the reference doc's vectors (§6); the rest were
	// computed with Python: int.from_bytes(hashlib.sha256(k.encode()).digest(),
	// "little") % n.
	cases := []struct {
		key  string
		n    int
		want int
	}{
		{"!abc:example.com", 2, 0},
		{"!abc:example.com", 3, 0},
		{"!abc:example.com", 4, 2},
		{"!abc:example.com", 5, 1},
		{"!foo:bar.org", 2, 0},
		{"!foo:bar.org", 3, 1},
		{"!foo:bar.org", 4, 2},
		{"!foo:bar.org", 5, 0},
		{"!AFDCvgApUmpdfVjIXm:localhost:8823", 2, 0},
		{"!AFDCvgApUmpdfVjIXm:localhost:8823", 3, 0},
		{"!AFDCvgApUmpdfVjIXm:localhost:8823", 4, 2},
		{"!AFDCvgApUmpdfVjIXm:localhost:8823", 5, 1},
		{"!abc:example.com", 7, 1},
		{"!abc:example.com", 10, 6},
		{"!abc:example.com", 1000003, 127421},
		{"!abc:example.com", math.MaxInt32, 953591280},
		{"!abc:example.com", math.MaxInt64, 4714961436537765113},
		{"", 2, 1},
		{"", 5, 4},
		{"", 1000003, 204113},
		{"!ünïcødé:example.org", 5, 3},
		{"!ünïcødé:example.org", 7, 4},
		{"!ünïcødé:example.org", math.MaxInt64, 7125585135897084553},
		{"@alice:example.com", 4, 2},
		{"@alice:example.com", 7, 4},
		{"matrix.org", 3, 2},
		{"matrix.org", 6, 5},
		{"matrix.org", math.MaxInt32, 1585721336},
		{"!room:🐙.example", 7, 3},
		{"!room:🐙.example", 1000003, 156088},
		{"!x:y", 7, 5},
		{"!x:y", math.MaxInt64, 6865725295838071780},
	}
	for _, c := range cases {
		if got := ShardIndex(c.key, c.n); got != c.want {
			t.Errorf("ShardIndex(%q, %d) = %d, want %d", c.key, c.n, got, c.want)
		}
	}
}

func TestShardIndexSingleWriter(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-3, 0, 1} {
		if got := ShardIndex("!abc:example.com", n); got != 0 {
			t.Errorf("ShardIndex(_, %d) = %d, want 0", n, got)
		}
	}
}

func TestShardOwner(t *testing.T) {
	t.Parallel()
	writers := []string{"persister1", "persister2", "persister3", "persister4"}
	if got := ShardOwner("!abc:example.com", writers); got != "persister3" {
		t.Errorf("4 writers: got %q, want persister3", got)
	}
	if got := ShardOwner("!foo:bar.org", writers[:3]); got != "persister2" {
		t.Errorf("3 writers: got %q, want persister2", got)
	}
	if got := ShardOwner("!foo:bar.org", []string{"master"}); got != "master" {
		t.Errorf("1 writer: got %q, want master", got)
	}
	if got := ShardOwner("!foo:bar.org", nil); got != "" {
		t.Errorf("no writers: got %q, want empty", got)
	}
}
