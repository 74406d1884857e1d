// Package ratelimit applies Synapse's rc_* limits: per key (a user, an IP address, a
// room), a bucket of burst_count actions that refills at per_second.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Setting is one of Synapse's rate limits: burst_count actions at once, then
// per_second on average.
type Setting struct {
	PerSecond  float64
	BurstCount int
}

// Settings are the limits of Synapse's rc_* keys that Ganglion applies.
type Settings struct {
	Message             Setting // rc_message
	Registration        Setting // rc_registration
	LoginAddress        Setting // rc_login.address
	LoginAccount        Setting // rc_login.account
	LoginFailedAttempts Setting // rc_login.failed_attempts
	JoinsLocal          Setting // rc_joins.local
	JoinsRemote         Setting // rc_joins.remote
	InvitesPerRoom      Setting // rc_invites.per_room
	InvitesPerUser      Setting // rc_invites.per_user
	InvitesPerIssuer    Setting // rc_invites.per_issuer
	ThreePIDValidation  Setting // rc_3pid_validation
	PresencePerUser     Setting // rc_presence.per_user
}

// Defaults are Synapse's defaults (synapse/config/ratelimiting.py).
var Defaults = Settings{
	Message:             Setting{0.2, 10},
	Registration:        Setting{0.17, 3},
	LoginAddress:        Setting{0.003, 5},
	LoginAccount:        Setting{0.003, 5},
	LoginFailedAttempts: Setting{0.17, 3},
	JoinsLocal:          Setting{0.1, 10},
	JoinsRemote:         Setting{0.01, 10},
	InvitesPerRoom:      Setting{0.3, 10},
	InvitesPerUser:      Setting{0.003, 5},
	InvitesPerIssuer:    Setting{0.3, 10},
	ThreePIDValidation:  Setting{0.003, 5},
	PresencePerUser:     Setting{0.1, 1},
}

// sweepEvery is how often a Limiter forgets the keys whose bucket is full again (an
// idle key's limiter is the same as a new one).
const sweepEvery = time.Minute

// Limiter is one limit applied per key. The zero Setting (from a Server built without
// limits) allows everything.
type Limiter struct {
	setting Setting
	now     func() time.Time

	mu        sync.Mutex
	keys      map[string]*rate.Limiter
	lastSweep time.Time
}

// New returns a limiter applying s per key.
func New(s Setting) *Limiter {
	return &Limiter{setting: s, now: time.Now, keys: map[string]*rate.Limiter{}}
}

// Take counts one action of key; when the limit does not allow it, it counts nothing
// and returns how long until it would.
func (l *Limiter) Take(key string) (retryAfter time.Duration, ok bool) {
	return l.take(key, true)
}

// Check returns, like Take, whether an action of key is allowed now, without counting
// one (Synapse's update=False: failed logins are counted only once they failed).
func (l *Limiter) Check(key string) (retryAfter time.Duration, ok bool) {
	return l.take(key, false)
}

func (l *Limiter) take(key string, count bool) (time.Duration, bool) {
	if l == nil || l.setting.BurstCount == 0 {
		return 0, true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	lim, found := l.keys[key]
	if !found {
		lim = rate.NewLimiter(rate.Limit(l.setting.PerSecond), l.setting.BurstCount)
		l.keys[key] = lim
	}
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return time.Duration(math.MaxInt64), false
	}
	delay := r.DelayFrom(now)
	if delay > 0 || !count {
		r.CancelAt(now)
	}
	return delay, delay == 0
}

func (l *Limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, lim := range l.keys {
		if lim.TokensAt(now) >= float64(l.setting.BurstCount) {
			delete(l.keys, k)
		}
	}
}
