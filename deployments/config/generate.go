package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"text/template"
)

// DefaultDatabaseURL is the database a generated configuration points at:
// Postgres on its default local address, as the postgres user without a
// password (which needs trust authentication for 127.0.0.1 in pg_hba.conf),
// database "ganglion", no TLS since the connection never leaves the
// machine.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/ganglion?sslmode=disable"

// Generate returns a commented single-process configuration for
// `ganglion generate-config`: plain HTTP on 127.0.0.1:8008 for clients and
// federation, DefaultDatabaseURL, an embedded NATS server and the signing
// key under dataDir (made absolute, so the file works from any directory),
// and open registration.
func Generate(serverName, dataDir string) ([]byte, error) {
	if err := checkServerName(serverName); err != nil {
		return nil, fmt.Errorf("config: server name: %w", err)
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("config: data directory: %w", err)
	}
	var out bytes.Buffer
	err = generated.Execute(&out, map[string]string{
		"ServerName": serverName,
		"Database":   DefaultDatabaseURL,
		"StoreDir":   filepath.Join(dir, "nats"),
		"SigningKey": filepath.Join(dir, serverName+".signing.key"),
		"MediaStore": filepath.Join(dir, "media_store"),
	})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return out.Bytes(), nil
}

// quote writes a string as a YAML double-quoted scalar: a JSON string is
// one, whatever characters a path holds.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var generated = template.Must(template.New("config").Funcs(template.FuncMap{"q": quote}).Parse(
	`# Ganglion homeserver configuration, written by "ganglion generate-config".
#
# Everything runs in one process, the main process (instance "master"). The
# keys are Synapse's; deployments/workers/ shows the same server split into
# workers.

# The domain part of every user id (@alice:{{.ServerName}}). It cannot change
# once users and rooms exist.
server_name: {{q .ServerName}}

# Plain HTTP on loopback. Anything beyond local use needs a reverse proxy
# terminating TLS in front of it.
listeners:
  - port: 8008
    bind_addresses: ["127.0.0.1"]
    type: http
    x_forwarded: false
    resources:
      - names: [client, federation]
        compress: false

# Postgres holds the queryable state. Either a URL, or Synapse's form:
#   database: {name: psycopg2, args: {user: ..., password: ..., dbname: ..., host: ..., port: ...}}
# cp_min and cp_max in args size each process's connection pool (in a URL:
# pool_min_conns, pool_max_conns); unset, a pool holds up to max(4, CPUs).
# This one is Postgres on its default local address: user postgres without
# a password (trust authentication for 127.0.0.1), database "ganglion", no
# TLS since the connection stays on the machine.
database: {{q .Database}}

# NATS JetStream carries intents and keeps the event log, the source of
# truth. This server runs inside the process and, with port 0, is reachable
# only from it. For several processes use an external server instead:
#   nats: {url: "nats://127.0.0.1:4222"}
nats:
  embedded:
    store_dir: {{q .StoreDir}}
    port: 0
  # Prefix of every stream and subject, so servers can share one NATS.
  namespace: ganglion
  # The durability choice: how often JetStream fsyncs its files. With an
  # interval, an acknowledged event survives a crash of this process but
  # not a power loss before the next fsync. "always" fsyncs every message
  # before acknowledging it, at a large cost in send rate.
  sync_interval: 2m

# Redis only mirrors stream positions in Synapse's replication format for
# existing tooling; nothing here needs it.
#redis:
#  enabled: true
#  host: localhost
#  port: 6379

# The server's ed25519 key, in Synapse's format ("ganglion generate-keys").
signing_key_path: {{q .SigningKey}}

# Uploaded media, with thumbnails, on local disk. Every process serving media
# (the main process, media_repository workers) must see the same directory.
media_store_path: {{q .MediaStore}}
max_upload_size: 50M
# URL previews fetch what users link to; enabling them needs
# url_preview_ip_range_blacklist (at least the private ranges).
url_preview_enabled: false

# Anyone who can reach the server can register: fine on loopback only.
# Ganglion has no verification step (email, captcha, token), so on a
# listener off loopback it refuses to start with open registration unless
# enable_registration_without_verification: true says it is meant.
enable_registration: true

# Synapse's rate limits apply with Synapse's defaults, e.g.
#   rc_message: {per_second: 0.2, burst_count: 10}
#   rc_login: {address: {per_second: 0.003, burst_count: 5}, ...}
# deployments/bench.yaml lifts them for benchmarks. Every HTTP listener
# closes slow and idle connections and caps connections per client IP:
#   http_limits: {read_header_timeout: 10s, read_timeout: 30s,
#     write_timeout: 45s, idle_timeout: 60s, max_connections_per_ip: 256}

# Presence is on, as in Synapse; "enabled: false" turns it off (the endpoints
# still answer), "untracked" shows it without clients changing it. The
# timers are Synapse's:
#presence:
#  enabled: true
#  include_offline_users_on_sync: false
#  last_active_granularity: 1m
#  sync_online_timeout: 30s
#  idle_timeout: 5m

# To-device messages (end-to-end encryption keys between devices) wait for
# their device to sync; a device that never syncs keeps the newest ones:
#   max_to_device_messages_per_device: 10000

# debug, info, warning or error.
log_level: info
`))
