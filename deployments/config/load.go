package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"github.com/ganglionhq/ganglion/gateway/ratelimit"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/processors/appservice"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// Error is a configuration problem at one key of one file.
type Error struct {
	// File is the file the key came from; for a required key missing from
	// every file, all the files, comma-separated.
	File string
	// Key is the key path, such as "listeners[0].port"; empty when the
	// problem is the file as a whole.
	Key    string
	Reason string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return "config: " + e.File + ": " + e.Reason
	}
	return "config: " + e.File + ": " + e.Key + ": " + e.Reason
}

// maxAliases bounds how many YAML aliases one Load follows. Aliases can
// nest, so without a bound a short file can expand to billions of nodes.
const maxAliases = 1000

// Load reads the configuration files in order and merges them as Synapse
// does: a top-level key in a later file replaces the same key of an earlier
// file as a whole (a worker file that sets stream_writers replaces the
// shared file's stream_writers; nothing is merged below the top level).
//
// A key with a null value (such as "redis:" alone) counts as not set.
// Unknown keys are logged as warnings, with the file and key path, and
// ignored. Wrong types and invalid values fail; the error names the file,
// the key path and the reason, and when several keys are wrong all of them
// are reported (joined with errors.Join, each one an *Error).
//
// Relative paths in the configuration (signing_key_path, store_dir) are
// relative to the working directory, as in Synapse.
func Load(paths []string, log *zap.Logger) (*Config, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if len(paths) == 0 {
		return nil, errors.New("config: no configuration file given")
	}
	l := &loader{log: log, origin: map[string]string{}, allFiles: strings.Join(paths, ", ")}
	var top []entry
	index := map[string]int{}
	for _, p := range paths {
		for _, e := range l.readFile(p) {
			if i, ok := index[e.key]; ok {
				top[i] = e
				continue
			}
			index[e.key] = len(top)
			top = append(top, e)
		}
	}
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}

	c := &Config{
		LogLevel:          zapcore.InfoLevel,
		Redis:             Redis{Host: "localhost", Port: 6379},
		NATS:              NATS{Namespace: "ganglion"},
		InstanceMap:       map[string]InstanceLocation{},
		EnableMediaRepo:   true,
		StartPushers:      true,
		NotifyAppservices: true,
		SendFederation:    true,
		RateLimits:        ratelimit.Defaults,
		HTTPLimits:        serve.DefaultLimits,
		Presence:          userstreams.PresenceSettings{Enabled: true, Timers: userstreams.DefaultPresenceTimers},
		Media:             defaultMediaRepo(),
		UserDirectory:     UserDirectory{Enabled: true},
		ServerNotices:     ServerNotices{RoomName: defaultNoticesRoomName},
	}
	f := l.topFields(c)
	for _, e := range top {
		l.file = e.file
		if l.set(e, e.key, f) {
			l.origin[e.key] = e.file
		}
	}
	if l.usePresence != nil && !l.presenceEnabled {
		c.Presence.Enabled = *l.usePresence
	}
	if len(l.errs) == 0 {
		l.validate(c)
	}
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return c, nil
}

type loader struct {
	log  *zap.Logger
	errs []error
	// file is the file the key being decoded came from.
	file string
	// origin maps each top-level key that was set to its file, for errors
	// found after decoding.
	origin   map[string]string
	allFiles string
	aliases  int
	// usePresence is Synapse's older use_presence, which presence.enabled overrides;
	// presenceEnabled is set when presence.enabled was given.
	usePresence     *bool
	presenceEnabled bool
}

type entry struct {
	key   string
	value *yaml.Node
	file  string
}

// fields maps the keys of a mapping to their decoders.
type fields map[string]func(v *yaml.Node, path string)

func (l *loader) fail(path, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Key: path, Reason: fmt.Sprintf(format, args...)})
}

// failAt reports a problem found after decoding, against the file that set
// topKey (or every file when none did).
func (l *loader) failAt(topKey, path, format string, args ...any) {
	file := l.origin[topKey]
	if file == "" {
		file = l.allFiles
	}
	l.errs = append(l.errs, &Error{File: file, Key: path, Reason: fmt.Sprintf(format, args...)})
}

func (l *loader) warn(file, path, msg string) {
	l.log.Warn(msg, zap.String("file", file), zap.String("key", path))
}

func (l *loader) readFile(path string) []entry {
	l.file = path
	data, err := os.ReadFile(path)
	if err != nil {
		l.fail("", "%v", err)
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		l.fail("", "%v", err)
		return nil
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := l.resolve(doc.Content[0])
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		l.fail("", "the top level must be a mapping of keys, got %s", describe(root))
		return nil
	}
	out := l.entries(root, "")
	for i := range out {
		out[i].file = path
	}
	return out
}

