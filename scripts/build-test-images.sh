#!/usr/bin/env bash
# Build the images the tests run, with no registry (see ../shared/reference/test-bed.md):
#
#   cortex-test/busybox        busybox-static in an empty rootfs: crash / exit-code / slow-stop cases
#   cortex-test/llama-server   Debian sid + llama.cpp-tools (the real upstream llama-server) and
#                              the tiny GGUF model at /opt/models/tiny.gguf; tagged :latest and
#                              with the llama.cpp version it carries
#   cortex-test/python-base    Debian bookworm minbase + python3, python3-venv, ca-certificates:
#                              stands in for python:3.11-slim as the BASE of the project's own
#                              Dockerfile (tests/integration/test_selfhost.py, bench/image.py)
#   cortex-test/vllm-standin   python-base + scripts/testimages/vllm_standin.py:
#                              a STAND-IN for vLLM (which needs a GPU), not vLLM
#   cortex-test/nginx          Debian bookworm minbase + nginx-light: stands in for the stock
#                              nginx image (nginx:1.27-alpine) a remote host's ingress runs
#                              (cortex_app/ingress): the same nginx, built from Debian's package
#   cortex-test/nvidia-smi-standin  busybox + a STAND-IN for nvidia-smi printing fixed H200
#                              readings (scripts/testimages/nvidia-smi-h200.csv) in its CSV
#                              form: what a remote host's GPU sampler runs in the tests
#
# An image already present is kept (rebuild with FORCE=1). Needs DOCKER_HOST set to an
# engine that answers (scripts/engine.sh up) and the dev venv (for the gguf package).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${CORTEX_IMAGE_WORK:-/var/tmp/cortex-image-work}
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
log() { echo "images: $*" >&2; }

have() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

need_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2
  fi
}

fresh_dir() { rm -rf "$1"; mkdir -p "$1"; }

build_busybox() {
  have cortex-test/busybox:latest && return
  log "building cortex-test/busybox"
  local root="$WORK/busybox"
  fresh_dir "$root"; mkdir -p "$root/bin" "$root/tmp" "$root/www"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' \
    -c 'LABEL cortex.test-image=busybox' - cortex-test/busybox:latest >/dev/null
  rm -rf "$root"
}

build_smi_standin() {
  have cortex-test/nvidia-smi-standin:latest && return
  log "building cortex-test/nvidia-smi-standin"
  local root="$WORK/smi"
  fresh_dir "$root"; mkdir -p "$root/bin" "$root/usr/bin" "$root/etc" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh cat sleep; do ln -sf busybox "$root/bin/$applet"; done
  cp scripts/testimages/nvidia-smi-standin.sh "$root/usr/bin/nvidia-smi"
  cp scripts/testimages/nvidia-smi-h200.csv "$root/etc/nvidia-smi-standin.csv"
  chmod 755 "$root/usr/bin/nvidia-smi"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/bin:/bin' -c 'CMD ["nvidia-smi"]' \
    -c 'LABEL cortex.test-image=nvidia-smi-standin' - cortex-test/nvidia-smi-standin:latest >/dev/null
  rm -rf "$root"
}

debootstrap_into() {  # suite dir [--include=...]
  local suite=$1 root=$2; shift 2
  debootstrap --variant=minbase "$@" "$suite" "$root" "$MIRROR" >"$WORK/debootstrap-$suite.log" 2>&1 || {
    log "debootstrap $suite failed; last lines of $WORK/debootstrap-$suite.log:"; tail -n 20 "$WORK/debootstrap-$suite.log" >&2; exit 1; }
}

slim_rootfs() {
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
}

