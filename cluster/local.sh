#!/usr/bin/env bash
# A Ray cluster of several nodes (separate raylets) on this one machine, for raynn.
#
#   cluster/local.sh up [--workers N] [--cpus C] [--head-cpus C]   start head + N worker nodes
#   cluster/local.sh status                                         nodes and resources
#   cluster/local.sh env                                            exports for clients
#   cluster/local.sh down                                           stop what 'up' started
#
# Token authentication is on (RAY_AUTH_MODE=token, a fresh token in the state folder), every
# node takes 127.0.0.1 as its address and the dashboard listens on 127.0.0.1 only. Not every
# Ray server can be bound to loopback in Ray 2.60 (GCS, raylets, agents, metrics, the Ray
# Client server still listen on all interfaces or the machine's address): docs and
# cluster/README.md list them; the token guards the gRPC ones. Each cluster has its own Ray
# temp dir (/tmp/raynn-ray-*), removed by 'down'. 'down' stops exactly the
# processes 'up' started (their process groups, recorded in the state folder), never others.
# Settings: RAYNN_CLUSTER_DIR (state folder, default ./.raynn-cluster), RAYNN_HEAD_PORT (6390),
# RAYNN_DASHBOARD_PORT (8265), RAYNN_PORT_BASE (30000), RAYNN_UP_TIMEOUT (seconds 'up' waits for
# the nodes, 90), RAY and PYTHON (the ray command and the Python that has ray, default: those on
# PATH).
set -euo pipefail

STATE=${RAYNN_CLUSTER_DIR:-$PWD/.raynn-cluster}
PORT=${RAYNN_HEAD_PORT:-6390}
DASH=${RAYNN_DASHBOARD_PORT:-8265}
PORT_BASE=${RAYNN_PORT_BASE:-30000}  # node i uses PORT_BASE + 100 i + 1..7 and a worker range
UP_TIMEOUT=${RAYNN_UP_TIMEOUT:-90}
PYTHON=${PYTHON:-python3}
RAY=${RAY:-ray}

die() { echo "cluster/local.sh: $*" >&2; exit 2; }

auth_env() {
  export RAY_AUTH_MODE=token
  export RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
  # Ray runs workers at nice 15, below every other process; raynn's pinned workers own their
  # cores, so they run at the default priority (see raynn.kfold.executors.factory)
  export RAY_worker_niceness=0
}

nodes_alive() {
  "$PYTHON" - "$PORT" <<'PY' 2>/dev/null || echo 0
import logging, sys
import ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level=logging.ERROR, log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
PY
}

wait_nodes() {  # wait_nodes COUNT SECONDS
  local deadline=$((SECONDS + $2))
  while (( SECONDS < deadline )); do
    [[ "$(nodes_alive)" -ge "$1" ]] && return 0
    sleep 1
  done
  die "only $(nodes_alive) of $1 nodes came up; see $STATE/*.log"
}

start_node() {  # start_node NAME INDEX ARGS...: each node gets its own agent/worker ports
  local name=$1 i=$2; shift 2
  local base=$((PORT_BASE + 100 * i))
  # 'down' stops every node at once: Ray 2.60's drain on SIGTERM (30 s by default, the head
  # never finishes it) would only delay it
  # The head's dashboard and autoscaler serve Prometheus metrics on fixed ports (44227,
  # 44217) by default: two clusters on one machine would clash. Each node gets its own.
  RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0} \
    AUTOSCALER_METRIC_PORT=$((base + 5)) DASHBOARD_METRIC_PORT=$((base + 6)) \
    setsid "$RAY" start --block --node-ip-address 127.0.0.1 --disable-usage-stats \
    --dashboard-agent-listen-port $((base + 1)) --dashboard-agent-grpc-port $((base + 2)) \
    --runtime-env-agent-port $((base + 3)) --metrics-export-port $((base + 4)) \
    --min-worker-port $((base + 1000 * (i + 1))) --max-worker-port $((base + 1000 * (i + 1) + 999)) \
    "$@" \
    >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
}

up() {
  local workers=1 cpus=1 head_cpus=1
  while (( $# )); do
    case $1 in
      --workers) workers=$2; shift 2 ;;
      --cpus) cpus=$2; shift 2 ;;
      --head-cpus) head_cpus=$2; shift 2 ;;
      *) die "unknown option $1 (valid: --workers N, --cpus C, --head-cpus C)" ;;
    esac
  done
  ls "$STATE"/*.pid >/dev/null 2>&1 && die "a cluster from $STATE is up already; run 'down' first"
  mkdir -p "$STATE"
  # a failed 'up' (a node that does not come up in time, under load) stops what it started
  trap 'echo "cluster/local.sh: up failed; stopping the nodes it started" >&2; down >&2' EXIT
  # this cluster's own Ray temp dir (short: Ray's socket paths must fit 107 bytes), so a
  # client without RAY_ADDRESS never resolves another cluster's /tmp/ray on this machine
  mktemp -d /tmp/raynn-ray-XXXXXX >"$STATE/ray_temp_dir"
  umask 077
  "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/auth_token"
  auth_env
  start_node head 0 --head --port "$PORT" --num-cpus "$head_cpus" --include-dashboard true \
    --ray-client-server-port $((PORT_BASE + 7)) \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASH" --temp-dir "$(cat "$STATE/ray_temp_dir")"
  wait_nodes 1 "$UP_TIMEOUT"
  for ((i = 1; i <= workers; i++)); do
    start_node "worker$i" "$i" --address "127.0.0.1:$PORT" --num-cpus "$cpus"
  done
  wait_nodes $((workers + 1)) "$UP_TIMEOUT"
  trap - EXIT
  echo "cluster up: head 127.0.0.1:$PORT + $workers worker node(s); dashboard http://127.0.0.1:$DASH"
  echo "clients need:"
  env_lines
}

env_lines() {
  echo "export RAY_AUTH_MODE=token"
  echo "export RAY_AUTH_TOKEN_PATH=$STATE/auth_token"
  echo "export RAY_ADDRESS=http://127.0.0.1:$DASH"
}

group_alive() {  # any process of group $1 that is not a zombie
  ps -o stat= --sid "$1" 2>/dev/null | grep -qv '^Z'
}

down() {
  local pids=() f
  for f in "$STATE"/*.pid; do
    [[ -e $f ]] || continue
    pids+=("$(cat "$f")")
  done
  (( ${#pids[@]} )) || { echo "nothing to stop in $STATE"; return 0; }
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  local deadline=$((SECONDS + 30))
  for p in "${pids[@]}"; do
    while group_alive "$p" && (( SECONDS < deadline )); do sleep 0.5; done
    if group_alive "$p"; then  # SIGKILL is not instant either: wait until the group is gone
      kill -KILL -- "-$p" 2>/dev/null || true
      local gone=$((SECONDS + 10))
      while group_alive "$p" && (( SECONDS < gone )); do sleep 0.2; done
    fi
  done
  rm -f "$STATE"/*.pid
  if [[ -s "$STATE/ray_temp_dir" ]]; then
    rm -rf -- "$(cat "$STATE/ray_temp_dir")" "$STATE/ray_temp_dir"
  fi
  echo "cluster down (${#pids[@]} node(s) stopped)"
}

status() {
  [[ -e "$STATE/head.pid" ]] || { echo "no cluster from $STATE"; return 1; }
  auth_env
  "$RAY" status --address "127.0.0.1:$PORT"
}

cmd=${1:-}; shift || true
case $cmd in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  *) die "usage: cluster/local.sh up [--workers N] [--cpus C] [--head-cpus C] | status | env | down" ;;
esac
