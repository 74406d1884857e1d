package client

import "sync"

// boundedMap is a map for concurrent use that starts over once it holds max entries
// (100,000 when max is zero): the memory of a cache that only spares work. The zero
// value is ready.
type boundedMap[K comparable, V any] struct {
	mu  sync.Mutex
	max int
	m   map[K]V
}

func (c *boundedMap[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *boundedMap[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := c.max
	if limit <= 0 {
		limit = 100_000
	}
	if c.m == nil || len(c.m) >= limit {
		c.m = map[K]V{}
	}
	c.m[k] = v
}
