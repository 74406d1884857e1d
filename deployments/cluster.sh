#!/usr/bin/env bash
# Starts (up) or stops (down) the local worker deployment of deployments/workers: the
# three-node NATS cluster of deployments/nats-cluster, Postgres and Redis on loopback
# (started when they are not running), the thirteen Ganglion processes, and the front
# door on 127.0.0.1:8008, where the single-process quick start listens too. Logs and
# pid files go to data/cluster. Run through `go tool task cluster` / `cluster-down`.
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

# start NAME COMMAND...: runs COMMAND in the background, its output in $LOGS/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$LOGS/$name.log" 2>&1 &
	echo $! >"$RUN/$name.pid"
}

up() {
	if ls "$RUN"/*.pid >/dev/null 2>&1; then
		say "already running (pid files in $RUN); go tool task cluster-down first" >&2
		exit 1
	fi
	mkdir -p "$LOGS"
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
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
