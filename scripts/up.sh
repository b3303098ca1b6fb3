#!/usr/bin/env bash
# `make up`: install what is missing, check and migrate, then serve the console in
# production mode on CORTEX_PORT (default 3000), detached; `make down` stops it.
#
# The frontend is compiled once per version of the code and port, into .builds/<key>, and
# served from there by the production backend (cortex_app/serve.py, as in the image): a
# second `make up` with nothing changed compiles nothing and serves in a few seconds.
set -euo pipefail
trap 'echo "cortex: error: make up stopped at scripts/up.sh line $LINENO (exit $?)" >&2' ERR
. "$(dirname "$0")/env.sh"
"$ROOT/scripts/bootstrap.sh" runtime
cd "$ROOT"
mkdir -p "$RUN_DIR"
PIDFILE=$RUN_DIR/cortex.pid
# The settings a console was started with, as one hash per variable (never the values: some
# are secrets), so that a second `make up` can tell whether it would have started another one.
settings_fingerprint() {
  local name
  # CORTEX_ADMIN_*: read only while no admin exists (and an unsalted hash of a password does
  # not belong on disk).
  for name in $(compgen -e | grep -E '^(CORTEX_[A-Z_]+|DOCKER_HOST)$' \
                | grep -v -x -E 'CORTEX_(RUN_DIR|ROOT|TEST_STRICT|ADMIN_USER|ADMIN_PASSWORD)' | sort); do
    [ -n "${!name}" ] && printf '%s %s\n' "$name" "$(printf '%s' "${!name}" | sha256sum | cut -c1-16)"
  done
  return 0
}
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  changed=$( { diff <(cat "$RUN_DIR/cortex.settings" 2>/dev/null || true) <(settings_fingerprint) || true; } \
            | sed -n 's/^[<>] \([A-Z_]*\) .*/\1/p' | sort -u | tr '\n' ' ')
  if [ -n "$changed" ]; then
    echo "cortex: already running (pid $(cat "$PIDFILE")), started with other settings than this shell's:" \
         "${changed% }; \`make restart\` restarts it with these" >&2
    exit 1
  fi
  echo "cortex: already running (pid $(cat "$PIDFILE")) with these settings; \`make down\` stops it," \
       "\`make restart\` restarts it" >&2
  exit 0
fi
python -m cortex_app.prestart || exit $?
read -r PORT LISTEN < <(python -c 'from cortex_app.settings import load_settings as l; s = l(); print(s.port, s.listen)')
[ "$LISTEN" = 0.0.0.0 ] && PROBE=127.0.0.1 || PROBE=$LISTEN
case $LISTEN in 0.0.0.0|127.*) SHOW=localhost ;; *) SHOW=$LISTEN ;; esac
LOG=$RUN_DIR/cortex.log
# Appended, never overwritten: what the last run said before it died (a crash, a kill) stays
# readable after the restart. Rotated at 10 MB (one old copy kept).
if [ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -gt 10485760 ]; then mv -f "$LOG" "$LOG.1"; fi
echo "--- make up, $(date -u '+%Y-%m-%d %H:%M:%S UTC') ---" >> "$LOG"

# What the compiled frontend depends on: the code, the assets, the pinned packages, and the
# port (the page talks back to the port it was built for).
KEY=$( { echo "port=$PORT"; find cortex_app assets rxconfig.py requirements.txt -type f \
         ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum; } \
       | sha256sum | cut -c1-16)
BUILDS=$ROOT/.builds
BUILD=$BUILDS/$KEY
mkdir -p "$BUILDS"
if [ ! -f "$BUILD/build/client/index.html" ]; then
  # One compile at a time per checkout: they share .web.
  exec 9>"$BUILDS/.lock"
  flock 9
  if [ ! -f "$BUILD/build/client/index.html" ]; then
    echo "cortex: compiling the frontend for port $PORT (once per code change; about 20 s)"
    if ! REFLEX_FRONTEND_PORT=$PORT REFLEX_BACKEND_PORT=$PORT \
         reflex export --frontend-only --no-zip --env prod --loglevel warning >>"$LOG" 2>&1 \
       || [ ! -f .web/build/client/index.html ]; then
      echo "cortex: error: the frontend did not compile; last lines of $LOG:" >&2
      tail -n 20 "$LOG" >&2
      exit 1
    fi
    rm -rf "$BUILD.tmp" && mkdir -p "$BUILD.tmp/build" && cp -r .web/build/client "$BUILD.tmp/build/client"
    rm -rf "$BUILD" && mv "$BUILD.tmp" "$BUILD"
    # Old builds go (other ports, earlier code): beyond the ten newest, those not used for a
    # day (every start touches its build; a console serving one for days keeps it).
    ls -1dt "$BUILDS"/*/ 2>/dev/null | tail -n +11 | while IFS= read -r old; do
      if [ -n "$(find "$old" -maxdepth 0 -mtime +0)" ]; then rm -rf -- "$old"; fi
    done
  fi
  flock -u 9
fi
touch "$BUILD"

echo "cortex: starting on port $PORT (log: $LOG)"
# setsid: its own process group, so `make down` stops the server and every worker it spawned.
REFLEX_WEB_WORKDIR=$BUILD setsid python -m cortex_app.serve --checked >>"$LOG" 2>&1 < /dev/null &
echo $! > "$PIDFILE"
rm -f "$RUN_DIR/cortex.settings"  # made anew, owner only: it holds hashes of the DB URL and the key
(umask 077 && settings_fingerprint > "$RUN_DIR/cortex.settings")
for _ in $(seq 1 600); do
  if curl -sf "http://$PROBE:$PORT/api/health" >/dev/null 2>&1; then
    if [ -n "${CORTEX_PUBLIC_URL:-}" ]; then
      echo "cortex: serving at ${CORTEX_PUBLIC_URL%/}/ (and http://$SHOW:$PORT/), listening on $LISTEN:$PORT"
    else
      echo "cortex: serving at http://$SHOW:$PORT/, listening on $LISTEN:$PORT (from another machine: set" \
           "CORTEX_PUBLIC_URL to the address you open)"
    fi
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "cortex: error: the console exited while starting; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  sleep 0.2
done
echo "cortex: error: no answer on port $PORT after 120 s; see $LOG" >&2
exit 1
