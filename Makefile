# Cortex: `make up` runs the console, `make test` runs every test. See README.md.
# The recipes source scripts/env.sh, which is bash (Debian's /bin/sh is dash).
SHELL := /bin/bash
.PHONY: up down restart test engine-up engine-down images bootstrap bench chaos clean

up:
	@scripts/up.sh

down:
	@scripts/down.sh

# Stop, then start with this shell's settings (what `make up` says to do when they changed).
restart:
	@scripts/down.sh && scripts/up.sh

test:
	@scripts/test.sh

bootstrap:
	@scripts/bootstrap.sh dev

engine-up:
	@scripts/engine.sh up >/dev/null && echo "engine: DOCKER_HOST=$$(scripts/engine.sh host)"

engine-down:
	@scripts/engine.sh down

images:
	@eval "$$(scripts/engine.sh up)" && scripts/build-test-images.sh

bench:
	@scripts/bootstrap.sh dev && eval "$$(scripts/engine.sh up)" && scripts/build-test-images.sh \
	  && .venv/bin/python bench/llama_start.py && .venv/bin/python bench/lifecycle.py \
	  && .venv/bin/python bench/reconcile.py && .venv/bin/python bench/webhooks.py \
	  && .venv/bin/python bench/image.py \
	  && . scripts/env.sh && .venv/bin/python bench/ui.py

# The chaos harness's long form: MINUTES=30 by default (each seed's), SEED=... replays a run,
# SEEDS=N runs N new random seeds after it, one after another.
chaos:
	@scripts/bootstrap.sh dev && eval "$$(scripts/engine.sh up)" && scripts/build-test-images.sh \
	  && . scripts/env.sh && .venv/bin/python bench/chaos.py --minutes $${MINUTES:-30} $${SEED:+--seed $$SEED} \
	  $${SEEDS:+--seeds $$SEEDS}

clean:
	rm -rf .web .run .builds
