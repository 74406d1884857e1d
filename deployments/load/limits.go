package load

import (
	"fmt"
	"io"
	"strings"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/gateway/ratelimit"
)

// limitUse is one rate limit the run meets, and the most actions the run takes against
// one of its keys.
type limitUse struct {
	key     string
	setting ratelimit.Setting
	actions int
	per     string
}

// throttles reports whether the limit would slow the run down: it lets through neither
// all of the run's actions at once (burst_count) nor within a second (per_second).
func (u limitUse) throttles() bool {
	return u.setting.BurstCount < u.actions && u.setting.PerSecond < float64(u.actions)
}

// limitUses lists the rate limits the server scenarios meet: every client registers
// from this machine's address, joins rooms, and sends.
func limitUses(s ratelimit.Settings, o options) []limitUse {
	perSender := max(o.seq, o.oneRoom/max(o.oneRoomClients, 1)+o.manyRooms/max(o.manyClients, 1)+o.syncSends/max(o.syncSenders, 1))
	return []limitUse{
		{"rc_registration", s.Registration, o.manyClients + 2, "registrations from one address"},
		{"rc_joins.local", s.JoinsLocal, max(o.syncSenders, 1), "joins by one user"},
		{"rc_message", s.Message, perSender, "sends by one user"},
	}
}

// checkRateLimits loads the server's configuration files, prints the rate limits the
// run meets, and refuses to run when one would throttle it: the figures would measure
// the limit, not the server. It returns the configuration.
func checkRateLimits(out io.Writer, files []string, o options) (*config.Config, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("pass the server's configuration files with -c (as given to ganglion run), so the run knows the rate limits it meets; or -skip-server")
	}
	cfg, err := config.Load(files, nil)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "rate limits of %s:\n", strings.Join(files, ", "))
	var throttled []string
	for _, u := range limitUses(cfg.RateLimits, o) {
		verdict := "ok"
		if u.throttles() {
			verdict = "THROTTLES THE RUN"
			throttled = append(throttled, u.key)
		}
		fmt.Fprintf(out, "  %-16s per_second %g, burst_count %d; the run needs %d %s: %s\n",
			u.key, u.setting.PerSecond, u.setting.BurstCount, u.actions, u.per, verdict)
	}
	if len(throttled) > 0 {
		return nil, fmt.Errorf("%s would throttle the run; start the server with generous limits for benchmarks (go tool task run-bench adds deployments/bench.yaml)",
			strings.Join(throttled, ", "))
	}
	return cfg, nil
}
