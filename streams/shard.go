package streams

import (
	"crypto/sha256"
	"math/bits"
)

// ShardIndex returns which of n writers owns key, using Synapse's function
// (ShardedWorkerHandlingConfig): SHA-256 of the UTF-8 key, the 32 digest bytes
// read as an unsigned little-endian integer, modulo n. Using the very same
// function lets a mixed Synapse/Ganglion deployment agree on which instance owns
// a room, destination or user. n <= 1 means a single writer owns everything.
func ShardIndex(key string, n int) int {
	if n <= 1 {
		return 0
	}
	digest := sha256.Sum256([]byte(key))
	m := uint64(n)
	// Horner's rule from the most significant byte (the last one, since the
	// integer is little-endian) keeps the remainder below m, so the 128-bit
	// intermediate r*256+b always has a high word below m as Div64 requires,
	// and no big.Int allocation is needed on the intent hot path.
	var r uint64
	for i := len(digest) - 1; i >= 0; i-- {
		hi, lo := bits.Mul64(r, 256)
		var carry uint64
		lo, carry = bits.Add64(lo, uint64(digest[i]), 0)
		hi += carry
		_, r = bits.Div64(hi, lo, m)
	}
	return int(r)
}

// ShardOwner returns the writer in the configured list that owns key, or "" when
// the list is empty. The list order matters and must be identical on every
// process, exactly like Synapse's stream_writers lists.
func ShardOwner(key string, writers []string) string {
	if len(writers) == 0 {
		return ""
	}
	return writers[ShardIndex(key, len(writers))]
}