// resolve follows an alias to its anchored node. Past the alias budget it
// returns a null node, so callers treat the value as unset.
func (l *loader) resolve(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.AliasNode {
		return n
	}
	l.aliases++
	if l.aliases > maxAliases || n.Alias == nil {
		if l.aliases == maxAliases+1 {
			l.fail("", "more than %d YAML aliases", maxAliases)
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n.Alias
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// entries lists a mapping's keys in order, with YAML merge keys ("<<")
// expanded: merged keys come after the mapping's own and never override
// them, and among merged mappings the first wins.
func (l *loader) entries(n *yaml.Node, path string) []entry {
	var own, merged []entry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := l.resolve(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, l.mergeSources(v, path)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			l.fail(path, "keys must be plain names, got %s", describe(k))
			continue
		}
		if seen[k.Value] {
			l.fail(join(path, k.Value), "set twice in the same mapping")
			continue
		}
		seen[k.Value] = true
		own = append(own, entry{key: k.Value, value: v})
	}
	for _, e := range merged {
		if !seen[e.key] {
			seen[e.key] = true
			own = append(own, e)
		}
	}
	return own
}

func (l *loader) mergeSources(v *yaml.Node, path string) []entry {
	v = l.resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		return l.entries(v, path)
	case yaml.SequenceNode:
		var out []entry
		for _, s := range v.Content {
			s = l.resolve(s)
			if s.Kind != yaml.MappingNode {
				l.fail(path, "a merge key (<<) takes mappings, got %s", describe(s))
				continue
			}
			out = append(out, l.entries(s, path)...)
		}
		return out
	}
	l.fail(path, "a merge key (<<) takes mappings, got %s", describe(v))
	return nil
}

// set decodes one entry with the decoder for its key and reports whether a
// value was set: null values leave the key unset, unknown keys warn.
func (l *loader) set(e entry, path string, f fields) bool {
	decode, ok := f[e.key]
	if !ok {
		l.warn(l.file, path, "config: unknown key, ignored")
		return false
	}
	v := l.resolve(e.value)
	if isNull(v) {
		return false
	}
	decode(v, path)
	return true
}

// mapping returns the entries of n, or none, with a type error, when n is not a
// mapping.
func (l *loader) mapping(n *yaml.Node, path string) []entry {
	n = l.resolve(n)
	if n.Kind != yaml.MappingNode {
		l.typeErr(path, "a mapping", n)
		return nil
	}
	return l.entries(n, path)
}

// object decodes a mapping with a fields table and returns the keys set.
func (l *loader) object(n *yaml.Node, path string, f fields) map[string]bool {
	set := map[string]bool{}
	for _, e := range l.mapping(n, path) {
		if l.set(e, join(path, e.key), f) {
			set[e.key] = true
		}
	}
	return set
}

func (l *loader) list(n *yaml.Node, path string, item func(v *yaml.Node, path string)) {
	n = l.resolve(n)
	if n.Kind != yaml.SequenceNode {
		l.typeErr(path, "a list", n)
		return
	}
	for i, v := range n.Content {
		item(l.resolve(v), fmt.Sprintf("%s[%d]", path, i))
	}
}

// prefixes reads a list of IP ranges in CIDR notation; a bare address is its own range.
func (l *loader) prefixes(n *yaml.Node, path string) []netip.Prefix {
	out := []netip.Prefix{}
	l.list(n, path, func(v *yaml.Node, p string) {
		s, ok := l.str(v, p)
		if !ok {
			return
		}
		if addr, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
			return
		}
		prefix, err := netip.ParsePrefix(s)
		if err != nil {
			l.fail(p, "must be an IP range such as 10.0.0.0/8, got %q", s)
			return
		}
		out = append(out, prefix.Masked())
	})
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// describe names a node's type for error messages. It never includes the
// value, which may be a secret.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		case "!!timestamp":
			return "a timestamp"
		}
		return "a value tagged " + n.ShortTag()
	}
	return "nothing"
}

func (l *loader) typeErr(path, want string, n *yaml.Node) {
	l.fail(path, "must be %s, got %s", want, describe(n))
}

func (l *loader) str(n *yaml.Node, path string) (string, bool) {
	n = l.resolve(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		l.typeErr(path, "a string", n)
		return "", false
	}
	return n.Value, true
}

func (l *loader) nonEmpty(n *yaml.Node, path string) (string, bool) {
	s, ok := l.str(n, path)
	if ok && s == "" {
		l.fail(path, "must not be empty")
		return "", false
	}
	return s, ok
}

