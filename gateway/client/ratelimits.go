package client

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/ratelimit"
)

// limiters apply Server.RateLimits with Synapse's keys. rc_joins.remote and
// rc_3pid_validation have nothing to limit yet (no federation, no third-party ids).
// Synapse exempts appservices configured with rate_limited: false, and users with a
// ratelimit_override; Ganglion has neither yet.
type limiters struct {
	message          *ratelimit.Limiter // by sender
	registration     *ratelimit.Limiter // by client IP, counted on success
	loginAddress     *ratelimit.Limiter // by client IP, every attempt
	loginAccount     *ratelimit.Limiter // by user, successful logins
	loginFailed      *ratelimit.Limiter // by user, failed logins
	joinsLocal       *ratelimit.Limiter // by joining user
	invitesPerRoom   *ratelimit.Limiter // by room
	invitesPerUser   *ratelimit.Limiter // by invitee
	invitesPerIssuer *ratelimit.Limiter // by inviter
	// rc_presence.per_user, by user: PUT /presence is refused beyond it, and a
	// /sync beyond it leaves presence alone. Each has its own buckets, as in Synapse.
	presencePut  *ratelimit.Limiter
	presenceSync *ratelimit.Limiter
}

func newLimiters(s ratelimit.Settings) *limiters {
	return &limiters{
		message:          ratelimit.New(s.Message),
		registration:     ratelimit.New(s.Registration),
		loginAddress:     ratelimit.New(s.LoginAddress),
		loginAccount:     ratelimit.New(s.LoginAccount),
		loginFailed:      ratelimit.New(s.LoginFailedAttempts),
		joinsLocal:       ratelimit.New(s.JoinsLocal),
		invitesPerRoom:   ratelimit.New(s.InvitesPerRoom),
		invitesPerUser:   ratelimit.New(s.InvitesPerUser),
		invitesPerIssuer: ratelimit.New(s.InvitesPerIssuer),
		presencePut:      ratelimit.New(s.PresencePerUser),
		presenceSync:     ratelimit.New(s.PresencePerUser),
	}
}

// limitExceeded is the 429 of a refused action: M_LIMIT_EXCEEDED with retry_after_ms in
// the body and Retry-After (whole seconds, rounded up) in the headers.
func limitExceeded(w http.ResponseWriter, retry time.Duration) {
	ms := int64(math.Ceil(float64(retry) / float64(time.Millisecond)))
	w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	matrix.WriteError(w, matrix.Errorf(http.StatusTooManyRequests, matrix.CodeLimitExceeded, "Too Many Requests").With("retry_after_ms", ms))
}

// take counts an action of key against lim; when lim refuses it, it answers 429 and
// returns false.
func take(w http.ResponseWriter, lim *ratelimit.Limiter, key string) bool {
	if retry, ok := lim.Take(key); !ok {
		limitExceeded(w, retry)
		return false
	}
	return true
}

// check is take without counting the action.
func check(w http.ResponseWriter, lim *ratelimit.Limiter, key string) bool {
	if retry, ok := lim.Check(key); !ok {
		limitExceeded(w, retry)
		return false
	}
	return true
}

// allowMembership applies rc_joins to a join and rc_invites (per room, per invitee, per
// inviter, in Synapse's order) to an invite.
func (s *Server) allowMembership(w http.ResponseWriter, dev Device, room, target, membership string) bool {
	if unlimited(dev) {
		return true
	}
	switch membership {
	case "join", "knock":
		return take(w, s.limits.joinsLocal, dev.UserID)
	case "invite":
		return take(w, s.limits.invitesPerRoom, room) && take(w, s.limits.invitesPerUser, target) &&
			take(w, s.limits.invitesPerIssuer, dev.UserID)
	}
	return true
}

// unlimited reports whether dev is an application service registered with
// rate_limited: false, which Synapse's limits on messages and memberships spare.
func unlimited(dev Device) bool {
	return dev.AppService != nil && dev.AppService.RateLimited != nil && !*dev.AppService.RateLimited
}
