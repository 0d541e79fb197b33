#!/usr/bin/env bash
# The MLflow tracking server for the cluster (or one machine): start | stop | status.
#
#   cluster/mlflow_server.sh start      # http://127.0.0.1:5000, SQLite + artifacts under ./mlflow_server
#   tracking.tracking_uri=http://127.0.0.1:5000   (the override every job and command takes)
#
# Environment (all optional):
#   MLFLOW_DIR      state: PID file, log, default SQLite file and artifacts (default ./mlflow_server)
#   MLFLOW_HOST     bind address (default 127.0.0.1). On the cluster head: its private IP, so
#                   workers inside the VPC reach it and nothing outside does (see ray_cluster.yaml).
#   MLFLOW_PORT     default 5000
#   MLFLOW_BACKEND_STORE_URI       default sqlite:///$MLFLOW_DIR/mlflow.db. SQLite suits one
#                   server process and a few writers. For a team: postgresql://user@host/mlflow
#                   (RDS; needs psycopg2 in the image).
#   MLFLOW_ARTIFACTS_DESTINATION   default $MLFLOW_DIR/artifacts; for a team: s3://bucket/mlflow.
#                   The server proxies artifacts (--serve-artifacts), so clients need no S3 access.
#   MLFLOW_WORKERS  server worker processes (default 2)
#
# MLflow 3 refuses file stores (mlruns/) for tracking; SQLite is its local default.
set -euo pipefail

MLFLOW_DIR=$(mkdir -p "${MLFLOW_DIR:-mlflow_server}" && cd "${MLFLOW_DIR:-mlflow_server}" && pwd)
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
BACKEND=${MLFLOW_BACKEND_STORE_URI:-sqlite:///$MLFLOW_DIR/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS_DESTINATION:-$MLFLOW_DIR/artifacts}
PID_FILE=$MLFLOW_DIR/server.pid
LOG=$MLFLOW_DIR/server.log
START_TIMEOUT_S=120

die() { echo "mlflow_server.sh: $*" >&2; exit 1; }

alive() {  # the PID file names a live `mlflow server` (guards against a recycled PID)
  [[ -f $PID_FILE ]] && tr '\0' ' ' <"/proc/$(<"$PID_FILE")/cmdline" 2>/dev/null | grep -q "mlflow server"
}

healthy() {
  python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://$HOST:$PORT/health" 2>/dev/null
}

cmd_start() {
  command -v mlflow >/dev/null || die "no \`mlflow\` on PATH; activate the project venv first"
  alive && die "already running (pid $(<"$PID_FILE"), http://$HOST:$PORT)"
  # Own session: the server forks its workers; `stop` ends the whole group.
  # MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: no job-runner processes (MLflow's GenAI jobs).
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid mlflow server \
    --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS" --serve-artifacts \
    --host "$HOST" --port "$PORT" --workers "${MLFLOW_WORKERS:-2}" >"$LOG" 2>&1 &
  echo $! >"$PID_FILE"
  local waited=0
  until healthy; do
    alive || die "the server exited during start; see $LOG"
    ((waited++ < START_TIMEOUT_S)) || die "not healthy after ${START_TIMEOUT_S}s; see $LOG"
    sleep 1
  done
  echo "MLflow server up: http://$HOST:$PORT (pid $(<"$PID_FILE"), store $BACKEND, log $LOG)"
}

cmd_stop() {
  if ! alive; then
    rm -f "$PID_FILE"
    echo "not running"
    return
  fi
  local pid waited=0
  pid=$(<"$PID_FILE")
  kill -TERM -- "-$pid"  # setsid made the server its process group's leader
  while ((waited++ < 20)) && kill -0 "$pid" 2>/dev/null; do
    sleep 1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  echo "MLflow server stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) if alive && healthy; then echo "running: http://$HOST:$PORT (pid $(<"$PID_FILE"))"; else echo "not running"; exit 1; fi ;;
  *) die "usage: mlflow_server.sh start|stop|status" ;;
esac