func (l *loader) boolean(n *yaml.Node, path string) (bool, bool) {
	n = l.resolve(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	l.typeErr(path, "true or false", n)
	return false, false
}

// integer parses a whole number exactly. YAML resolves 8008.5 or 1e3 to a
// float, and decoding a float into an int truncates silently; apd parses
// the text as written so a fractional value is refused, not rounded.
func (l *loader) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	n = l.resolve(n)
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" {
		l.typeErr(path, "an integer", n)
		return 0, false
	}
	d, _, err := apd.NewFromString(strings.ReplaceAll(n.Value, "_", ""))
	if err != nil || d.Form != apd.Finite {
		l.fail(path, "must be a decimal integer, got %s", n.Value)
		return 0, false
	}
	var frac apd.Decimal
	d.Modf(nil, &frac)
	if !frac.IsZero() {
		l.fail(path, "must be a whole number, got %s", n.Value)
		return 0, false
	}
	outOfRange := func() (int64, bool) {
		l.fail(path, "must be between %d and %d, got %s", lo, hi, n.Value)
		return 0, false
	}
	// Digits before the point; past 18 the value cannot fit in the ranges
	// used here, and converting it would first expand a huge exponent.
	if !d.IsZero() && d.NumDigits()+int64(d.Exponent) > 18 {
		return outOfRange()
	}
	v, err := d.Int64()
	if err != nil || v < lo || v > hi {
		return outOfRange()
	}
	return v, true
}

func (l *loader) port(n *yaml.Node, path string) (int, bool) {
	v, ok := l.integer(n, path, 1, 65535)
	return int(v), ok
}

var instanceNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)

// instance decodes an instance name. "main" becomes MainInstance. Names
// become NATS subject tokens and consumer names, hence the character set.
func (l *loader) instance(n *yaml.Node, path string) (string, bool) {
	s, ok := l.str(n, path)
	if !ok {
		return "", false
	}
	return l.instanceName(s, path)
}

func (l *loader) instanceName(s, path string) (string, bool) {
	if !instanceNameRE.MatchString(s) {
		l.fail(path, "instance name %q must be 1 to 100 letters, digits, '_' or '-'", s)
		return "", false
	}
	if s == "main" {
		s = MainInstance
	}
	return s, true
}

func (l *loader) instances(n *yaml.Node, path string) []string {
	out := []string{}
	l.list(n, path, func(v *yaml.Node, p string) {
		if s, ok := l.instance(v, p); ok {
			if slices.Contains(out, s) {
				l.fail(p, "instance %q is listed twice", s)
				return
			}
			out = append(out, s)
		}
	})
	return out
}

var legacyWorkerApps = []string{
	"synapse.app.client_reader",
	"synapse.app.event_creator",
	"synapse.app.federation_reader",
	"synapse.app.federation_sender",
	"synapse.app.frontend_proxy",
	"synapse.app.pusher",
	"synapse.app.synchrotron",
	"synapse.app.appservice",
	"synapse.app.user_dir",
	"synapse.app.media_repository",
}

