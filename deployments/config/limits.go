package config

import (
	"math"
	"net"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ganglionhq/ganglion/gateway/ratelimit"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// rateLimitFields decodes Synapse's rc_* keys into s: each is a mapping of per_second
// and burst_count, or (rc_login, rc_joins, rc_invites) a mapping of such mappings.
func (l *loader) rateLimitFields(s *ratelimit.Settings) fields {
	one := func(dst *ratelimit.Setting) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) { l.rateLimit(dst, v, p) }
	}
	group := func(sub map[string]*ratelimit.Setting) func(*yaml.Node, string) {
		f := fields{}
		for k, dst := range sub {
			f[k] = one(dst)
		}
		return func(v *yaml.Node, p string) { l.object(v, p, f) }
	}
	return fields{
		"rc_message":         one(&s.Message),
		"rc_registration":    one(&s.Registration),
		"rc_3pid_validation": one(&s.ThreePIDValidation),
		"rc_login": group(map[string]*ratelimit.Setting{
			"address": &s.LoginAddress, "account": &s.LoginAccount, "failed_attempts": &s.LoginFailedAttempts,
		}),
		"rc_joins": group(map[string]*ratelimit.Setting{"local": &s.JoinsLocal, "remote": &s.JoinsRemote}),
		"rc_invites": group(map[string]*ratelimit.Setting{
			"per_room": &s.InvitesPerRoom, "per_user": &s.InvitesPerUser, "per_issuer": &s.InvitesPerIssuer,
		}),
		"rc_presence": group(map[string]*ratelimit.Setting{"per_user": &s.PresencePerUser}),
	}
}

// rateLimit decodes one limit; a key it leaves out keeps Synapse's default.
func (l *loader) rateLimit(dst *ratelimit.Setting, n *yaml.Node, path string) {
	l.object(n, path, fields{
		"per_second": func(v *yaml.Node, p string) {
			if f, ok := l.number(v, p); ok {
				if f <= 0 {
					l.fail(p, "must be a positive number of actions per second, got %s", v.Value)
					return
				}
				dst.PerSecond = f
			}
		},
		"burst_count": func(v *yaml.Node, p string) {
			if b, ok := l.integer(v, p, 1, math.MaxInt32); ok {
				dst.BurstCount = int(b)
			}
		},
	})
}

// number decodes a finite YAML number (an integer or a float).
func (l *loader) number(n *yaml.Node, path string) (float64, bool) {
	n = l.resolve(n)
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" {
		l.typeErr(path, "a number", n)
		return 0, false
	}
	f, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		l.fail(path, "must be a finite decimal number, got %s", n.Value)
		return 0, false
	}
	return f, true
}

// duration decodes a positive Go duration such as "30s".
func (l *loader) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := l.str(n, path)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		l.fail(path, `must be a positive duration such as "30s", got %q`, s)
		return 0, false
	}
	return d, true
}

// httpLimits decodes http_limits (Ganglion's own key; Synapse has none): the timeouts
// of every HTTP listener and the cap on one client IP's connections.
func (l *loader) httpLimits(dst *serve.Limits, n *yaml.Node, path string) {
	dur := func(d *time.Duration) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			if v, ok := l.duration(v, p); ok {
				*d = v
			}
		}
	}
	l.object(n, path, fields{
		"read_header_timeout": dur(&dst.ReadHeaderTimeout),
		"read_timeout":        dur(&dst.ReadTimeout),
		"write_timeout":       dur(&dst.WriteTimeout),
		"idle_timeout":        dur(&dst.IdleTimeout),
		"max_connections_per_ip": func(v *yaml.Node, p string) {
			if m, ok := l.integer(v, p, 0, math.MaxInt32); ok {
				dst.MaxConnsPerIP = int(m)
			}
		},
	})
}

// checkOpenRegistration refuses open registration without a verification step on a
// listener other people can reach (Synapse refuses it on any listener). Ganglion has no
// verification step (email, msisdn, captcha or registration token), so anyone reaching
// such a listener could create accounts by the thousand.
func (l *loader) checkOpenRegistration(c *Config) {
	if !c.EnableRegistration || c.EnableRegistrationWithoutVerification {
		return
	}
	for _, ln := range c.HTTPListeners() {
		if !ln.Has("client") || ln.loopbackOnly() {
			continue
		}
		l.failAt("enable_registration", "enable_registration",
			"open registration needs a verification step (email, msisdn, captcha or registration token), which Ganglion does not have, "+
				"and listener port %d is not on loopback; set enable_registration_without_verification: true to allow anyone reaching it to create accounts", ln.Port)
		return
	}
}

// loopbackOnly reports whether the listener binds loopback addresses only.
func (ln Listener) loopbackOnly() bool {
	if len(ln.BindAddresses) == 0 {
		return false
	}
	for _, a := range ln.BindAddresses {
		if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// presence decodes Synapse's presence section. enabled is true, false or "untracked"
// (presence shown, but changed by nothing clients do); the timers are Synapse's
// durations and must keep Synapse's order (idle_timeout above
// last_active_granularity).
func (l *loader) presence(dst *userstreams.PresenceSettings, n *yaml.Node, path string) {
	dur := func(d *time.Duration) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			if v, ok := l.synapseDuration(v, p); ok {
				*d = v
			}
		}
	}
	l.object(n, path, fields{
		"enabled": func(v *yaml.Node, p string) {
			v = l.resolve(v)
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" && v.Value == "untracked" {
				dst.Enabled, dst.Untracked = true, true
				l.presenceEnabled = true
				return
			}
			if b, ok := l.boolean(v, p); ok {
				dst.Enabled, dst.Untracked = b, false
				l.presenceEnabled = true
			}
		},
		"include_offline_users_on_sync": func(v *yaml.Node, p string) {
			if b, ok := l.boolean(v, p); ok {
				dst.IncludeOfflineUsersOnSync = b
			}
		},
		"last_active_granularity": dur(&dst.Timers.LastActiveGranularity),
		"sync_online_timeout":     dur(&dst.Timers.SyncOnlineTimeout),
		"idle_timeout":            dur(&dst.Timers.IdleTimeout),
	})
	if dst.Timers.IdleTimeout <= dst.Timers.LastActiveGranularity {
		l.fail(path+".idle_timeout", "must be longer than last_active_granularity (%s), got %s",
			dst.Timers.LastActiveGranularity, dst.Timers.IdleTimeout)
	}
}

// synapseDuration decodes a duration as Synapse writes them: an integer of
// milliseconds, or a string of digits with an optional unit among s, m, h, d, w and y
// (no unit: milliseconds). It must be positive.
func (l *loader) synapseDuration(n *yaml.Node, path string) (time.Duration, bool) {
	n = l.resolve(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		ms, ok := l.integer(n, path, 1, math.MaxInt64/int64(time.Millisecond))
		return time.Duration(ms) * time.Millisecond, ok
	}
	s, ok := l.str(n, path)
	if !ok {
		return 0, false
	}
	units := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour,
		'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	unit, digits := time.Millisecond, s
	if s != "" {
		if u, ok := units[s[len(s)-1]]; ok {
			unit, digits = u, s[:len(s)-1]
		}
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v <= 0 || v > int64(math.MaxInt64/unit) {
		l.fail(path, `must be a positive duration such as "30s", "5m" or a number of milliseconds, got %q`, s)
		return 0, false
	}
	return time.Duration(v) * unit, true
}
