#!/usr/bin/env bash
# Starts (up) or stops (down) the local worker deployment of deployments/workers: the
# three-node NATS cluster of deployments/nats-cluster, Postgres and Redis on loopback
# (started when they are not running), the thirteen Ganglion processes, and the front
# door on 127.0.0.1:8008, where the single-process quick start listens too. Logs and
# pid files go to data/cluster. Run through `go tool task cluster` / `cluster-down`.
# `kill NAME` kills one process (main, a worker's name, nats-n1..3, frontdoor) with
# SIGKILL; `restart NAME` starts it again as it was started; `add NAME FILE...` starts
# one more worker from shared.yaml and FILE... and has the front door read its files
# again (a worker whose file is in the workers directory then takes requests);
# `reload` does only the latter (SIGHUP); `stop NAME` stops one with SIGTERM.
#
# GANGLION_EXTRA_CONFIG names further configuration files (space-separated) that every
# process reads after its own, e.g. deployments/bench.yaml for load tests.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=data/cluster
LOGS=$RUN/logs
# GANGLION_WORKERS_DIR replaces deployments/workers: its shared.yaml and every other
# .yaml file, one per worker.
W=${GANGLION_WORKERS_DIR:-deployments/workers}
WORKERS=$(for f in "$W"/*.yaml; do b=$(basename "$f" .yaml); [ "$b" = shared ] || echo "$b"; done)

say() { echo "cluster: $*"; }

EXTRA=()
for f in ${GANGLION_EXTRA_CONFIG:-}; do EXTRA+=(-c "$f"); done

# wait_until NAME SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_until() {
	local name=$1 limit=$2
	shift 2
	for _ in $(seq 1 $((limit * 5))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	say "$name did not come up within ${limit}s; see $LOGS" >&2
	return 1
}

# start NAME COMMAND...: runs COMMAND in the background, its output appended to
# $LOGS/NAME.log, and keeps the command in $RUN/NAME.cmd for `restart`.
start() {
	local name=$1
	shift
	"$@" >>"$LOGS/$name.log" 2>&1 &
	echo $! >"$RUN/$name.pid"
	printf '%q ' "$@" >"$RUN/$name.cmd"
}

# kill9 NAME: kills the process NAME with SIGKILL, as a crash would.
kill9() {
	local name=$1
	if [ ! -f "$RUN/$name.pid" ]; then
		say "no process $name (no $RUN/$name.pid)" >&2
		exit 1
	fi
	kill -KILL "$(cat "$RUN/$name.pid")" 2>/dev/null || true
	say "killed $name with SIGKILL"
}

# add NAME FILE...: starts one more worker, NAME, from shared.yaml, the extra files
# and FILE..., and waits until it is up (scaling out, as the seed describes it).
add() {
	local name=$1
	shift
	local files=() before=0
	for f in "$@"; do files+=(-c "$f"); done
	[ -f "$LOGS/$name.log" ] && before=$(grep -c '"process started"' "$LOGS/$name.log" || true)
	start "$name" bin/ganglion run -c "$W/shared.yaml" "${EXTRA[@]}" "${files[@]}"
	wait_until "$name" 60 started_since "$name" "$before"
	say "added $name"
	if [ -f "$RUN/frontdoor.pid" ]; then reload; fi
}

# reload: the front door reads the deployment's files again (SIGHUP), as nginx -s reload.
reload() {
	local before
	before=$(grep -c '"reloaded the deployment' "$LOGS/frontdoor.log" || true)
	kill -HUP "$(cat "$RUN/frontdoor.pid")"
	wait_until "the front door's reload" 10 reloaded_since "$before"
	grep '"reloaded the deployment' "$LOGS/frontdoor.log" | tail -1
}

# reloaded_since N: the front door's log holds more than N reloads.
reloaded_since() {
	[ "$(grep -c '"reloaded the deployment' "$LOGS/frontdoor.log" || true)" -gt "$1" ]
}

# stop NAME: stops NAME with SIGTERM and waits until it has exited.
stop() {
	local name=$1 pid
	pid=$(cat "$RUN/$name.pid")
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	rm -f "$RUN/$name.pid" "$RUN/$name.cmd"
	say "stopped $name"
}

# started_since NAME N: NAME's log holds more than N "process started" lines.
started_since() {
	[ "$(grep -c '"process started"' "$LOGS/$1.log")" -gt "$2" ]
}

# restart NAME: starts NAME again with the command it was started with, and waits
# until it is up.
restart() {
	local name=$1
	if [ ! -f "$RUN/$name.cmd" ]; then
		say "no process $name was started (no $RUN/$name.cmd)" >&2
		exit 1
	fi
	if kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
		say "$name is running" >&2
		exit 1
	fi
	local before
	before=$(grep -c '"process started"' "$LOGS/$name.log" || true)
	eval "start $name $(cat "$RUN/$name.cmd")"
	case $name in
	nats-n*) wait_until "$name" 30 curl -sf "http://127.0.0.1:822${name#nats-n}/healthz" ;;
	frontdoor) wait_until "the front door" 30 curl -sf http://127.0.0.1:8008/_matrix/client/versions ;;
	*) wait_until "$name" 60 started_since "$name" "$before" ;;
	esac
	say "restarted $name"
}

up() {
	if ls "$RUN"/*.pid >/dev/null 2>&1; then
		say "already running (pid files in $RUN); go tool task cluster-down first" >&2
		exit 1
	fi
	mkdir -p "$LOGS"
	rm -f "$LOGS"/*.log "$RUN"/*.cmd
	bash deployments/ensure-postgres.sh
	if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
		if command -v redis-server >/dev/null; then
			say "starting redis-server on 127.0.0.1:6379"
			redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
				--logfile "$PWD/$LOGS/redis.log"
		else
			say "no Redis on 127.0.0.1:6379: stream positions are not mirrored there (nothing else needs it)"
		fi
	fi
	go build -o bin/ganglion .
	go build -o bin/nats-server github.com/nats-io/nats-server/v2
	test -f data/localhost.signing.key || bin/ganglion generate-keys -o data/localhost.signing.key
	bin/ganglion check-config -c "$W/shared.yaml" "${EXTRA[@]}" -workers "$W"

	for n in 1 2 3; do start "nats-n$n" bin/nats-server -c "deployments/nats-cluster/n$n.conf"; done
	for n in 1 2 3; do wait_until "nats node n$n" 30 curl -sf "http://127.0.0.1:822$n/healthz"; done
	say "NATS cluster up (127.0.0.1:4241-4243)"

	start main bin/ganglion run -c "$W/shared.yaml" "${EXTRA[@]}"
	wait_until main 60 curl -sf http://127.0.0.1:8080/health
	for w in $WORKERS; do start "$w" bin/ganglion run -c "$W/shared.yaml" -c "$W/$w.yaml" "${EXTRA[@]}"; done
	for w in $WORKERS; do wait_until "$w" 60 grep -q '"process started"' "$LOGS/$w.log"; done
	say "$(($(echo $WORKERS | wc -w) + 1)) processes up"

	start frontdoor bin/ganglion frontdoor -listen 127.0.0.1:8008 -c "$W/shared.yaml" "${EXTRA[@]}" -workers "$W"
	wait_until "the front door" 30 curl -sf http://127.0.0.1:8008/_matrix/client/versions
	say "front door on http://127.0.0.1:8008; logs in $LOGS; stop with: go tool task cluster-down"
}

down() {
	local pids=()
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] || continue
		pids+=("$(cat "$f")")
	done
	if [ ${#pids[@]} -eq 0 ]; then
		say "nothing running"
		return 0
	fi
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for _ in $(seq 1 50); do
		alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive -eq 0 ] && break
		sleep 0.2
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	rm -f "$RUN"/*.pid
	say "stopped ${#pids[@]} processes"
}

case "${1:-}" in
up) up ;;
down) down ;;
kill) kill9 "${2:?usage: $0 kill NAME}" ;;
add) add "${2:?usage: $0 add NAME FILE...}" "${@:3}" ;;
stop) stop "${2:?usage: $0 stop NAME}" ;;
reload) reload ;;
restart) restart "${2:?usage: $0 restart NAME}" ;;
*)
	echo "usage: $0 up|down|kill NAME|restart NAME|add NAME FILE...|stop NAME|reload" >&2
	exit 2
	;;
esac