func (l *loader) topFields(c *Config) fields {
	str := l.strInto
	boolean := func(dst *bool) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			if b, ok := l.boolean(v, p); ok {
				*dst = b
			}
		}
	}
	instance := func(dst *string) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			if s, ok := l.instance(v, p); ok {
				*dst = s
			}
		}
	}
	instances := func(dst *[]string) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) { *dst = l.instances(v, p) }
	}
	f := l.rateLimitFields(&c.RateLimits)
	maps.Copy(f, fields{
		"server_name": func(v *yaml.Node, p string) {
			if s, ok := l.str(v, p); ok {
				if err := checkServerName(s); err != nil {
					l.fail(p, "%v", err)
				}
				c.ServerName = s
			}
		},
		"listeners":        func(v *yaml.Node, p string) { c.Listeners = l.listeners(v, p) },
		"worker_listeners": func(v *yaml.Node, p string) { c.WorkerListeners = l.listeners(v, p) },
		"database":         func(v *yaml.Node, p string) { c.Database = l.database(v, p) },
		"redis":            func(v *yaml.Node, p string) { l.redis(&c.Redis, v, p) },
		"nats":             func(v *yaml.Node, p string) { l.nats(&c.NATS, v, p) },
		"signing_key_path": func(v *yaml.Node, p string) {
			if s, ok := l.nonEmpty(v, p); ok {
				c.SigningKeyPath = s
			}
		},
		"enable_registration":                      boolean(&c.EnableRegistration),
		"enable_registration_without_verification": boolean(&c.EnableRegistrationWithoutVerification),
		"http_limits":                              func(v *yaml.Node, p string) { l.httpLimits(&c.HTTPLimits, v, p) },
		"presence":                                 func(v *yaml.Node, p string) { l.presence(&c.Presence, v, p) },
		"user_directory":                           func(v *yaml.Node, p string) { l.userDirectory(&c.UserDirectory, v, p) },
		"server_notices":                           func(v *yaml.Node, p string) { l.serverNotices(&c.ServerNotices, v, p) },
		"refreshable_access_token_lifetime": func(v *yaml.Node, p string) {
			if d, ok := l.synapseDuration(v, p); ok {
				c.RefreshableTokenLifetime = d
			}
		},
		"use_presence": func(v *yaml.Node, p string) {
			if b, ok := l.boolean(v, p); ok {
				l.usePresence = &b
			}
		},
		"max_json_depth": func(v *yaml.Node, p string) {
			if n, ok := l.integer(v, p, 2, 10000); ok {
				c.MaxJSONDepth = int(n)
			}
		},
		"max_to_device_messages_per_device": func(v *yaml.Node, p string) {
			if n, ok := l.integer(v, p, 1, 1_000_000); ok {
				c.MaxToDevicePerDevice = n
			}
		},
		"bcrypt_rounds": func(v *yaml.Node, p string) {
			if n, ok := l.integer(v, p, 4, 31); ok {
				c.BcryptRounds = int(n)
			}
		},
		"registration_shared_secret": str(&c.RegistrationSharedSecret),
		"app_service_config_files": func(v *yaml.Node, p string) {
			c.AppServiceConfigFiles = []string{}
			l.list(v, p, func(v *yaml.Node, p string) {
				if s, ok := l.nonEmpty(v, p); ok {
					c.AppServiceConfigFiles = append(c.AppServiceConfigFiles, s)
				}
			})
		},
		"ip_range_blacklist": func(v *yaml.Node, p string) { c.IPRangeBlacklist = l.prefixes(v, p) },
		"ip_range_blocklist": func(v *yaml.Node, p string) { c.IPRangeBlacklist = l.prefixes(v, p) },
		"ip_range_whitelist": func(v *yaml.Node, p string) { c.IPRangeWhitelist = l.prefixes(v, p) },
		"ip_range_allowlist": func(v *yaml.Node, p string) { c.IPRangeWhitelist = l.prefixes(v, p) },
		"log_level": func(v *yaml.Node, p string) {
			s, ok := l.str(v, p)
			if !ok {
				return
			}
			switch strings.ToLower(s) {
			case "debug":
				c.LogLevel = zapcore.DebugLevel
			case "info":
				c.LogLevel = zapcore.InfoLevel
			case "warn", "warning":
				c.LogLevel = zapcore.WarnLevel
			case "error":
				c.LogLevel = zapcore.ErrorLevel
			default:
				l.fail(p, "must be debug, info, warning or error, got %q", s)
			}
		},
		"worker_app": func(v *yaml.Node, p string) {
			s, ok := l.str(v, p)
			switch {
			case !ok:
			case s == "" || s == "synapse.app.homeserver":
				c.WorkerApp = ""
			case s == GenericWorker:
				c.WorkerApp = GenericWorker
			case slices.Contains(legacyWorkerApps, s):
				c.WorkerApp, c.LegacyWorkerApp = GenericWorker, s
			default:
				l.fail(p, "unknown worker app %q; use %s (or synapse.app.homeserver for the main process)", s, GenericWorker)
			}
		},
		"worker_name": func(v *yaml.Node, p string) {
			s, ok := l.instance(v, p)
			if ok && s == MainInstance {
				l.fail(p, "%q is the main process's name; a worker needs its own", v.Value)
				return
			}
			c.WorkerName = s
		},
		"instance_map":                           func(v *yaml.Node, p string) { c.InstanceMap = l.instanceMap(v, p) },
		"stream_writers":                         func(v *yaml.Node, p string) { l.streamWriters(&c.StreamWriters, v, p) },
		"worker_replication_secret":              str(&c.WorkerReplicationSecret),
		"run_background_tasks_on":                instance(&c.RunBackgroundTasksOn),
		"enable_metrics":                         boolean(&c.EnableMetrics),
		"pusher_instances":                       instances(&c.PusherInstances),
		"federation_sender_instances":            instances(&c.FederationSenderInstances),
		"notify_appservices_from_worker":         instance(&c.NotifyAppservicesFromWorker),
		"update_user_directory_from_worker":      instance(&c.UpdateUserDirectoryFromWorker),
		"media_instance_running_background_jobs": instance(&c.MediaInstanceRunningBackgroundJobs),
		"outbound_federation_restricted_to":      instances(&c.OutboundFederationRestrictedTo),
		"enable_media_repo":                      boolean(&c.EnableMediaRepo),
		"start_pushers":                          boolean(&c.StartPushers),
		"notify_appservices":                     boolean(&c.NotifyAppservices),
		"send_federation":                        boolean(&c.SendFederation),
	})
	l.mediaFields(&c.Media, f)
	l.discoveryFields(&c.Discovery, f)
	return f
}

