#!/usr/bin/env bash
# A local development Ray cluster on this machine: a head node plus worker nodes, loopback only.
#
#   source .venv/bin/activate              # jobs run the `python` on the PATH of `ray start`
#   cluster/local_cluster.sh start         # prints the address for `ray job submit --address`
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop
#
# Environment (all optional):
#   REACTDIFF_CLUSTER_DIR  state dir: PIDs, logs, Ray's temp dir (default /tmp/reactdiff-cluster-$USER).
#                          Keep it short: Ray puts Unix sockets under it (107-byte path limit).
#   WORKER_NODES           extra worker nodes besides the head (default 1)
#   HEAD_CPUS, WORKER_CPUS logical CPUs each node advertises (default 2 each). More than the cores
#                          is fine for I/O-bound Ray Data reads next to CPU-bound train workers.
#   RAY_PORT, DASHBOARD_PORT  head GCS and dashboard ports (default: free ports)
#
# Every node runs a blocking process (`ray start --block` for the head) in its own session; its
# PID is recorded and `stop` ends exactly those process trees. It never runs `ray stop`, which cannot be scoped and
# would kill every Ray process of the machine (other users' clusters and local runtimes too).
set -euo pipefail

STATE_DIR=${REACTDIFF_CLUSTER_DIR:-/tmp/reactdiff-cluster-${USER:-$(id -un)}}
WORKER_NODES=${WORKER_NODES:-1}
HEAD_CPUS=${HEAD_CPUS:-2}
WORKER_CPUS=${WORKER_CPUS:-2}
# Ray's servers bind 127.0.0.1 only when the node IP is 127.0.0.1 (any other IP: all interfaces).
# `ray start` rewrites 127.0.0.1/localhost to the machine's network IP unless
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that set it refuses to start a non-head node
# (a policy meant for Windows/macOS). So the head uses `ray start`, and each worker node is started
# by the same call that `ray start --address --block` makes, minus that refusal: a private Ray API,
# in reactdiff/ray_compat.py (start_worker_node) with the others.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Token authentication, decided here for every node: left unset, the head turns it on when
# ~/.ray/auth_token exists while a joining node does not, and the node is refused. Clients
# (`ray job submit`, the dashboard) need the same RAY_AUTH_MODE=token in their environment.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
WORKER_NODE_PY='
import signal, sys
from reactdiff.ray_compat import start_worker_node

gcs_address, num_cpus, temp_dir, agent_port = sys.argv[1:]
node = start_worker_node(gcs_address, int(num_cpus), temp_dir, int(agent_port))
print("Ray runtime started.", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit runs Node'"'"'s cleanup of its processes
signal.pause()
'
START_TIMEOUT_S=180  # a cold start on a busy 2-core machine takes ~30 s per node

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

free_port() {
  python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PIDs of a process and all its descendants, parents first. Ray's job drivers run in their own
# sessions, so the tree, not the process group, is what holds everything a node started.
process_tree() {
  local pid=$1 child
  echo "$pid"
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    process_tree "$child"
  done
}

# True if the PID file names a live node process (guards against a recycled PID).
node_alive() {
  local pid_file=$1 pid
  [[ -f $pid_file ]] || return 1
  pid=$(<"$pid_file")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "ray start\|start_worker_node"
}

start_node() {  # start_node NAME COMMAND...: run a blocking node command detached, wait until it is up
  local name=$1; shift
  local log="$STATE_DIR/$name.log" pid waited=0
  : >"$log"
  setsid "$@" >"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$STATE_DIR/$name.pid"
  until grep -q "Ray runtime started" "$log"; do
    kill -0 "$pid" 2>/dev/null || { echo "$name node exited during start; see $log" >&2; return 1; }
    ((waited++ < START_TIMEOUT_S)) || { echo "$name node not up after ${START_TIMEOUT_S}s; see $log" >&2; return 1; }
    sleep 1
  done
  echo "$name node up (pid $pid, log $log)"
}

stop_node() {  # stop_node PID_FILE: SIGTERM the node process (it ends its children), then
  # SIGKILL whatever of its tree is left, e.g. job drivers that live in their own sessions.
  local pid_file=$1 root pids waited=0
  if ! node_alive "$pid_file"; then
    rm -f "$pid_file"
    return
  fi
  root=$(<"$pid_file")
  pids=$(process_tree "$root")
  kill -TERM "$root"
  while ((waited++ < 40)) && kill -0 "$root" 2>/dev/null; do
    sleep 1
  done
  kill -KILL $pids 2>/dev/null || true
  echo "stopped $(basename "$pid_file" .pid) node (pid $root and $(($(wc -w <<<"$pids") - 1)) descendants)"
  rm -f "$pid_file"
}

cmd_start() {
  command -v ray >/dev/null || die "no \`ray\` on PATH; activate the project venv first"
  node_alive "$STATE_DIR/head.pid" && die "already running (state in $STATE_DIR); run stop first"
  mkdir -p "$STATE_DIR"
  if [[ $RAY_AUTH_MODE == token ]]; then
    ray get-auth-token --generate >/dev/null  # ~/.ray/auth_token, if there is none yet
  fi
  local port=${RAY_PORT:-$(free_port)} dashboard_port=${DASHBOARD_PORT:-$(free_port)} i
  start_node head ray start --head --block --node-ip-address=127.0.0.1 --port="$port" \
    --num-cpus="$HEAD_CPUS" --temp-dir="$STATE_DIR/ray" --disable-usage-stats \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" \
    --dashboard-agent-listen-port="$(free_port)" --ray-client-server-port="$(free_port)" \
    || { cmd_stop >&2; die "start failed"; }
  for ((i = 1; i <= WORKER_NODES; i++)); do
    start_node "worker$i" python -c "$WORKER_NODE_PY" "127.0.0.1:$port" "$WORKER_CPUS" "$STATE_DIR/ray" \
      "$(free_port)" || { cmd_stop >&2; die "start failed"; }
  done
  echo "127.0.0.1:$port" >"$STATE_DIR/gcs_address"
  echo "http://127.0.0.1:$dashboard_port" >"$STATE_DIR/dashboard_url"
  echo "jobs will run $(command -v python)"
  echo "submit with: RAY_AUTH_MODE=$RAY_AUTH_MODE ray job submit --address $(<"$STATE_DIR/dashboard_url") --working-dir ." \
    "--runtime-env jobs/runtime_env.yaml -- python -m jobs.<name> ..."
}

cmd_stop() {
  local pid_file
  # Workers first, so the head does not wait for them to drain.
  for pid_file in "$STATE_DIR"/worker*.pid "$STATE_DIR"/head.pid; do
    [[ -e $pid_file ]] && stop_node "$pid_file"
  done
  echo "cluster in $STATE_DIR stopped"
}

cmd_status() {
  node_alive "$STATE_DIR/head.pid" || { echo "not running (state dir $STATE_DIR)"; return 1; }
  ray status --address "$(<"$STATE_DIR/gcs_address")" || true
  echo "dashboard / job submission: $(<"$STATE_DIR/dashboard_url")"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) die "usage: local_cluster.sh start|stop|status" ;;
esac
