# The command line for batch jobs: data, train, retrain, monitor drift, score (local or
# Spark, hence Java). Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t rakuten-trainer .
#   docker run --rm -v "$PWD/data:/app/data" rakuten-trainer score --engine spark ...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
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
    && pip install --find-links /wheels -c requirements/lock.txt ".[deploy,spark]" \
    && rm -rf src README.md build
COPY README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation --force-reinstall "."

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rakuten-trainer" \
      org.opencontainers.image.description="Rakuten product classification CLI (training, scoring, monitoring)"
# Java for `score --engine spark` (PySpark 4 needs 17+); git and procps for DVC and Spark.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless git procps \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rakuten \
    && useradd --system --uid 10001 --gid rakuten --home-dir /app --shell /usr/sbin/nologin rakuten \
    && mkdir -p /app/data /app/models /app/reports \
    && chown -R rakuten:rakuten /app
COPY --from=builder /opt/venv /opt/venv
COPY --chown=rakuten:rakuten params.yaml dvc.yaml /app/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER 10001:10001
# A batch image has no server: healthy when the CLI and its model stack import.
HEALTHCHECK --interval=60s --timeout=30s --start-period=30s --retries=3 \
    CMD ["rakuten-mlops", "--version"]
ENTRYPOINT ["rakuten-mlops"]
CMD ["--help"]
