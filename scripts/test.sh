#!/usr/bin/env bash
# `make test`: install and start everything the tests need, then run pytest on
# tests/unit, tests/integration (real Docker) and tests/e2e (real browser).
# Reused across runs: the venv, bun, the private engine and the images in it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
t0=$(date +%s)
"$ROOT/scripts/bootstrap.sh" dev
eval "$("$ROOT/scripts/engine.sh" up)"
"$ROOT/scripts/build-test-images.sh"
echo "test: setup took $(( $(date +%s) - t0 )) s" >&2
cd "$ROOT"
# Strict: a missing engine, database server or browser fails the run instead of skipping.
export CORTEX_TEST_STRICT=1
exec python -m pytest "$@"   # no args: testpaths in pytest.ini (unit, integration, e2e)
