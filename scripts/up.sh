#!/usr/bin/env bash
# `make up`: install what is missing, check and migrate, then serve the console in
# production mode on CORTEX_PORT (default 3000), detached; `make down` stops it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
"$ROOT/scripts/bootstrap.sh" runtime
cd "$ROOT"
mkdir -p "$RUN_DIR"
PIDFILE=$RUN_DIR/cortex.pid
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "cortex: already running (pid $(cat "$PIDFILE")); \`make down\` stops it" >&2
  exit 0
fi
python -m cortex_app.prestart || exit $?
PORT=$(python -c 'from cortex_app.settings import load_settings; print(load_settings().port)')
LOG=$RUN_DIR/cortex.log
echo "cortex: building and starting on port $PORT (log: $LOG)"
# setsid: its own process group, so `make down` stops reflex and every worker it spawned.
setsid reflex run --env prod --single-port --backend-port "$PORT" --loglevel warning >"$LOG" 2>&1 < /dev/null &
echo $! > "$PIDFILE"
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null 2>&1; then
    echo "cortex: serving at http://localhost:$PORT/"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "cortex: error: the console exited while starting; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  sleep 0.5
done
echo "cortex: error: no answer on port $PORT after 300 s; see $LOG" >&2
exit 1
