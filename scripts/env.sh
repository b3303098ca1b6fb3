# Sourced by the other scripts: where the project's tools live and how Reflex must behave
# on a machine that reaches only the package registries.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CORTEX_ROOT=$ROOT
VENV=$ROOT/.venv
BUN_DIR=$ROOT/.tools/bun
BUN_VERSION=1.4.4   # the version Reflex 0.10.1 pins (reflex.constants.Bun.VERSION)
export PATH="$VENV/bin:$BUN_DIR/node_modules/.bin:$PATH"
export REFLEX_BUN_PATH=$BUN_DIR/node_modules/.bin/bun
export REFLEX_CHECK_LATEST_VERSION=0
export REFLEX_TELEMETRY_ENABLED=false
export NPM_CONFIG_REGISTRY=${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org/}
export PYTHONUNBUFFERED=1
# The console's PID file and log: one console per checkout, unless CORTEX_RUN_DIR names another
# folder (tests and benchmarks run several consoles of one checkout, each with its own).
RUN_DIR=${CORTEX_RUN_DIR:-$ROOT/.run}
