package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ganglionhq/ganglion/gateway/media"
	"github.com/ganglionhq/ganglion/gateway/ratelimit"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// base is a complete main-process configuration; cases add files after it.
const base = `
server_name: example.org
listeners:
  - port: 8008
    type: http
    resources: [{names: [client, federation]}]
database: postgres://postgres@127.0.0.1:5432/ganglion
nats: {url: "nats://127.0.0.1:4222"}
signing_key_path: /tmp/example.org.signing.key
`

// writeFiles writes each content to its own file in a fresh directory and
// returns the paths in order.
func writeFiles(t *testing.T, contents ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, c := range contents {
		p := filepath.Join(dir, "file"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func mustLoad(t *testing.T, contents ...string) *Config {
	t.Helper()
	c, err := Load(writeFiles(t, contents...), zap.NewNop())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestLoadMergesFilesTopLevelKeyByKey(t *testing.T) {
	shared := base + `
log_level: warning
instance_map:
  main: {host: 127.0.0.1, port: 9093}
  p1: {host: 127.0.0.1, port: 9101}
  p2: {host: 127.0.0.1, port: 9102}
stream_writers:
  events: [p1, p2]
  typing: p1
`
	tests := []struct {
		name   string
		worker string
		check  func(t *testing.T, c *Config)
	}{
		{
			name:   "shared keys survive a worker file",
			worker: "worker_app: synapse.app.generic_worker\nworker_name: p2\n",
			check: func(t *testing.T, c *Config) {
				if c.ServerName != "example.org" || c.LogLevel != zapcore.WarnLevel {
					t.Errorf("server_name %q, log_level %v", c.ServerName, c.LogLevel)
				}
				if c.InstanceName() != "p2" || c.IsMain() || !c.IsEventWriter() {
					t.Errorf("instance %q main %v event writer %v", c.InstanceName(), c.IsMain(), c.IsEventWriter())
				}
				if !slices.Equal(c.StreamWriters.Typing, []string{"p1"}) {
					t.Errorf("typing writers %v", c.StreamWriters.Typing)
				}
			},
		},
		{
			name:   "a later top-level key replaces the earlier one whole",
			worker: "log_level: debug\nstream_writers:\n  events: [p1]\n",
			check: func(t *testing.T, c *Config) {
				if c.LogLevel != zapcore.DebugLevel {
					t.Errorf("log_level %v", c.LogLevel)
				}
				if !slices.Equal(c.EventWriters(), []string{"p1"}) {
					t.Errorf("event writers %v", c.EventWriters())
				}
				// typing came from the replaced stream_writers: back to main.
				if !slices.Equal(c.StreamWriters.Typing, []string{MainInstance}) {
					t.Errorf("typing writers %v", c.StreamWriters.Typing)
				}
				if !c.IsMain() || c.IsEventWriter() {
					t.Errorf("main %v event writer %v", c.IsMain(), c.IsEventWriter())
				}
			},
		},
		{
			name:   "a null value in a later file resets the key to its default",
			worker: "log_level:\n",
			check: func(t *testing.T, c *Config) {
				if c.LogLevel != zapcore.InfoLevel {
					t.Errorf("log_level %v, want the default", c.LogLevel)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustLoad(t, shared, tt.worker))
		})
	}
}

func TestLoadWarnsOnUnknownKeys(t *testing.T) {
	paths := writeFiles(t, base, `
report_stats: false
listeners:
  - port: 8008
    type: http
    bind_addresses: ['::1']
    resources: [{names: [client], favourite: true}]
redis: {enabled: true, use_tls: false}
stream_writers: {un_partial_stated_rooms: main}
`)
	core, logs := observer.New(zapcore.WarnLevel)
	if _, err := Load(paths, zap.New(core)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range logs.All() {
		f := e.ContextMap()
		got = append(got, f["file"].(string)+" "+f["key"].(string))
	}
	want := []string{
		paths[1] + " report_stats",
		paths[1] + " listeners[0].resources[0].favourite",
		paths[1] + " redis.use_tls",
		paths[1] + " stream_writers.un_partial_stated_rooms",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
}

func TestLoadErrorsNameFileKeyAndReason(t *testing.T) {
	tests := []struct {
		name  string
		extra string // a second file, after base
		file  int    // which file the error names; -1 for every file
		want  string // key: reason
	}{
		{"port out of range", "listeners: [{port: 70000, type: http}]", 1,
			"listeners[0].port: must be between 1 and 65535, got 70000"},
		{"IP range not a range", "ip_range_blacklist: ['10.0.0.0/8', 'intranet']", 1,
			`ip_range_blacklist[1]: must be an IP range such as 10.0.0.0/8, got "intranet"`},
		{"JSON depth below two levels", "max_json_depth: 1", 1,
			"max_json_depth: must be between 2 and 10000, got 1"},
		{"to-device bound of zero", "max_to_device_messages_per_device: 0", 1,
			"max_to_device_messages_per_device: must be between 1 and 1000000, got 0"},
		{"fractional port is not rounded", "listeners: [{port: 8008.5, type: http}]", 1,
			"listeners[0].port: must be a whole number, got 8008.5"},
		{"huge exponent", "redis: {port: !!float 1e99999}", 1,
			"redis.port: must be between 1 and 65535, got 1e99999"},
		{"past uint64", "redis: {dbid: 99999999999999999999}", 1,
			"redis.dbid: must be between 0 and 2147483647, got 99999999999999999999"},
		{"port as a string", "listeners: [{port: '8008', type: http}]", 1,
			"listeners[0].port: must be an integer, got a string"},
		{"hex port", "redis: {port: 0x1F90}", 1,
			"redis.port: must be a decimal integer, got 0x1F90"},
		{"listener without port", "listeners: [{type: http}]", 1,
			"listeners[0].port: required"},
		{"unknown resource", "listeners: [{port: 1, type: http, resources: [{names: [client, chat]}]}]", 1,
			`listeners[0].resources[0].names[1]: unknown resource "chat"`},
		{"tls listener", "listeners: [{port: 1, type: http, tls: true}]", 1,
			"listeners[0].tls: TLS listeners are not supported"},
		{"bind address not an IP", "listeners: [{port: 1, type: http, bind_addresses: [localhost]}]", 1,
			`listeners[0].bind_addresses[0]: must be an IP address, got "localhost"`},
		{"unknown route", "listeners: [{port: 1, type: http, resources: [{names: [client]}], routes: [sync, chat]}]", 1,
			`listeners[0].routes[1]: unknown route "chat" (known: client, sync,`},
		{"route without its resource", "listeners: [{port: 1, type: http, resources: [{names: [client]}], routes: [federation_inbound]}]", 1,
			"listeners[0].routes: route federation_inbound needs a listener with the federation resource"},
		{"listeners not a list", "listeners: {port: 1}", 1,
			"listeners: must be a list, got a mapping"},
		{"boolean as a string", "enable_registration: 'yes'", 1,
			"enable_registration: must be true or false, got a string"},
		{"invalid server name", "server_name: 'my server'", 1,
			`server_name: must be host[:port] with a DNS name or IP address, got "my server"`},
		{"server name port", "server_name: 'example.org:99999'", 1,
			`server_name: port must be between 1 and 65535, got "99999"`},
		{"unknown worker app", "worker_app: synapse.app.chat\nworker_name: w1", 1,
			`worker_app: unknown worker app "synapse.app.chat"`},
		{"presence enabled neither boolean nor untracked", "presence: {enabled: maybe}", 1,
			"presence.enabled: must be true or false, got a string"},
		{"presence timer with a bad unit", "presence: {sync_online_timeout: 30x}", 1,
			`presence.sync_online_timeout: must be a positive duration such as "30s", "5m" or a number of milliseconds, got "30x"`},
		{"presence timer of zero", "presence: {last_active_granularity: 0}", 1,
			"presence.last_active_granularity: must be between 1 and"},
		{"presence idle before granularity", "presence: {idle_timeout: 1m, last_active_granularity: 2m}", 1,
			"presence.idle_timeout: must be longer than last_active_granularity (2m0s), got 1m0s"},
		{"worker without name", "worker_app: synapse.app.generic_worker", 1,
			"worker_name: required for a worker"},
		{"worker named main", "worker_app: synapse.app.generic_worker\nworker_name: main", 1,
			`worker_name: "main" is the main process's name`},
		{"instance name with a dot", "worker_app: synapse.app.generic_worker\nworker_name: w.1", 1,
			`worker_name: instance name "w.1" must be 1 to 100 letters`},
		{"stream writer not in instance_map",
			"instance_map: {main: {host: h, port: 1}, p1: {host: h, port: 2}}\nstream_writers: {events: [p1, p2]}", 1,
			`stream_writers.events: instance "p2" is not in instance_map`},
		{"worker stream writer without main in instance_map",
			"instance_map: {p1: {host: h, port: 2}}\nstream_writers: {events: p1}", 1,
			"instance_map: must list main when stream_writers names a worker"},
		{"two typing writers",
			"instance_map: {main: {host: h, port: 1}, p1: {host: h, port: 2}}\nstream_writers: {typing: [main, p1]}", 1,
			"stream_writers.typing: only one instance can write typing"},
		{"empty writer list", "stream_writers: {events: []}", 1,
			"stream_writers.events: must name at least one instance"},
		{"main and master both", "instance_map: {main: {host: h, port: 1}, master: {host: h, port: 1}}", 1,
			"instance_map.master: main and master are the same instance"},
		{"instance without port", "instance_map: {main: {host: h}}", 1,
			"instance_map.main: needs host and port"},
		{"nats url and embedded", "nats: {url: 'nats://h:4222', embedded: {store_dir: /x}}", 1,
			"nats: set url or embedded, not both"},
		{"nats neither", "nats: {namespace: x}", 1,
			"nats: set url (an external server) or embedded"},
		{"nats bad url", "nats: {url: 'http://h:4222'}", 1,
			"nats.url: must be nats://host:port"},
		{"embedded without store_dir", "nats: {embedded: {port: 0}}", 1,
			"nats.embedded.store_dir: required"},
		{"replicas out of range", "nats: {url: 'nats://127.0.0.1:4222', replicas: 7}", 1,
			"nats.replicas: must be between 1 and 5, got 7"},
		{"replicas on the embedded server", "nats: {embedded: {store_dir: /x}, replicas: 3}", 1,
			"nats.replicas: the embedded server is a single server"},
		{"bad sync interval", "nats: {embedded: {store_dir: /x}, sync_interval: fast}", 1,
			`nats.sync_interval: must be a positive duration such as "2m", or "always", got "fast"`},
		{"bad namespace", "nats: {url: 'nats://h:4222', namespace: 'a.b'}", 1,
			`nats.namespace: must be 1 to 64 letters, digits, '_' or '-', got "a.b"`},
		{"bad log level", "log_level: loud", 1,
			`log_level: must be debug, info, warning or error, got "loud"`},
		{"sqlite", "database: {name: sqlite3, args: {database: homeserver.db}}", 1,
			"database.name: sqlite3 is not supported"},
		{"database mapping without name", "database: {args: {dbname: x}}", 1,
			"database.name: required"},
		{"database url of another kind", "database: 'mysql://u:secret@h/db'", 1,
			"database: must be a postgres:// URL or a mapping with name and args"},
		{"database port", "database: {name: psycopg2, args: {port: -1}}", 1,
			"database.args.port: must be between 1 and 65535, got -1"},
		{"pool smaller than its minimum", "database: {name: psycopg2, args: {cp_min: 8, cp_max: 4}}", 1,
			"database.args.cp_min: is 8, more than cp_max (4)"},
		{"empty pool", "database: {name: psycopg2, args: {cp_max: 0}}", 1,
			"database.args.cp_max: must be between 1 and 1000, got 0"},
		{"key twice", "enable_registration: true\nenable_registration: false", 1,
			"enable_registration: set twice in the same mapping"},
		{"legacy pusher while main pushes", "worker_app: synapse.app.pusher\nworker_name: pusher1", 1,
			"worker_app: synapse.app.pusher needs start_pushers: false in the shared configuration"},
		{"restricted federation without secret",
			"instance_map: {main: {host: h, port: 1}}\noutbound_federation_restricted_to: [main]", 1,
			"worker_replication_secret: required when outbound_federation_restricted_to is set"},
		{"required key missing from every file", "server_name: ~", -1,
			"server_name: required"},
		{"rate limit not a number", "rc_message: {per_second: fast}", 1,
			"rc_message.per_second: must be a number, got a string"},
		{"rate limit zero rate", "rc_login: {failed_attempts: {per_second: 0}}", 1,
			"rc_login.failed_attempts.per_second: must be a positive number of actions per second, got 0"},
		{"rate limit fractional burst", "rc_invites: {per_room: {burst_count: 2.5}}", 1,
			"rc_invites.per_room.burst_count: must be a whole number, got 2.5"},
		{"rate limit zero burst", "rc_joins: {local: {burst_count: 0}}", 1,
			"rc_joins.local.burst_count: must be between 1 and 2147483647, got 0"},
		{"rate limit not a mapping", "rc_registration: 3", 1,
			"rc_registration: must be a mapping, got an integer"},
		{"http timeout", "http_limits: {read_timeout: soon}", 1,
			`http_limits.read_timeout: must be a positive duration such as "30s", got "soon"`},
		{"http per-IP cap", "http_limits: {max_connections_per_ip: -1}", 1,
			"http_limits.max_connections_per_ip: must be between 0 and 2147483647, got -1"},
		{"open registration off loopback", "enable_registration: true", 1,
			"enable_registration: open registration needs a verification step"},
		{"upload size with a bad unit", "max_upload_size: 50X", 1,
			`max_upload_size: must be a size such as "50M", "10K" or a number of bytes, got "50X"`},
		{"thumbnail method", "thumbnail_sizes: [{width: 32, height: 32, method: stretch}]", 1,
			`thumbnail_sizes[0].method: must be crop or scale, got "stretch"`},
		{"thumbnail without height", "thumbnail_sizes: [{width: 32}]", 1,
			"thumbnail_sizes[0]: a thumbnail size needs width and height"},
		{"upload limit without period", "media_upload_limits: [{max_size: 1G}]", 1,
			"media_upload_limits[0]: a media upload limit needs time_period and max_size"},
		{"url previews without a blacklist", "url_preview_enabled: true", 1,
			"url_preview_ip_range_blacklist: required when url_preview_enabled is true"},
		{"server notices user", "server_notices: {system_mxid_localpart: Notices}", 1,
			`server_notices.system_mxid_localpart: "Notices" is not a valid user localpart`},
		{"duplicate port", "listeners: [{port: 9000, type: http}, {port: 9000, type: http, bind_addresses: ['::']}]", 1,
			"listeners[1].port: port 9000 is also listeners[0]'s"},
		{"replication listener off loopback without a secret", "listeners: [{port: 9002, type: http, resources: [{names: [replication]}]}]", 1,
			"listeners[0].resources: a replication listener off loopback needs worker_replication_secret"},
		{"media resource where no media is served", "worker_app: synapse.app.generic_worker\nworker_name: w1\n" +
			"worker_listeners: [{port: 9001, type: http, resources: [{names: [client, media]}]}]", 1,
			"worker_listeners[0].resources: this process serves no media"},
		{"media resource with the media repository off", "enable_media_repo: false\n" +
			"listeners: [{port: 9001, type: http, resources: [{names: [media]}]}]", 1,
			"listeners[0].resources: this process serves no media"},
		{"yaml syntax", "listeners: [", 1, "yaml: line 1"},
		{"top level not a mapping", "- a\n- b", 1,
			"the top level must be a mapping of keys, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := base
			if tt.file == -1 {
				first = strings.Replace(base, "server_name: example.org", "", 1)
			}
			paths := writeFiles(t, first, tt.extra)
			_, err := Load(paths, zap.NewNop())
			if err == nil {
				t.Fatal("Load succeeded")
			}
			file := strings.Join(paths, ", ")
			if tt.file >= 0 {
				file = paths[tt.file]
			}
			want := "config: " + file + ": " + tt.want
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error\n got %s\nwant %s...", err, want)
			}
			var cerr *Error
			if !errors.As(err, &cerr) || cerr.File != file {
				t.Errorf("error %#v does not name file %s", cerr, file)
			}
		})
	}
}

func TestLoadErrorsDoNotEchoSecrets(t *testing.T) {
	_, err := Load(writeFiles(t, base, "registration_shared_secret: 123456789\ndatabase: 'mysql://u:hunter2@h/db'"), zap.NewNop())
	if err == nil || strings.Contains(err.Error(), "123456789") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v", err)
	}
}

func TestLoadMapsLegacyWorkerApps(t *testing.T) {
	tests := []struct {
		app        string
		extra      string
		main       bool
		pushers    []string
		fedSenders []string
		// appservices is the appservice sender: main when empty, nobody when "-".
		appservices string
	}{
		{app: "synapse.app.homeserver", main: true, pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "", main: true, pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: GenericWorker, pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.client_reader", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.event_creator", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.federation_reader", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.frontend_proxy", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.synchrotron", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.appservice", extra: "notify_appservices: false",
			pushers: []string{MainInstance}, fedSenders: []string{MainInstance}, appservices: "w1"},
		{app: GenericWorker, extra: "notify_appservices_from_worker: w1",
			pushers: []string{MainInstance}, fedSenders: []string{MainInstance}, appservices: "w1"},
		{app: GenericWorker, extra: "notify_appservices: false",
			pushers: []string{MainInstance}, fedSenders: []string{MainInstance}, appservices: "-"},
		{app: "synapse.app.user_dir", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.media_repository", pushers: []string{MainInstance}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.pusher", extra: "start_pushers: false",
			pushers: []string{"w1"}, fedSenders: []string{MainInstance}},
		{app: "synapse.app.federation_sender", extra: "send_federation: false",
			pushers: []string{MainInstance}, fedSenders: []string{"w1"}},
		{app: GenericWorker, extra: "send_federation: false\nstart_pushers: false",
			pushers: []string{}, fedSenders: []string{}},
		{app: "synapse.app.pusher", extra: "pusher_instances: [w1, main]",
			pushers: []string{"w1", MainInstance}, fedSenders: []string{MainInstance}},
	}
	for _, tt := range tests {
		t.Run(tt.app+" "+tt.extra, func(t *testing.T) {
			worker := "worker_app: '" + tt.app + "'\n" + tt.extra + "\n"
			if !tt.main {
				worker += "worker_name: w1\n"
			}
			c := mustLoad(t, base, worker)
			if c.IsMain() != tt.main {
				t.Fatalf("IsMain %v", c.IsMain())
			}
			wantApp, wantLegacy := GenericWorker, ""
			switch {
			case tt.main:
				wantApp = ""
			case tt.app != GenericWorker:
				wantLegacy = tt.app
			}
			if c.WorkerApp != wantApp || c.LegacyWorkerApp != wantLegacy {
				t.Errorf("worker_app %q legacy %q", c.WorkerApp, c.LegacyWorkerApp)
			}
			if !slices.Equal(c.Pushers(), tt.pushers) || !slices.Equal(c.FederationSenders(), tt.fedSenders) {
				t.Errorf("pushers %q federation senders %q", c.Pushers(), c.FederationSenders())
			}
			want := cmp.Or(tt.appservices, MainInstance)
			if want == "-" {
				want = ""
			}
			if c.AppServiceSender() != want {
				t.Errorf("appservice sender %q, want %q", c.AppServiceSender(), want)
			}
		})
	}
}

func TestLoadNormalisesMainToMaster(t *testing.T) {
	c := mustLoad(t, base, `
instance_map:
  main: {host: 127.0.0.1, port: 9093}
  p1: {path: /run/ganglion/p1.sock}
stream_writers:
  events: [main, p1]
  receipts: main
run_background_tasks_on: main
pusher_instances: [main]
`)
	if _, ok := c.InstanceMap["main"]; ok {
		t.Error(`instance_map kept "main"`)
	}
	if got := c.InstanceMap[MainInstance]; got != (InstanceLocation{Host: "127.0.0.1", Port: 9093}) {
		t.Errorf("instance_map[master] = %+v", got)
	}
	if got := c.InstanceMap["p1"]; got.Path != "/run/ganglion/p1.sock" {
		t.Errorf("instance_map[p1] = %+v", got)
	}
	if !slices.Equal(c.EventWriters(), []string{MainInstance, "p1"}) || !c.IsEventWriter() {
		t.Errorf("event writers %v, main writes %v", c.EventWriters(), c.IsEventWriter())
	}
	if !slices.Equal(c.StreamWriters.Receipts, []string{MainInstance}) ||
		c.BackgroundTasksOn() != MainInstance || !slices.Equal(c.Pushers(), []string{MainInstance}) {
		t.Errorf("receipts %v background %q pushers %v", c.StreamWriters.Receipts, c.BackgroundTasksOn(), c.Pushers())
	}
}

func TestDatabaseDSN(t *testing.T) {
	tests := []struct {
		name     string
		database string
		want     string
	}{
		{"url", "database: 'postgresql://u:p@db:5433/x?sslmode=require'", "postgresql://u:p@db:5433/x?sslmode=require"},
		{"synapse args", `database:
  name: psycopg2
  txn_limit: 10000
  args: {user: synapse, password: "p@ss word", dbname: synapse, host: db.example, port: 5433, cp_min: 5}`,
			"postgres://synapse:p%40ss%20word@db.example:5433/synapse?pool_min_conns=5"},
		{"pool size", "database: {name: psycopg2, args: {user: u, dbname: d, cp_min: 2, cp_max: 12}}",
			"postgres://u@/d?pool_max_conns=12&pool_min_conns=2"},
		{"database alias of dbname", "database: {name: postgres, args: {user: u, database: d, host: h}}",
			"postgres://u@h/d"},
		{"socket directory", "database: {name: psycopg2, args: {user: u, dbname: d, host: /var/run/postgresql, port: 5432, sslmode: disable}}",
			"postgres://u@/d?host=%2Fvar%2Frun%2Fpostgresql&port=5432&sslmode=disable"},
		{"libpq defaults", "database: {name: psycopg2}", "postgres:///"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustLoad(t, base, tt.database).Database.DSN(); got != tt.want {
				t.Errorf("DSN() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadIntegersAndAliases(t *testing.T) {
	c := mustLoad(t, base, `
defaults: &listener
  type: http
  bind_addresses: ['::', '0.0.0.0']
  resources: [{names: [client]}]
listeners:
  - <<: *listener
    port: 8_008.0
  - <<: *listener
    port: 8448
    resources: [{names: [federation], compress: true}]
redis: {enabled: true, port: 6380, dbid: 3}
nats: {embedded: {store_dir: /var/lib/ganglion/nats}, sync_interval: always}
`)
	ls := c.HTTPListeners()
	if len(ls) != 2 || ls[0].Port != 8008 || !ls[0].Has("client") || ls[0].Has("federation") ||
		!ls[1].Has("federation") || ls[1].Has("client") || !ls[1].Resources[0].Compress {
		t.Fatalf("listeners %+v", ls)
	}
	if got := ls[0].Addrs(); !slices.Equal(got, []string{"[::]:8008"}) {
		t.Errorf("Addrs() = %v", got)
	}
	if c.Redis.Addr() != "localhost:6380" || c.Redis.DBID != 3 || !c.Redis.Enabled {
		t.Errorf("redis %+v", c.Redis)
	}
	if e := c.NATS.Embedded; e == nil || !e.SyncAlways || e.StoreDir != "/var/lib/ganglion/nats" || c.NATS.Namespace != "ganglion" {
		t.Errorf("nats %+v embedded %+v", c.NATS, c.NATS.Embedded)
	}
}

func TestLoadRefusesAliasBombs(t *testing.T) {
	// Each level merges the previous one twice: unchecked, redis would
	// expand 2^40 mappings.
	var b strings.Builder
	b.WriteString(base + "x0: &m0 {enabled: true}\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "x%d: &m%d {<<: [*m%d, *m%d]}\n", i, i, i-1, i-1)
	}
	b.WriteString("redis: *m40\n")
	_, err := Load(writeFiles(t, b.String()), zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "more than 1000 YAML aliases") {
		t.Fatalf("error %v", err)
	}
}

func TestListenerAddrs(t *testing.T) {
	tests := []struct {
		bind []string
		want []string
	}{
		{nil, []string{":8008"}},
		{[]string{"127.0.0.1", "::1"}, []string{"127.0.0.1:8008", "[::1]:8008"}},
		{[]string{"::", "0.0.0.0"}, []string{"[::]:8008"}},
		{[]string{"0.0.0.0"}, []string{"0.0.0.0:8008"}},
	}
	for _, tt := range tests {
		got := Listener{Port: 8008, BindAddresses: tt.bind}.Addrs()
		if !slices.Equal(got, tt.want) {
			t.Errorf("Addrs(%v) = %v, want %v", tt.bind, got, tt.want)
		}
	}
}

func TestExampleDeployments(t *testing.T) {
	tests := []struct {
		files       []string
		instance    string
		eventWriter bool
		addrs       []string
		resource    string
	}{
		{[]string{"../monolith.yaml"}, MainInstance, true, []string{"127.0.0.1:8008"}, "client"},
		{[]string{"../workers/shared.yaml"}, MainInstance, false, []string{"127.0.0.1:8080", "127.0.0.1:9093"}, "federation"},
		{[]string{"../workers/shared.yaml", "../workers/gateway1.yaml"}, "gateway1", false, []string{"127.0.0.1:8081"}, "federation"},
		{[]string{"../workers/shared.yaml", "../workers/gateway2.yaml"}, "gateway2", false, []string{"127.0.0.1:8082"}, "client"},
		{[]string{"../workers/shared.yaml", "../workers/event_persister1.yaml"}, "event_persister1", true, []string{"127.0.0.1:9101"}, "replication"},
		{[]string{"../workers/shared.yaml", "../workers/event_persister2.yaml"}, "event_persister2", true, []string{"127.0.0.1:9102"}, "replication"},
		{[]string{"../workers/shared.yaml", "../workers/sync1.yaml"}, "sync1", false, []string{"127.0.0.1:8083"}, "client"},
		{[]string{"../workers/shared.yaml", "../workers/sync2.yaml"}, "sync2", false, []string{"127.0.0.1:8084"}, "client"},
		{[]string{"../workers/shared.yaml", "../workers/stream_writer1.yaml"}, "stream_writer1", false, []string{"127.0.0.1:8085", "127.0.0.1:9103"}, "client"},
		{[]string{"../workers/shared.yaml", "../workers/media1.yaml"}, "media1", false, []string{"127.0.0.1:8086"}, "media"},
		{[]string{"../workers/shared.yaml", "../workers/pusher1.yaml"}, "pusher1", false, nil, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.files, "+"), func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			c, err := Load(tt.files, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			if logs.Len() != 0 {
				t.Errorf("warnings: %v", logs.All())
			}
			if c.InstanceName() != tt.instance || c.IsEventWriter() != tt.eventWriter {
				t.Errorf("instance %q event writer %v", c.InstanceName(), c.IsEventWriter())
			}
			var addrs []string
			has := false
			for _, l := range c.HTTPListeners() {
				addrs = append(addrs, l.Addrs()...)
				has = has || l.Has(tt.resource)
			}
			if !slices.Equal(addrs, tt.addrs) || (tt.resource != "" && !has) {
				t.Errorf("addresses %v, serves %s: %v", addrs, tt.resource, has)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	out, err := Generate("example.org:8448", filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	c, err := Load(writeFiles(t, string(out)), zap.New(core))
	if err != nil {
		t.Fatalf("generated config does not load: %v\n%s", err, out)
	}
	if logs.Len() != 0 {
		t.Errorf("warnings: %v", logs.All())
	}
	ls := c.HTTPListeners()
	if c.ServerName != "example.org:8448" || !c.IsMain() || !c.EnableRegistration ||
		len(ls) != 1 || !slices.Equal(ls[0].Addrs(), []string{"127.0.0.1:8008"}) || !ls[0].Has("client") || !ls[0].Has("federation") {
		t.Errorf("config %+v", c)
	}
	if c.Database.DSN() != DefaultDatabaseURL {
		t.Errorf("DSN %q", c.Database.DSN())
	}
	e := c.NATS.Embedded
	if e == nil || e.StoreDir != filepath.Join(dir, "data", "nats") || e.Port != 0 || e.SyncInterval != 2*time.Minute || e.SyncAlways {
		t.Errorf("nats %+v", e)
	}
	if c.SigningKeyPath != filepath.Join(dir, "data", "example.org:8448.signing.key") {
		t.Errorf("signing key path %q", c.SigningKeyPath)
	}

	if _, err := Generate("not a name", dir); err == nil {
		t.Error("Generate accepted an invalid server name")
	}
}

func FuzzLoad(f *testing.F) {
	for _, p := range []string{"../monolith.yaml", "../workers/shared.yaml", "../workers/event_persister1.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(base + "listeners: [{port: 1e5, type: http}]\nx: &a [*a]\nstream_writers: {events: *a}"))
	f.Add([]byte("a: &a {<<: *a}\n<<: *a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load([]string{p}, zap.NewNop())
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v, error %v", c, err)
		}
		if c != nil {
			// The helpers main.go calls must hold on anything Load accepts.
			c.IsEventWriter()
			for _, l := range c.HTTPListeners() {
				l.Addrs()
			}
			c.Database.DSN()
		}
	})
}

func TestLoadRateLimitsDefaultToSynapses(t *testing.T) {
	c := mustLoad(t, base)
	if c.RateLimits != ratelimit.Defaults {
		t.Fatalf("rate limits %+v, want Synapse's %+v", c.RateLimits, ratelimit.Defaults)
	}
	c = mustLoad(t, base, "rc_message: {per_second: 100}\nrc_login: {account: {burst_count: 2.0}}")
	want := ratelimit.Defaults
	want.Message.PerSecond = 100
	want.LoginAccount.BurstCount = 2
	if c.RateLimits != want {
		t.Fatalf("rate limits %+v, want %+v", c.RateLimits, want)
	}
	if c.HTTPLimits != serve.DefaultLimits {
		t.Fatalf("http limits %+v, want %+v", c.HTTPLimits, serve.DefaultLimits)
	}
	c = mustLoad(t, base, "http_limits: {idle_timeout: 5s, max_connections_per_ip: 0}")
	if c.HTTPLimits.IdleTimeout != 5*time.Second || c.HTTPLimits.MaxConnsPerIP != 0 || c.HTTPLimits.WriteTimeout != serve.DefaultLimits.WriteTimeout {
		t.Fatalf("http limits %+v", c.HTTPLimits)
	}
}

// Presence is on and tracked by default with Synapse's timers; presence takes Synapse's
// values and durations, and the older use_presence counts only without
// presence.enabled.
func TestLoadPresence(t *testing.T) {
	c := mustLoad(t, base)
	want := userstreams.PresenceSettings{Enabled: true, Timers: userstreams.DefaultPresenceTimers}
	if c.Presence != want {
		t.Fatalf("presence %+v, want %+v", c.Presence, want)
	}
	if c.RateLimits.PresencePerUser != (ratelimit.Setting{PerSecond: 0.1, BurstCount: 1}) {
		t.Fatalf("rc_presence %+v", c.RateLimits.PresencePerUser)
	}
	c = mustLoad(t, base, `presence:
  enabled: untracked
  include_offline_users_on_sync: true
  last_active_granularity: 1500
  sync_online_timeout: "2s"
  idle_timeout: 1h
rc_presence: {per_user: {per_second: 5, burst_count: 7}}
`)
	want = userstreams.PresenceSettings{Enabled: true, Untracked: true, IncludeOfflineUsersOnSync: true,
		Timers: userstreams.PresenceTimers{LastActiveGranularity: 1500 * time.Millisecond, SyncOnlineTimeout: 2 * time.Second, IdleTimeout: time.Hour}}
	if c.Presence != want || c.Presence.Track() {
		t.Fatalf("presence %+v, want %+v, untracked", c.Presence, want)
	}
	if c.RateLimits.PresencePerUser != (ratelimit.Setting{PerSecond: 5, BurstCount: 7}) {
		t.Fatalf("rc_presence %+v", c.RateLimits.PresencePerUser)
	}
	for _, tc := range []struct {
		yaml string
		on   bool
	}{
		{"presence: {enabled: false}", false},
		{"use_presence: false", false},
		{"use_presence: false\npresence: {enabled: true}", true},
		{"presence: {enabled: true}\nuse_presence: false", true},
		{"presence: {idle_timeout: '600000'}\nuse_presence: true", true},
	} {
		if c := mustLoad(t, base, tc.yaml); c.Presence.Enabled != tc.on || c.Presence.Track() != tc.on {
			t.Errorf("%q: presence %+v, want enabled %v", tc.yaml, c.Presence, tc.on)
		}
	}
}

// The to-device bound is Ganglion's own key: unset, the streams' default applies.
// TestLoadMedia reads the media repository's keys in Synapse's units, with Synapse's
// defaults, and who serves media and runs its jobs.
func TestLoadMedia(t *testing.T) {
	c := mustLoad(t, base)
	if m := c.Media; m.MaxUploadSize != 50<<20 || m.MaxPixels != 32_000_000 || len(m.Sizes) != 5 || !m.Authenticated ||
		m.MaxPending != 5 || m.UnusedExpiration != 24*time.Hour || m.URLPreviews || m.StorePath != "media_store" {
		t.Errorf("defaults: %+v", m)
	}
	if !c.ServesMedia() || !c.RunsMediaJobs() {
		t.Error("the main process does not serve media by default")
	}
	c = mustLoad(t, base, `media_store_path: /srv/media
max_upload_size: 10M
max_image_pixels: 1000
thumbnail_sizes: [{width: 64, height: 48}, {width: 16, height: 16, method: crop}]
dynamic_thumbnails: true
enable_authenticated_media: false
max_pending_media_uploads: 2
unused_expiration_time: 1h
media_upload_limits: [{time_period: 1d, max_size: 1G}]
url_preview_enabled: true
url_preview_ip_range_blacklist: ['127.0.0.0/8']
max_spider_size: 512K`)
	m := c.Media
	if m.StorePath != "/srv/media" || m.MaxUploadSize != 10<<20 || m.MaxPixels != 1000 || !m.Dynamic || m.Authenticated ||
		m.MaxPending != 2 || m.UnusedExpiration != time.Hour || !m.URLPreviews || m.MaxSpiderSize != 512<<10 ||
		len(m.URLPreviewBlacklist) != 1 {
		t.Errorf("set: %+v", m)
	}
	if want := []media.Size{{Width: 64, Height: 48, Method: media.Scale}, {Width: 16, Height: 16, Method: media.Crop}}; !slices.Equal(m.Sizes, want) {
		t.Errorf("thumbnail sizes %v, want %v", m.Sizes, want)
	}
	if want := []media.UploadLimit{{Period: 24 * time.Hour, MaxSize: 1 << 30}}; !slices.Equal(m.UploadLimits, want) {
		t.Errorf("upload limits %v, want %v", m.UploadLimits, want)
	}
	if c := mustLoad(t, base, "enable_media_repo: false"); c.ServesMedia() || c.RunsMediaJobs() {
		t.Error("enable_media_repo: false still serves media on the main process")
	}
	worker := "worker_app: synapse.app.media_repository\nworker_name: media1\n"
	if c := mustLoad(t, base, worker+"media_instance_running_background_jobs: media2"); !c.ServesMedia() || c.RunsMediaJobs() {
		t.Error("a media worker not named for the jobs runs them, or serves no media")
	}
	if c := mustLoad(t, base, worker+"media_instance_running_background_jobs: media1"); !c.RunsMediaJobs() {
		t.Error("the media worker named for the jobs does not run them")
	}
	if c := mustLoad(t, base, "worker_app: synapse.app.generic_worker\nworker_name: w1"); c.ServesMedia() {
		t.Error("a generic worker serves media")
	}
}

// Server notices are off without a localpart; Synapse's room name is the default.
func TestLoadServerNotices(t *testing.T) {
	if n := mustLoad(t, base).ServerNotices; n.Enabled() || n.RoomName != "Server Notices" {
		t.Errorf("defaults: %+v", n)
	}
	n := mustLoad(t, base, `server_notices: {system_mxid_localpart: notices, system_mxid_display_name: Ops,
  system_mxid_avatar_url: "mxc://h/a", room_name: Alerts, room_topic: t, room_avatar_url: "mxc://h/r", auto_join: true}`).ServerNotices
	if want := (ServerNotices{Localpart: "notices", DisplayName: "Ops", AvatarURL: "mxc://h/a", RoomName: "Alerts", RoomTopic: "t",
		RoomAvatarURL: "mxc://h/r", AutoJoin: true}); n != want {
		t.Errorf("set: %+v, want %+v", n, want)
	}
}

// Metrics listeners serve only with enable_metrics, as in Synapse.
func TestMetricsListeners(t *testing.T) {
	metrics := "listeners: [{port: 8008, type: http, resources: [{names: [client]}]}, {port: 9000, type: metrics}]"
	if ls := mustLoad(t, base, metrics).MetricsListeners(); len(ls) != 0 {
		t.Errorf("without enable_metrics: %v", ls)
	}
	ls := mustLoad(t, base, metrics+"\nenable_metrics: true").MetricsListeners()
	if len(ls) != 1 || ls[0].Port != 9000 {
		t.Errorf("with enable_metrics: %v", ls)
	}
}

// A missing signing key is a configuration error naming the file that set its path.
func TestSigningKeyErrorNamesFileAndKey(t *testing.T) {
	paths := writeFiles(t, base, "signing_key_path: /nonexistent/ganglion.signing.key")
	c, err := Load(paths, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.SigningKey()
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.File != paths[1] || cerr.Key != "signing_key_path" || !strings.Contains(cerr.Reason, "no such file") {
		t.Errorf("error %v (%#v)", err, cerr)
	}
}

func TestLoadToDeviceBound(t *testing.T) {
	if c := mustLoad(t, base); c.MaxToDevicePerDevice != 0 {
		t.Fatalf("unset bound = %d", c.MaxToDevicePerDevice)
	}
	if c := mustLoad(t, base, "max_to_device_messages_per_device: 500"); c.MaxToDevicePerDevice != 500 {
		t.Fatalf("bound = %d, want 500", c.MaxToDevicePerDevice)
	}
}

// Open registration is an explicit choice off loopback, and needs none on loopback.
func TestLoadOpenRegistration(t *testing.T) {
	loopback := strings.Replace(base, "type: http\n", "type: http\n    bind_addresses: ['127.0.0.1', '::1']\n", 1)
	if c := mustLoad(t, loopback, "enable_registration: true"); !c.EnableRegistration {
		t.Fatal("registration not enabled")
	}
	c := mustLoad(t, base, "enable_registration: true\nenable_registration_without_verification: true")
	if !c.EnableRegistration || !c.EnableRegistrationWithoutVerification {
		t.Fatal("registration not enabled")
	}
	mustLoad(t, base, "enable_registration: false")
}

// TestLoadChecksAppServiceRegistrations: a registration that cannot be used stops the
// load with its own file and key; a good one is loaded.
func TestLoadChecksAppServiceRegistrations(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	for p, body := range map[string]string{
		good: "id: g\nurl: null\nas_token: a1\nhs_token: h1\nsender_localpart: g\n",
		bad:  "id: b\nurl: null\nas_token: a1\nhs_token: h2\nsender_localpart: b\n",
	} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := mustLoad(t, base, "app_service_config_files: ['"+good+"']")
	if svc, ok := c.AppServices.ByToken("a1"); !ok || svc.ID != "g" {
		t.Fatalf("the registration was not loaded: %+v", c.AppServices.All())
	}
	_, err := Load(writeFiles(t, base, "app_service_config_files: ['"+good+"', '"+bad+"']"), zap.NewNop())
	if want := "config: " + bad + ": as_token: the same as_token as the service in " + good; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}