// knownResources are the resource names Synapse's HTTP listeners accept.
var knownResources = []string{
	"client", "consent", "federation", "health", "keys", "media",
	"metrics", "openid", "replication", "static", "webclient",
}

func (l *loader) listeners(n *yaml.Node, path string) []Listener {
	out := []Listener{}
	l.list(n, path, func(v *yaml.Node, p string) {
		var ln Listener
		var bindAddress []string
		ip := func(v *yaml.Node, p string) (string, bool) {
			s, ok := l.str(v, p)
			if ok && net.ParseIP(s) == nil {
				l.fail(p, "must be an IP address, got %q", s)
				return "", false
			}
			return s, ok
		}
		set := l.object(v, p, fields{
			"port": func(v *yaml.Node, p string) { ln.Port, _ = l.port(v, p) },
			"bind_addresses": func(v *yaml.Node, p string) {
				l.list(v, p, func(v *yaml.Node, p string) {
					if s, ok := ip(v, p); ok {
						ln.BindAddresses = append(ln.BindAddresses, s)
					}
				})
			},
			"bind_address": func(v *yaml.Node, p string) {
				if s, ok := ip(v, p); ok {
					bindAddress = []string{s}
				}
			},
			"type": func(v *yaml.Node, p string) {
				s, ok := l.str(v, p)
				switch {
				case !ok:
				case s == "http" || s == "metrics":
					ln.Type = s
				case s == "manhole":
					l.fail(p, "manhole (a Python debugging shell) is not supported")
				default:
					l.fail(p, "must be http or metrics, got %q", s)
				}
			},
			"tls": func(v *yaml.Node, p string) {
				if b, ok := l.boolean(v, p); ok && b {
					l.fail(p, "TLS listeners are not supported; terminate TLS in the reverse proxy")
				}
			},
			"path": func(v *yaml.Node, p string) {
				l.fail(p, "Unix socket listeners are not supported; use port")
			},
			"x_forwarded": func(v *yaml.Node, p string) { ln.XForwarded, _ = l.boolean(v, p) },
			"routes":      func(v *yaml.Node, p string) { ln.Routes = l.routes(v, p) },
			"resources":   func(v *yaml.Node, p string) { ln.Resources = l.resources(v, p) },
		})
		ln.BindAddresses = append(ln.BindAddresses, bindAddress...)
		if !set["port"] && !set["path"] {
			l.fail(join(p, "port"), "required")
		}
		if !set["type"] {
			l.fail(join(p, "type"), "required (http or metrics)")
		}
		out = append(out, ln)
	})
	return out
}

func (l *loader) resources(n *yaml.Node, path string) []Resource {
	var out []Resource
	l.list(n, path, func(v *yaml.Node, p string) {
		var r Resource
		l.object(v, p, fields{
			"names": func(v *yaml.Node, p string) {
				l.list(v, p, func(v *yaml.Node, p string) {
					s, ok := l.str(v, p)
					if ok && !slices.Contains(knownResources, s) {
						l.fail(p, "unknown resource %q (known: %s)", s, strings.Join(knownResources, ", "))
						return
					}
					if ok {
						r.Names = append(r.Names, s)
					}
				})
			},
			"compress": func(v *yaml.Node, p string) { r.Compress, _ = l.boolean(v, p) },
		})
		out = append(out, r)
	})
	return out
}

