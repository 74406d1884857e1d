package persister

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
)

// seen is a Bloom filter of the intent ids whose results Postgres may hold: those it
// held when the filter was built, and every one this writer projected since (its own
// appends, and those a catch-up found in the log). For a room whose every handled
// intent it holds (room.seenAll), a miss proves an intent new, so it is built without
// asking Postgres for an earlier result
// (the lookup was a third of a sequential send's time, BENCHMARKS.md); a hit, about
// 1% of new intents, or a filter not built yet, asks Postgres as before. A retry of an
// intent appended and not projected yet is in the loop's recent results, which it
// checks first.
type seen struct {
	db  *persist.DB
	log *zap.Logger
	// floor is the smallest capacity built (minSeenCapacity when 0).
	floor uint

	mu     sync.Mutex
	filter *bloom.BloomFilter // nil until the first build is done
	// capacity is how many ids filter was sized for, count how many it holds.
	capacity, count uint
	// covered is the log position up to which every writer's events were projected
	// before the filter's scan: their intents' results are in it.
	covered uint64
	// building is set while a build runs; added are the ids added meanwhile, which
	// the new filter takes in too.
	building bool
	added    []string
	done     sync.WaitGroup
}

// seenFalsePositives is the filter's target rate of hits for new intents.
const seenFalsePositives = 0.01

// minSeenCapacity is the smallest filter built: 1 M ids, 1.2 MB.
const minSeenCapacity = 1 << 20

// maybe reports whether Postgres may hold a result for id.
func (s *seen) maybe(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filter == nil || s.filter.TestString(id)
}

// covers reports whether the results of every intent whose events are at or below seq
// in the log are in the filter.
func (s *seen) covers(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filter != nil && seq <= s.covered
}

// add records an intent whose result Postgres now holds.
func (s *seen) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.building {
		s.added = append(s.added, id)
	}
	if s.filter != nil {
		s.filter.AddString(id)
		s.count++
	}
}

// full reports whether the filter holds more than it was sized for, and should be
// built again.
func (s *seen) full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filter != nil && !s.building && s.count > s.capacity
}

// build makes the filter again from Postgres, in the background: pending are the ids
// appended and maybe not projected yet (the loop's recent results), which the scan of
// Postgres could miss. Until the first build is done every intent asks Postgres.
func (s *seen) build(ctx context.Context, pending []string) {
	s.mu.Lock()
	if s.building {
		s.mu.Unlock()
		return
	}
	s.building, s.added = true, append([]string(nil), pending...)
	s.mu.Unlock()
	s.done.Go(func() {
		backoff := time.Second
		for {
			f, size, n, covered, err := s.scan(ctx)
			if err == nil {
				s.mu.Lock()
				for _, id := range s.added {
					f.AddString(id)
				}
				s.filter, s.count, s.capacity = f, n+uint(len(s.added)), size
				s.covered = max(s.covered, covered)
				s.building, s.added = false, nil
				s.mu.Unlock()
				s.log.Info("intent id filter built", zap.Uint("ids", n))
				return
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("intent id filter not built; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Minute)
		}
	})
}

// scan reads every stored intent id into a new filter sized for twice what Postgres
// holds, so it takes as many appends again before it is built anew (sized again when
// the estimate was short), and returns how far the writers had projected before it.
func (s *seen) scan(ctx context.Context) (f *bloom.BloomFilter, size, n uint, covered uint64, err error) {
	positions, err := s.db.StreamPositions(ctx, persist.EventsStream)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	for i, pos := range slices.Collect(maps.Values(positions)) {
		if i == 0 || pos < covered {
			covered = pos
		}
	}
	est, err := s.db.EstimatedIntentResults(ctx)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	size = max(cmp.Or(s.floor, minSeenCapacity), 2*uint(max(est, 0)))
	for {
		f, n = bloom.NewWithEstimates(size, seenFalsePositives), 0
		err = s.db.IntentIDs(ctx, func(id string) {
			f.AddString(id)
			n++
		})
		if err != nil || n <= size/2 {
			return f, size, n, covered, err
		}
		size = 2 * n // the estimate was stale (a table just copied, never analysed)
	}
}

// wait waits for a build in progress to stop (its context ended).
func (s *seen) wait() { s.done.Wait() }
