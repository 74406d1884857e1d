// Package config reads Ganglion's YAML configuration.
//
// The vocabulary is Synapse's, so an operator's existing homeserver.yaml and
// worker files keep their meaning: a process starts as
//
//	ganglion run -c shared.yaml [-c worker.yaml]
//
// and the files are merged as Synapse merges them (see Load). Keys Synapse
// knows but Ganglion does not use are reported as warnings, never as errors,
// so the same files can serve both during a migration.
package config

import (
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/ganglionhq/ganglion/gateway/frontdoor"
	"github.com/ganglionhq/ganglion/gateway/ratelimit"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/processors/appservice"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// MainInstance is the instance name of the main process. Synapse calls it
// "master" internally and accepts "main" in instance_map and stream_writers;
// Load rewrites "main" to this name everywhere an instance is named.
const MainInstance = "master"

// GenericWorker is the worker_app of every worker. The legacy worker apps
// are aliases of it (see Config.LegacyWorkerApp).
const GenericWorker = "synapse.app.generic_worker"

// Config is one process's configuration after merging its files.
type Config struct {
	// ServerName is the Matrix server name (host[:port]), the domain part
	// of user ids and the Redis replication channel.
	ServerName string
	// Listeners are the main process's listeners. Workers use
	// WorkerListeners instead, as in Synapse; see HTTPListeners.
	Listeners []Listener
	Database  Database
	Redis     Redis
	NATS      NATS
	// SigningKeyPath is the file holding the server's ed25519 signing key,
	// in Synapse's format (see LoadSigningKey).
	SigningKeyPath string
	// origins maps each top-level key that was set to its file, and files lists every
	// file, for errors found after loading.
	origins            map[string]string
	files              string
	EnableRegistration bool
	// EnableRegistrationWithoutVerification is Synapse's explicit consent to open
	// registration without a verification step; Load refuses open registration on a
	// listener off loopback without it.
	EnableRegistrationWithoutVerification bool
	RegistrationSharedSecret              string
	// RateLimits are Synapse's rc_* limits, Synapse's defaults where not set.
	RateLimits ratelimit.Settings
	// Presence is Synapse's presence section (and its older use_presence key):
	// enabled and tracked by default, with Synapse's timers.
	Presence userstreams.PresenceSettings
	// HTTPLimits are the timeouts and per-IP connection cap of every HTTP listener
	// (http_limits, Ganglion's own key).
	HTTPLimits serve.Limits
	// BcryptRounds is the cost of password hashes (Synapse's bcrypt_rounds); 0 means
	// the default of 12.
	BcryptRounds int
	// MaxJSONDepth bounds how deeply request JSON may nest (max_json_depth, Ganglion's
	// own key); 0 means the default of 100.
	MaxJSONDepth int
	// MaxToDevicePerDevice bounds the to-device messages a device that does not sync
	// holds, the oldest dropped past it (max_to_device_messages_per_device, Ganglion's
	// own key; Synapse keeps them all); 0 means the default of 10,000.
	MaxToDevicePerDevice int64
	// IPRangeBlacklist and IPRangeWhitelist are Synapse's ip_range_blacklist and
	// ip_range_whitelist (or their newer names ip_range_blocklist and
	// ip_range_allowlist): outbound requests (push gateways) may not reach an address
	// in the first unless it is in the second.
	IPRangeBlacklist, IPRangeWhitelist []netip.Prefix
	// Media is the media repository's configuration.
	Media MediaRepo
	// Discovery is what clients are told of the server and of TURN servers.
	Discovery Discovery
	// EnableMetrics is enable_metrics: listeners of type metrics serve Prometheus
	// metrics at /_synapse/metrics.
	EnableMetrics bool
	// UserDirectory is the user_directory section.
	UserDirectory UserDirectory
	// ServerNotices is the server_notices section.
	ServerNotices ServerNotices
	// RefreshableTokenLifetime is refreshable_access_token_lifetime: how long an
	// access token given with a refresh token lasts (0: Synapse's 5 minutes).
	RefreshableTokenLifetime time.Duration
	// LogLevel is the minimum level logged; "info" when not set.
	LogLevel zapcore.Level

	// WorkerApp is "" for the main process and GenericWorker for a worker.
	WorkerApp string
	// LegacyWorkerApp keeps a legacy worker_app name (for example
	// "synapse.app.pusher") when one was given: Synapse derives some duties
	// from it, see Pushers and FederationSenders.
	LegacyWorkerApp string
	WorkerName      string
	WorkerListeners []Listener
	// InstanceMap tells processes where to reach each other's replication
	// listener, by instance name ("main" is stored as MainInstance).
	InstanceMap             map[string]InstanceLocation
	StreamWriters           StreamWriters
	WorkerReplicationSecret string

	// RunBackgroundTasksOn is run_background_tasks_on as set ("" when not); see
	// BackgroundTasksOn.
	RunBackgroundTasksOn string
	// PusherInstances and FederationSenderInstances are nil when the key is
	// not set, which differs from an empty list: unset lets start_pushers /
	// send_federation and legacy worker apps decide (see Pushers).
	PusherInstances                    []string
	FederationSenderInstances          []string
	NotifyAppservicesFromWorker        string
	UpdateUserDirectoryFromWorker      string
	MediaInstanceRunningBackgroundJobs string
	OutboundFederationRestrictedTo     []string
	// EnableMediaRepo, StartPushers and SendFederation default to true, as
	// in Synapse.
	EnableMediaRepo bool
	StartPushers    bool
	SendFederation  bool
	// NotifyAppservices is Synapse's older notify_appservices (default true): false
	// hands the appservice sender to a legacy synapse.app.appservice worker.
	NotifyAppservices bool

	// AppServiceConfigFiles are the registration files of app_service_config_files;
	// AppServices is what they register, checked.
	AppServiceConfigFiles []string
	AppServices           *appservice.Services
}

// Listener is one entry of listeners or worker_listeners.
type Listener struct {
	Port int
	// BindAddresses merges Synapse's bind_addresses and bind_address.
	// Empty means every interface.
	BindAddresses []string
	// Type is "http" or "metrics".
	Type       string
	XForwarded bool
	Resources  []Resource
	// Routes are the front door's groups this listener takes (routes, Ganglion's own
	// key); nil when not set, which takes the groups of its resources (see Routes).
	Routes []frontdoor.Group
}

// Resource is one entry of a listener's resources.
type Resource struct {
	Names    []string
	Compress bool
}

// InstanceLocation is where an instance's replication listener is reached:
// Host and Port (and TLS), or Path for a Unix socket.
type InstanceLocation struct {
	Host string
	Port int
	TLS  bool
	Path string
}

// StreamWriters names the instances writing each stream. After Load every
// list is non-empty; a stream not configured is written by MainInstance.
type StreamWriters struct {
	Events      []string
	Typing      []string
	ToDevice    []string
	AccountData []string
	Receipts    []string
	Presence    []string
	PushRules   []string
	DeviceLists []string
	// Accounts is Ganglion's own key: the writers of the accounts stream (accounts,
	// devices, tokens, profiles, filters, forgotten rooms, aliases), sharded by user ID
	// and by alias.
	Accounts []string
}

// UserStreamWriters returns the writers of every stream but events, by stream name.
func (c *Config) UserStreamWriters() map[string][]string {
	out := map[string][]string{}
	for _, s := range c.StreamWriters.streams() {
		if s.name != "events" {
			out[s.name] = *s.writers
		}
	}
	return out
}

// Database is the Postgres connection, given either as a DSN string or as
// Synapse's {name: psycopg2, args: {...}} mapping.
type Database struct {
	// URL is the DSN when the configuration gave a string.
	URL string
	// The rest comes from Synapse's args mapping; empty fields are left to
	// libpq's defaults (local socket, the OS user's name).
	User     string
	Password string
	Name     string
	Host     string
	Port     int
	SSLMode  string
	// MinConns and MaxConns size the process's connection pool (Synapse's cp_min and
	// cp_max); 0 leaves pgxpool's defaults.
	MinConns, MaxConns int
}

// Redis is Synapse's redis section. Ganglion uses Redis only to publish
// replication positions for Synapse-compatible tooling and as a cache.
type Redis struct {
	Enabled  bool
	Host     string
	Port     int
	Password string
	DBID     int
}

// NATS says which NATS server carries the streams: an external one at URL,
// or one embedded in this process.
type NATS struct {
	// URL is one or more comma-separated server URLs.
	URL      string
	Embedded *EmbeddedNATS
	// Namespace prefixes every stream and subject ("ganglion" when unset) so
	// several homeservers, or tests, can share one NATS server.
	Namespace string
	// Replicas is how many servers of the NATS cluster hold each stream and
	// consumer (nats.replicas, Ganglion's own key): 1 by default, 3 for a cluster of
	// three, which then loses nothing acknowledged when one server fails.
	Replicas int
}

// EmbeddedNATS configures the NATS server run inside this process.
type EmbeddedNATS struct {
	// StoreDir holds JetStream's files.
	StoreDir string
	// Port is the client port; 0 means no TCP listener at all, so only
	// this process (connecting in-process) can reach the server.
	Port int
	// SyncInterval and SyncAlways are JetStream's durability setting, the
	// operator's choice between throughput and what survives a power loss:
	// with an interval (2m by default, as in nats-server) an acknowledged
	// event sits in the OS page cache until the next fsync, which survives a
	// crash of the process but not of the machine; "always" fsyncs every
	// message before acknowledging it, at roughly a quarter of the
	// publish rate on a small machine.
	SyncInterval time.Duration
	SyncAlways   bool
}

// InstanceName is this process's instance name: its worker_name, or
// MainInstance for the main process.
func (c *Config) InstanceName() string {
	if c.WorkerName != "" {
		return c.WorkerName
	}
	return MainInstance
}

// IsMain reports whether this is the main process.
func (c *Config) IsMain() bool { return c.WorkerApp == "" }

// EventWriters lists the event persisters in configuration order, which is
// the order the sharding function indexes into.
func (c *Config) EventWriters() []string {
	if len(c.StreamWriters.Events) == 0 {
		return []string{MainInstance}
	}
	return c.StreamWriters.Events
}

// IsEventWriter reports whether this process persists events.
func (c *Config) IsEventWriter() bool {
	return slices.Contains(c.EventWriters(), c.InstanceName())
}

// MetricsListeners are this process's listeners of type metrics, which serve
// /_synapse/metrics when enable_metrics is true.
func (c *Config) MetricsListeners() []Listener {
	if !c.EnableMetrics {
		return nil
	}
	return c.listenersOf("metrics")
}

// HTTPListeners returns this process's HTTP listeners: listeners for the
// main process, worker_listeners for a worker (a worker ignores the main
// process's listeners from the shared file, as in Synapse).
func (c *Config) HTTPListeners() []Listener { return c.listenersOf("http") }

// listenersOf returns this process's listeners of type typ.
func (c *Config) listenersOf(typ string) []Listener {
	all := c.Listeners
	if !c.IsMain() {
		all = c.WorkerListeners
	}
	var out []Listener
	for _, l := range all {
		if l.Type == typ {
			out = append(out, l)
		}
	}
	return out
}

// BackgroundTasksOn names the instance running the background tasks: the one
// run_background_tasks_on names, the main process by default.
func (c *Config) BackgroundTasksOn() string {
	if c.RunBackgroundTasksOn == "" {
		return MainInstance
	}
	return c.RunBackgroundTasksOn
}

// Pushers lists the instances sending push notifications, with Synapse's
// rules: pusher_instances when set; otherwise the main process unless
// start_pushers is false, in which case a legacy synapse.app.pusher worker
// pushes (and knows only itself).
func (c *Config) Pushers() []string {
	return c.duty(c.PusherInstances, c.StartPushers, "synapse.app.pusher")
}

// FederationSenders lists the instances sending federation traffic, with
// the same rules as Pushers over federation_sender_instances,
// send_federation and synapse.app.federation_sender.
func (c *Config) FederationSenders() []string {
	return c.duty(c.FederationSenderInstances, c.SendFederation, "synapse.app.federation_sender")
}

// AppServiceSender names the instance delivering to application services, with
// Synapse's rules: notify_appservices_from_worker when set; otherwise the main process
// unless notify_appservices is false, in which case a legacy synapse.app.appservice
// worker does. "" is nobody.
func (c *Config) AppServiceSender() string {
	if c.NotifyAppservicesFromWorker != "" {
		return c.NotifyAppservicesFromWorker
	}
	if d := c.duty(nil, c.NotifyAppservices, "synapse.app.appservice"); len(d) == 1 {
		return d[0]
	}
	return ""
}

func (c *Config) duty(instances []string, onMain bool, legacyApp string) []string {
	switch {
	case instances != nil:
		return instances
	case c.LegacyWorkerApp == legacyApp:
		return []string{c.WorkerName}
	case onMain:
		return []string{MainInstance}
	}
	return []string{}
}

// Addrs returns the host:port addresses to listen on. With no bind address
// it is one wildcard address, which Go serves on IPv4 and IPv6 alike. For
// the same reason "0.0.0.0" is dropped when "::" is also listed (Synapse's
// default pair), since binding both would fail with "address in use".
func (l Listener) Addrs() []string {
	port := strconv.Itoa(l.Port)
	if len(l.BindAddresses) == 0 {
		return []string{net.JoinHostPort("", port)}
	}
	dualStack := slices.Contains(l.BindAddresses, "::")
	var out []string
	for _, a := range l.BindAddresses {
		if a == "0.0.0.0" && dualStack {
			continue
		}
		out = append(out, net.JoinHostPort(a, port))
	}
	return out
}

// Has reports whether the listener serves the named resource (client,
// federation, replication, media, ...).
func (l Listener) Has(resource string) bool {
	for _, r := range l.Resources {
		if slices.Contains(r.Names, resource) {
			return true
		}
	}
	return false
}

// DSN returns a Postgres connection string accepted by pgx: the configured
// string as is, or a postgres:// URL built from Synapse's args. A Host
// starting with "/" is a Unix socket directory and goes in the query, as
// libpq expects.
func (d Database) DSN() string {
	if d.URL != "" {
		return d.URL
	}
	u := url.URL{Scheme: "postgres", Path: "/" + d.Name}
	switch {
	case d.User != "" && d.Password != "":
		u.User = url.UserPassword(d.User, d.Password)
	case d.User != "":
		u.User = url.User(d.User)
	}
	q := url.Values{}
	port := ""
	if d.Port != 0 {
		port = strconv.Itoa(d.Port)
	}
	if strings.HasPrefix(d.Host, "/") {
		q.Set("host", d.Host)
		if port != "" {
			q.Set("port", port)
		}
	} else if d.Host != "" {
		u.Host = d.Host
		if port != "" {
			u.Host = net.JoinHostPort(d.Host, port)
		}
	}
	if d.SSLMode != "" {
		q.Set("sslmode", d.SSLMode)
	}
	if d.MinConns > 0 {
		q.Set("pool_min_conns", strconv.Itoa(d.MinConns))
	}
	if d.MaxConns > 0 {
		q.Set("pool_max_conns", strconv.Itoa(d.MaxConns))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Addr is the Redis server's host:port.
func (r Redis) Addr() string {
	return net.JoinHostPort(r.Host, strconv.Itoa(r.Port))
}