func (l *loader) database(n *yaml.Node, path string) Database {
	var d Database
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		// The value is not echoed: a DSN usually carries a password.
		u, err := url.Parse(n.Value)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			l.fail(path, "must be a postgres:// URL or a mapping with name and args")
			return d
		}
		d.URL = n.Value
		return d
	}
	if n.Kind != yaml.MappingNode {
		l.typeErr(path, "a postgres:// URL or a mapping with name and args", n)
		return d
	}
	var dbname, database string
	set := l.object(n, path, fields{
		"name": func(v *yaml.Node, p string) {
			s, ok := l.str(v, p)
			switch {
			case !ok:
			case s == "sqlite3":
				l.fail(p, "sqlite3 is not supported; Ganglion needs Postgres (name: psycopg2)")
			case s != "psycopg2" && s != "psycopg" && s != "postgres" && s != "postgresql":
				l.fail(p, "must be psycopg2 or postgres, got %q", s)
			}
		},
		"args": func(v *yaml.Node, p string) {
			str := func(dst *string) func(*yaml.Node, string) {
				return func(v *yaml.Node, p string) { *dst, _ = l.str(v, p) }
			}
			conns := func(dst *int) func(*yaml.Node, string) {
				return func(v *yaml.Node, p string) {
					n, _ := l.integer(v, p, 1, 1000)
					*dst = int(n)
				}
			}
			l.object(v, p, fields{
				"user":     str(&d.User),
				"password": str(&d.Password),
				"dbname":   str(&dbname),
				"database": str(&database),
				"host":     str(&d.Host),
				"port":     func(v *yaml.Node, p string) { d.Port, _ = l.port(v, p) },
				"sslmode":  str(&d.SSLMode),
				"cp_min":   conns(&d.MinConns),
				"cp_max":   conns(&d.MaxConns),
			})
		},
	})
	if !set["name"] {
		l.fail(join(path, "name"), "required (psycopg2)")
	}
	if dbname != "" && database != "" && dbname != database {
		l.fail(join(path, "args"), "database and dbname name different databases; set one")
	}
	if d.MinConns > 0 && d.MaxConns > 0 && d.MinConns > d.MaxConns {
		l.fail(join(join(path, "args"), "cp_min"), "is %d, more than cp_max (%d)", d.MinConns, d.MaxConns)
	}
	d.Name = dbname
	if d.Name == "" {
		d.Name = database
	}
	return d
}

func (l *loader) redis(r *Redis, n *yaml.Node, path string) {
	l.object(n, path, fields{
		"enabled":  func(v *yaml.Node, p string) { r.Enabled, _ = l.boolean(v, p) },
		"host":     func(v *yaml.Node, p string) { r.Host, _ = l.nonEmpty(v, p) },
		"port":     func(v *yaml.Node, p string) { r.Port, _ = l.port(v, p) },
		"password": func(v *yaml.Node, p string) { r.Password, _ = l.str(v, p) },
		"dbid": func(v *yaml.Node, p string) {
			id, _ := l.integer(v, p, 0, 1<<31-1)
			r.DBID = int(id)
		},
	})
}

var namespaceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (l *loader) nats(c *NATS, n *yaml.Node, path string) {
	var emb EmbeddedNATS
	interval, always, intervalSet := 2*time.Minute, false, false
	set := l.object(n, path, fields{
		"url": func(v *yaml.Node, p string) {
			s, ok := l.nonEmpty(v, p)
			if !ok {
				return
			}
			for _, part := range strings.Split(s, ",") {
				u, err := url.Parse(strings.TrimSpace(part))
				if err != nil || u.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) {
					// Not echoed: the URL may carry credentials.
					l.fail(p, "must be nats://host:port (or tls://, ws://, wss://), comma-separated for a cluster")
					return
				}
			}
			c.URL = s
		},
		"embedded": func(v *yaml.Node, p string) {
			es := l.object(v, p, fields{
				"store_dir": func(v *yaml.Node, p string) { emb.StoreDir, _ = l.nonEmpty(v, p) },
				"port": func(v *yaml.Node, p string) {
					port, _ := l.integer(v, p, 0, 65535)
					emb.Port = int(port)
				},
			})
			if !es["store_dir"] {
				l.fail(join(p, "store_dir"), "required: JetStream keeps the event log there")
			}
		},
		"namespace": func(v *yaml.Node, p string) {
			s, ok := l.str(v, p)
			if ok && !namespaceRE.MatchString(s) {
				l.fail(p, "must be 1 to 64 letters, digits, '_' or '-', got %q", s)
				return
			}
			c.Namespace = s
		},
		"replicas": func(v *yaml.Node, p string) {
			if n, ok := l.integer(v, p, 1, 5); ok {
				c.Replicas = int(n)
			}
		},
		"sync_interval": func(v *yaml.Node, p string) {
			s, ok := l.str(v, p)
			if !ok {
				return
			}
			intervalSet = true
			if s == "always" {
				always = true
				return
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				l.fail(p, `must be a positive duration such as "2m", or "always", got %q`, s)
				return
			}
			interval = d
		},
	})
	switch {
	case set["url"] && set["embedded"]:
		l.fail(path, "set url or embedded, not both")
	case set["url"]:
		if intervalSet {
			l.warn(l.file, join(path, "sync_interval"), "config: sync_interval applies only to the embedded server, ignored")
		}
	case set["embedded"]:
		emb.SyncInterval, emb.SyncAlways = interval, always
		c.Embedded = &emb
		if c.Replicas > 1 {
			l.fail(join(path, "replicas"), "the embedded server is a single server: replicas needs a cluster's url")
		}
	default:
		l.fail(path, "set url (an external server) or embedded (a server in this process)")
	}
}

