# Prediction service + review console: `rakuten-mlops serve` on port 8000.
# Build from the repository root: docker build -f docker/api.Dockerfile -t rakuten-api .
# The model comes from MLflow at start-up (RAKUTEN_SERVE_MODEL), never from the image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# CPU build of torch: the lock pins torch==X+cpu, which only this index serves.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml ./
# Dependencies first, resolved for a stub of the package: this layer stays cached until the
# lock or pyproject.toml change, whatever the code and README do. Two optional inputs for networks
# without the usual indexes: the CA bundle of a TLS-inspecting proxy (build secret
# `pipcert`) and wheels that no index serves (build/wheels, e.g. the CPU torch);
# `make images` passes both.
RUN --mount=type=secret,id=pipcert --mount=type=bind,source=build/wheels,target=/wheels \
    mkdir -p src/rakuten_mlops && touch src/rakuten_mlops/__init__.py README.md \
    && if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
    && pip install --find-links /wheels -c requirements/lock.txt ".[deploy]" \
    && rm -rf src README.md build
COPY README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation --force-reinstall "."

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rakuten-api" \
      org.opencontainers.image.description="Rakuten product classification service and console"
RUN groupadd --system --gid 10001 rakuten \
    && useradd --system --uid 10001 --gid rakuten --home-dir /app --shell /usr/sbin/nologin rakuten \
    && mkdir -p /app/data /app/logs \
    && chown -R rakuten:rakuten /app
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAKUTEN_ENV=prod \
    RAKUTEN_SERVE_HOST=0.0.0.0 \
    RAKUTEN_SERVE_PORT=8000 \
    RAKUTEN_LOG_FILE= \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache
WORKDIR /app
USER 10001:10001
# 9100: RAKUTEN_METRICS_PORT when set (compose, Kubernetes)
EXPOSE 8000 9100
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RAKUTEN_SERVE_PORT', '8000'), timeout=2)"]
CMD ["rakuten-mlops", "serve"]
