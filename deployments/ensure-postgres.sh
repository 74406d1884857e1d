#!/usr/bin/env bash
# Makes sure a Postgres answers on 127.0.0.1:${GANGLION_PG_PORT:-5432} and lets the
# postgres user in from loopback without a password, which is what a generated
# configuration expects (postgres://postgres@127.0.0.1:5432/ganglion).
#
# Run by `go tool task run` and by .ci/run. When Postgres already answers it does
# nothing. Otherwise, on Debian, it installs the postgresql package if it is missing,
# creates a cluster on the port if none is there, gives the postgres user trust
# authentication from 127.0.0.1 and ::1 in that cluster, starts it, and says each
# thing it did. Running it again changes nothing.
#
# GANGLION_PG_PORT exists so the script can be tried on another port without touching
# the Postgres on 5432.
set -euo pipefail

port="${GANGLION_PG_PORT:-5432}"
host=127.0.0.1

say() { echo "ensure-postgres: $*"; }

answers() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h "$host" -p "$port"
	else
		(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
	fi
}

# as_root runs a command as root, through sudo when this is not root.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		say "need root for: $*" >&2
		exit 1
	fi
}

if answers; then
	exit 0
fi
say "no Postgres answers on $host:$port; setting one up"

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
	if ! command -v apt-get >/dev/null 2>&1; then
		say "Postgres is not installed and this is not Debian (no apt-get): install Postgres and let user postgres connect to $host:$port" >&2
		exit 1
	fi
	say "installing Debian's postgresql package (apt-get install -y postgresql)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi

# The newest installed major version, for a cluster we have to create.
version="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"

# The cluster that owns the port, if any: pg_lsclusters -h prints
# "version name port status owner datadir logfile".
read -r cversion cname _ < <(pg_lsclusters -h | awk -v p="$port" '$3 == p {print $1, $2; exit}') || true
if [ -z "${cname:-}" ]; then
	cversion="$version"
	cname=main
	if [ -d "/etc/postgresql/$cversion/main" ]; then
		cname=ganglion
	fi
	say "creating cluster $cversion/$cname on port $port (pg_createcluster)"
	as_root pg_createcluster --port "$port" "$cversion" "$cname" >/dev/null
fi

# Trust for the postgres user from loopback: the local, development use the generated
# configuration is for. The lines go first because pg_hba.conf takes the first match.
hba="/etc/postgresql/$cversion/$cname/pg_hba.conf"
marker="# ganglion: trust the postgres user from loopback (deployments/ensure-postgres.sh)"
if ! as_root grep -qF "$marker" "$hba"; then
	say "adding trust authentication for user postgres from 127.0.0.1 and ::1 to $hba"
	tmp="$(mktemp)"
	{
		echo "$marker"
		echo "host all postgres 127.0.0.1/32 trust"
		echo "host all postgres ::1/128 trust"
		as_root cat "$hba"
	} >"$tmp"
	as_root cp "$tmp" "$hba"
	rm -f "$tmp"
	if pg_lsclusters -h | awk -v v="$cversion" -v n="$cname" '$1 == v && $2 == n && $4 ~ /online/ {f=1} END {exit !f}'; then
		as_root pg_ctlcluster --skip-systemctl-redirect "$cversion" "$cname" reload
	fi
fi

if ! pg_lsclusters -h | awk -v v="$cversion" -v n="$cname" '$1 == v && $2 == n && $4 ~ /online/ {f=1} END {exit !f}'; then
	say "starting cluster $cversion/$cname (pg_ctlcluster $cversion $cname start)"
	as_root pg_ctlcluster --skip-systemctl-redirect "$cversion" "$cname" start
fi

for _ in $(seq 1 60); do
	if answers; then
		say "Postgres $cversion/$cname answers on $host:$port (user postgres, no password from loopback)"
		exit 0
	fi
	sleep 0.5
done
say "Postgres $cversion/$cname did not answer on $host:$port within 30s; see /var/log/postgresql/" >&2
exit 1
