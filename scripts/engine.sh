#!/usr/bin/env bash
# The Docker Engine the tests talk to.
#
#   scripts/engine.sh up    print `export DOCKER_HOST=...` for an engine that answers:
#                           DOCKER_HOST or /var/run/docker.sock if one does, else a private
#                           dockerd under $CORTEX_ENGINE_DIR (default /var/tmp/cortex-engine),
#                           started once and reused across runs (its data root keeps images).
#   scripts/engine.sh down  stop the private dockerd (by its PID file) and undo the host
#                           changes it made: docker0, its iptables chains, the FORWARD policy
#                           and ip_forward, restored to what they were before `up`.
#   scripts/engine.sh restart  stop and start the private dockerd on the same roots: a real
#                           "Docker daemon restart" (tests use it); host changes stay.
#   scripts/engine.sh stop  stop the private dockerd only (start it again with `up`).
#   scripts/engine.sh host  print the DOCKER_HOST of the private engine.
#   scripts/engine.sh private  like up, but always this private engine (never another one).
#
# Progress goes to stderr; only the export line goes to stdout, so `eval "$(... up)"` works.
#
# CORTEX_ENGINE_DIR=... CORTEX_ENGINE_BRIDGE=name:cidr scripts/engine.sh up|down|restart|stop
#                           a second private engine beside another one (the tests' own engine
#                           on a machine whose engine is someone else's): its own bridge, and no
#                           iptables rules, so it never touches the other engine's docker0 or
#                           chains; ports are published on loopback by docker-proxy.
set -euo pipefail

E=${CORTEX_ENGINE_DIR:-/var/tmp/cortex-engine}
SOCK="unix://$E/docker.sock"
BRIDGE=${CORTEX_ENGINE_BRIDGE:-}
log() { echo "engine: $*" >&2; }

answers() { DOCKER_HOST="$1" timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install_engine() {
  command -v dockerd >/dev/null && return
  log "installing Debian's docker.io (dockerd, containerd, runc)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq docker.io >&2
}

start_private() {
  install_engine
  mkdir -p "$E"
  if [ -f "$E/dockerd.pid" ] && kill -0 "$(cat "$E/dockerd.pid")" 2>/dev/null && answers "$SOCK"; then
    return
  fi
  rm -f "$E/dockerd.pid" "$E/docker.sock"
  local network=()
  if [ -n "$BRIDGE" ]; then
    local name=${BRIDGE%%:*} cidr=${BRIDGE#*:}
    if ! ip link show "$name" >/dev/null 2>&1; then
      ip link add "$name" type bridge
      ip addr add "$cidr" dev "$name"
    fi
    ip link set "$name" up
    network=(--bridge "$name" --iptables=false --ip6tables=false)
  elif [ ! -f "$E/host-before" ]; then
    # Remember what the host looked like, so `down` can put it back.
    {
      echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
      echo "forward_policy=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}')"
    } > "$E/host-before"
  fi
  log "starting a private dockerd in $E"
  # setsid: the daemon must outlive this shell and the make that started it.
  setsid dockerd --storage-driver=overlay2 --data-root "$E/data" --exec-root "$E/exec" \
    --pidfile "$E/dockerd.pid" --host "$SOCK" "${network[@]}" >"$E/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    answers "$SOCK" && { log "private dockerd ready"; return; }
    sleep 0.2
  done
  log "dockerd did not answer within 20 s; last lines of $E/dockerd.log:"
  tail -n 20 "$E/dockerd.log" >&2
  exit 1
}

stop_private() {
  [ -f "$E/dockerd.pid" ] || return 0
  local pid
  pid=$(cat "$E/dockerd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping private dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$E/dockerd.pid"
}

case "${1:-}" in
  restart)
    stop_private
    start_private
    ;;
  stop)  # the daemon only; host changes and data stay (tests: "the engine went away")
    stop_private
    ;;
  up)
    if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$SOCK" ] && answers "$DOCKER_HOST"; then
      log "using the engine at DOCKER_HOST=$DOCKER_HOST"; echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0
    fi
    if [ -S /var/run/docker.sock ] && answers unix:///var/run/docker.sock; then
      log "using the engine at /var/run/docker.sock"; echo "export DOCKER_HOST=unix:///var/run/docker.sock"; exit 0
    fi
    start_private
    echo "export DOCKER_HOST=$SOCK"
    ;;
  private)  # this private engine, even where another engine answers (tests that restart it)
    start_private
    echo "export DOCKER_HOST=$SOCK"
    ;;
  host)
    echo "$SOCK"
    ;;
  down)
    stop_private
    if [ -n "$BRIDGE" ]; then  # it touched nothing but its own bridge
      ip link del "${BRIDGE%%:*}" 2>/dev/null || true
      log "private engine stopped; images kept in $E/data (rm -rf $E to drop them)"
      exit 0
    fi
    # Undo what dockerd changed on the host (it leaves all of this behind), and only if this
    # script set it up: never the networking of an engine that is someone else's.
    if [ ! -f "$E/host-before" ]; then
      log "private engine stopped; host networking left as it was (this script did not set it up)"
      exit 0
    fi
    ip link del docker0 2>/dev/null || true
    for table in filter nat; do
      for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
        iptables -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |$)" | grep -v "^-N" \
          | sed 's/^-A/-D/' | while read -r rule; do eval iptables -t "$table" "$rule" || true; done
      done
      for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
        iptables -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
        iptables -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
    if [ -f "$E/host-before" ]; then
      # shellcheck disable=SC1090
      . "$E/host-before"
      [ -n "${forward_policy:-}" ] && iptables -P FORWARD "$forward_policy" 2>/dev/null || true
      [ -n "${ip_forward:-}" ] && echo "$ip_forward" > /proc/sys/net/ipv4/ip_forward || true
      rm -f "$E/host-before"
    fi
    log "private engine stopped; images kept in $E/data (rm -rf $E to drop them)"
    ;;
  *)
    echo "usage: $0 up|private|down|restart|stop|host" >&2; exit 2 ;;
esac
