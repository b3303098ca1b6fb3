#!/usr/bin/env bash
# `make down`: stop the console `make up` started (its whole process group).
set -euo pipefail
. "$(dirname "$0")/env.sh"
PIDFILE=$RUN_DIR/cortex.pid
if [ ! -f "$PIDFILE" ]; then echo "cortex: not running"; exit 0; fi
pid=$(cat "$PIDFILE")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  echo "cortex: stopped (pid $pid)"
else
  echo "cortex: was not running (stale pid file removed)"
fi
rm -f "$PIDFILE"