build_llama() {
  have cortex-test/llama-server:latest && return
  log "building cortex-test/llama-server (debootstrap sid + llama.cpp-tools, ~1 min)"
  local root="$WORK/llama"
  fresh_dir "$root"
  debootstrap_into sid "$root"
  # The machine clock runs ahead of sid's Release validity window.
  echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99no-check-valid"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" apt-get update -qq >"$WORK/llama-apt.log" 2>&1
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    llama.cpp-tools curl ca-certificates >>"$WORK/llama-apt.log" 2>&1 || {
    log "apt in the sid rootfs failed:"; tail -n 20 "$WORK/llama-apt.log" >&2; exit 1; }
  local version
  version=$(chroot "$root" dpkg-query -W -f '${Version}' llama.cpp-tools | sed -e 's/^[0-9]*://' -e 's/[+~-].*//')  # 1:0.7.0+dfsg-2 -> 0.7.0
  slim_rootfs "$root"
  mkdir -p "$root/opt/models"
  "$PY" scripts/testimages/make_tiny_gguf.py "$root/opt/models/tiny.gguf"
  tar -C "$root" -c . | docker import \
    -c 'ENTRYPOINT ["/usr/bin/llama-server"]' \
    -c 'CMD ["-m", "/opt/models/tiny.gguf", "--host", "0.0.0.0", "--port", "8080"]' \
    -c 'EXPOSE 8080' \
    -c "LABEL cortex.test-image=llama-server cortex.llamacpp-version=$version" \
    - "cortex-test/llama-server:$version" >/dev/null
  docker tag "cortex-test/llama-server:$version" cortex-test/llama-server:latest
  log "cortex-test/llama-server:$version ($(chroot "$root" llama-server --version 2>&1 | grep -m1 version || true))"
  rm -rf "$root"
}

build_vllm_standin() {  # on top of the python base: python3 is all it needs
  have cortex-test/vllm-standin:latest && return
  log "building cortex-test/vllm-standin (python-base + vllm_standin.py)"
  local ctx="$WORK/vllm"
  fresh_dir "$ctx"
  cp scripts/testimages/vllm_standin.py "$ctx/vllm_standin.py"
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM cortex-test/python-base:bookworm
COPY vllm_standin.py /opt/standin/vllm_standin.py
ENTRYPOINT ["/usr/bin/python3", "-u", "/opt/standin/vllm_standin.py"]
EXPOSE 8000
LABEL cortex.test-image=vllm-standin cortex.stand-in-for=vllm/vllm-openai
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -t cortex-test/vllm-standin:latest "$ctx" >"$WORK/vllm-build.log" 2>&1 || {
    log "docker build of the vLLM stand-in failed:"; tail -n 20 "$WORK/vllm-build.log" >&2; exit 1; }
  rm -rf "$ctx"
}

build_python_base() {
  have cortex-test/python-base:bookworm && return
  log "building cortex-test/python-base (debootstrap bookworm + python3-venv, ~1 min)"
  local root="$WORK/python-base"
  fresh_dir "$root"
  debootstrap_into bookworm "$root" --include=python3,python3-venv,ca-certificates
  slim_rootfs "$root"
  # python:3.11-slim answers to `python`; so does this stand-in.
  ln -sf python3 "$root/usr/bin/python"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["python3"]' \
    -c 'LABEL cortex.test-image=python-base cortex.stand-in-for=python:3.11-slim' \
    - cortex-test/python-base:bookworm >/dev/null
  rm -rf "$root"
}

build_nginx() {
  have cortex-test/nginx:latest && return
  log "building cortex-test/nginx (debootstrap bookworm + nginx-light, ~1 min)"
  local root="$WORK/nginx"
  fresh_dir "$root"
  debootstrap_into bookworm "$root" --include=nginx-light
  slim_rootfs "$root"
  rm -f "$root"/etc/nginx/sites-enabled/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["nginx", "-g", "daemon off;"]' \
    -c 'LABEL cortex.test-image=nginx cortex.stand-in-for=nginx:1.27-alpine' \
    - cortex-test/nginx:latest >/dev/null
  rm -rf "$root"
}

docker version >/dev/null 2>&1 || { log "no Docker Engine answers at DOCKER_HOST=${DOCKER_HOST:-unset}; run scripts/engine.sh up"; exit 1; }
mkdir -p "$WORK"
if ! have cortex-test/busybox:latest || ! have cortex-test/llama-server:latest || ! have cortex-test/vllm-standin:latest \
   || ! have cortex-test/python-base:bookworm || ! have cortex-test/nvidia-smi-standin:latest \
   || ! have cortex-test/nginx:latest; then
  need_host_tools
fi
build_busybox
build_smi_standin
build_llama
build_python_base
build_vllm_standin
build_nginx
log "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' 'cortex-test/*' | sort | tr '\n' ' ')"