func (l *loader) instanceMap(n *yaml.Node, path string) map[string]InstanceLocation {
	out := map[string]InstanceLocation{}
	for _, e := range l.mapping(n, path) {
		p := join(path, e.key)
		name, ok := l.instanceName(e.key, p)
		if !ok {
			continue
		}
		if _, dup := out[name]; dup {
			l.fail(p, "main and master are the same instance; list it once")
			continue
		}
		var loc InstanceLocation
		set := l.object(e.value, p, fields{
			"host": func(v *yaml.Node, p string) { loc.Host, _ = l.nonEmpty(v, p) },
			"port": func(v *yaml.Node, p string) { loc.Port, _ = l.port(v, p) },
			"tls":  func(v *yaml.Node, p string) { loc.TLS, _ = l.boolean(v, p) },
			"path": func(v *yaml.Node, p string) { loc.Path, _ = l.nonEmpty(v, p) },
		})
		tcp := set["host"] || set["port"] || set["tls"]
		switch {
		case set["path"] && tcp:
			l.fail(p, "set host and port, or path, not both")
		case set["path"]:
		case !set["host"] || !set["port"]:
			l.fail(p, "needs host and port (or path for a Unix socket)")
		}
		out[name] = loc
	}
	return out
}

// stream describes one stream_writers entry. Synapse allows several
// writers only for events and receipts; accounts is Ganglion's own.
type stream struct {
	name    string
	writers *[]string
	many    bool
}

func (s *StreamWriters) streams() []stream {
	return []stream{
		{"events", &s.Events, true},
		{"typing", &s.Typing, false},
		{"to_device", &s.ToDevice, true},
		{"account_data", &s.AccountData, true},
		{"receipts", &s.Receipts, true},
		{"presence", &s.Presence, false},
		{"push_rules", &s.PushRules, false},
		{"device_lists", &s.DeviceLists, true},
		{"accounts", &s.Accounts, true},
	}
}

func (l *loader) streamWriters(w *StreamWriters, n *yaml.Node, path string) {
	f := fields{}
	for _, s := range w.streams() {
		f[s.name] = func(v *yaml.Node, p string) {
			if v.Kind == yaml.ScalarNode {
				if name, ok := l.instance(v, p); ok {
					*s.writers = []string{name}
				}
				return
			}
			names := l.instances(v, p)
			switch {
			case len(names) == 0:
				l.fail(p, "must name at least one instance")
			case len(names) > 1 && !s.many:
				l.fail(p, "only one instance can write %s", s.name)
			}
			*s.writers = names
		}
	}
	l.object(n, path, f)
}

