#!/usr/bin/env bash
# Install what the console (runtime) or the tests (dev) need, skipping what is there:
# Debian packages, the venv with pinned Python deps, bun from npm for Reflex.
# A second run with nothing to do takes about a second.
set -euo pipefail
. "$(dirname "$0")/env.sh"
MODE=${1:-runtime}
log() { echo "bootstrap: $*" >&2; }

apt_missing=()
want_pkg() { dpkg -s "$1" >/dev/null 2>&1 || apt_missing+=("$1"); }
PY=$(command -v python3.11 || true)
[ -n "$PY" ] || want_pkg python3
[ -n "$PY" ] && "$PY" -c 'import ensurepip, venv' 2>/dev/null || want_pkg python3-venv
command -v npm >/dev/null || { want_pkg nodejs; want_pkg npm; }
command -v curl >/dev/null || want_pkg curl
want_pkg ca-certificates
if [ "$MODE" = dev ]; then
  command -v dockerd >/dev/null || want_pkg docker.io
  command -v chromium >/dev/null || want_pkg chromium
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want_pkg postgresql
  command -v debootstrap >/dev/null || want_pkg debootstrap
  want_pkg busybox-static
  want_pkg docker-registry
  [ -x /usr/sbin/sshd ] || want_pkg openssh-server  # remote hosts over ssh (tests/hostbed.py)
  command -v iptables >/dev/null || want_pkg iptables
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "apt-get install ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
PY=$(command -v python3.11 || command -v python3)
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  log "Cortex needs Python 3.11; $PY is $("$PY" --version)"; exit 1; }

req=$ROOT/requirements.txt
[ "$MODE" = dev ] && req=$ROOT/requirements-dev.txt
stamp=$VENV/.installed-$(basename "$req")
want=$(cat "$ROOT"/requirements*.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating the venv in $VENV"
  "$PY" -m venv "$VENV"
fi
# The dev install is a superset of the runtime one.
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] && [ "$(cat "$VENV/.installed-requirements-dev.txt" 2>/dev/null)" != "$want" ]; then
  log "pip install -r $(basename "$req") (a few minutes on a fresh machine)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$req"
  echo "$want" > "$stamp"
fi

if [ "$("$REFLEX_BUN_PATH" --version 2>/dev/null)" != "$BUN_VERSION" ]; then
  log "npm install bun@$BUN_VERSION (Reflex's JS runtime; Reflex's own download needs the internet)"
  mkdir -p "$BUN_DIR"
  npm install --prefix "$BUN_DIR" --no-audit --no-fund --loglevel=error "bun@$BUN_VERSION" >/dev/null
fi