// validate checks what involves several keys, after decoding.
func (l *loader) validate(c *Config) {
	l.validateMedia(&c.Media)
	c.origins, c.files = l.origin, l.allFiles
	l.checkListeners(c)
	for _, key := range []string{"server_name", "database", "nats", "signing_key_path"} {
		if _, ok := l.origin[key]; !ok {
			l.failAt(key, key, "required")
		}
	}

	switch {
	case !c.IsMain() && c.WorkerName == "":
		l.failAt("worker_app", "worker_name", "required for a worker (worker_app is set)")
	case c.IsMain() && c.WorkerName != "":
		l.failAt("worker_name", "worker_name", "set for the main process; add worker_app: %s to make this a worker", GenericWorker)
	case c.IsMain() && len(c.WorkerListeners) > 0:
		l.warn(l.origin["worker_listeners"], "worker_listeners", "config: worker_listeners is ignored by the main process, which uses listeners")
	}

	l.checkOpenRegistration(c)

	services, errs := appservice.Load(c.AppServiceConfigFiles, c.ServerName)
	for _, err := range errs {
		var ce *appservice.ConfigError
		if errors.As(err, &ce) {
			l.errs = append(l.errs, &Error{File: ce.File, Key: ce.Key, Reason: ce.Reason})
		} else {
			l.failAt("app_service_config_files", "app_service_config_files", "%v", err)
		}
	}
	c.AppServices = services

	// Synapse's rule: every stream writer other than the main process must
	// be in instance_map, and then so must the main process, since the
	// workers reach it through instance_map.
	workerWriter := false
	for _, s := range c.StreamWriters.streams() {
		if len(*s.writers) == 0 {
			*s.writers = []string{MainInstance}
		}
		for _, name := range *s.writers {
			if name == MainInstance {
				continue
			}
			workerWriter = true
			if _, ok := c.InstanceMap[name]; !ok {
				l.failAt("stream_writers", "stream_writers."+s.name, "instance %q is not in instance_map", name)
			}
		}
	}
	if _, ok := c.InstanceMap[MainInstance]; workerWriter && !ok {
		key := "instance_map"
		if _, set := l.origin[key]; !set {
			key = "stream_writers"
		}
		l.failAt(key, "instance_map", "must list main when stream_writers names a worker")
	}

	if len(c.OutboundFederationRestrictedTo) > 0 {
		if c.WorkerReplicationSecret == "" {
			l.failAt("outbound_federation_restricted_to", "worker_replication_secret", "required when outbound_federation_restricted_to is set")
		}
		for _, name := range c.OutboundFederationRestrictedTo {
			if _, ok := c.InstanceMap[name]; !ok {
				l.failAt("outbound_federation_restricted_to", "outbound_federation_restricted_to", "instance %q is not in instance_map", name)
			}
		}
	}

	// A legacy pusher or federation sender only takes over from the main
	// process when the shared file turns the duty off there (Synapse).
	legacy := []struct {
		app, option string
		on          bool
		instances   []string
	}{
		{"synapse.app.pusher", "start_pushers", c.StartPushers, c.PusherInstances},
		{"synapse.app.federation_sender", "send_federation", c.SendFederation, c.FederationSenderInstances},
		{"synapse.app.appservice", "notify_appservices", c.NotifyAppservices && c.NotifyAppservicesFromWorker == "", nil},
	}
	for _, d := range legacy {
		if c.LegacyWorkerApp == d.app && d.instances == nil && d.on {
			l.failAt("worker_app", "worker_app", "%s needs %s: false in the shared configuration", d.app, d.option)
		}
	}
}

var dnsNameRE = regexp.MustCompile(`^[A-Za-z0-9.-]{1,255}$`)

// checkServerName applies the Matrix grammar: a DNS name, an IPv4 address
// or a bracketed IPv6 address, optionally followed by :port.
func checkServerName(s string) error {
	host, port, hasPort := s, "", false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return fmt.Errorf("must be host[:port], got %q", s)
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return fmt.Errorf("must be host[:port], got %q", s)
			}
			port, hasPort = rest[1:], true
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil || strings.Contains(host, "%") {
			return fmt.Errorf("%q is not an IPv6 address", host)
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port, hasPort = s[:i], s[i+1:], true
		}
		if !dnsNameRE.MatchString(host) {
			return fmt.Errorf("must be host[:port] with a DNS name or IP address, got %q", s)
		}
	}
	if hasPort {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || port[0] == '+' || port[0] == '0' {
			return fmt.Errorf("port must be between 1 and 65535, got %q", port)
		}
	}
	return nil
}

// checkListeners refuses two listeners of the process on one address and port, a
// replication listener reachable from other machines without a secret, and a media
// resource on a process that serves no media.
func (l *loader) checkListeners(c *Config) {
	key, all := "listeners", c.Listeners
	if !c.IsMain() {
		key, all = "worker_listeners", c.WorkerListeners
	}
	type bound struct {
		host     string
		listener int
	}
	wildcard := func(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }
	byPort := map[string][]bound{}
	for i, ln := range all {
		for _, addr := range ln.Addrs() {
			host, port, _ := net.SplitHostPort(addr)
			for _, b := range byPort[port] {
				// An address on every interface takes the port from every other.
				if b.listener != i && (b.host == host || wildcard(b.host) || wildcard(host)) {
					l.failAt(key, fmt.Sprintf("%s[%d].port", key, i), "port %s is also %s[%d]'s", port, key, b.listener)
				}
			}
			byPort[port] = append(byPort[port], bound{host, i})
		}
		if ln.Has("replication") && !ln.loopbackOnly() && c.WorkerReplicationSecret == "" {
			l.failAt(key, fmt.Sprintf("%s[%d].resources", key, i),
				"a replication listener off loopback needs worker_replication_secret")
		}
		for _, g := range ln.Routes {
			if !c.servesRoute(ln, g) {
				l.failAt(key, fmt.Sprintf("%s[%d].routes", key, i),
					"route %s needs a listener with the %s resource", g, routeResource(g))
			}
		}
		if ln.Has("media") && !c.ServesMedia() {
			l.failAt(key, fmt.Sprintf("%s[%d].resources", key, i),
				"this process serves no media: the media resource needs the main process with enable_media_repo or a synapse.app.media_repository worker")
		}
	}
}
