# Airflow running the project's DAGs (orchestration/airflow/dags). Two virtual environments,
# as on a developer machine: Airflow in /opt/airflow-venv (its own pins:
# orchestration/airflow/requirements.txt) and the project's CLI in /opt/venv, which the DAGs
# call (RAKUTEN_CLI). Build from the repository root:
#   docker build -f docker/airflow.Dockerfile -t rakuten-airflow .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY orchestration/airflow/requirements.txt /tmp/airflow-requirements.txt
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
    && python -m venv /opt/airflow-venv \
    && /opt/airflow-venv/bin/pip install -r /tmp/airflow-requirements.txt psycopg2-binary
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml ./
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}
# Dependencies first, resolved for a stub of the package: this layer stays cached until the
# lock or pyproject.toml change, whatever the code and README do. Two optional inputs for networks
# without the usual indexes: the CA bundle of a TLS-inspecting proxy (build secret
# `pipcert`) and wheels that no index serves (build/wheels, e.g. the CPU torch);
# `make images` passes both.
RUN --mount=type=secret,id=pipcert --mount=type=bind,source=build/wheels,target=/wheels \
    mkdir -p src/rakuten_mlops && touch src/rakuten_mlops/__init__.py README.md \
    && if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
    && /opt/venv/bin/pip install --find-links /wheels -c requirements/lock.txt ".[deploy]" \
    && rm -rf src README.md build
COPY README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --force-reinstall "."

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rakuten-airflow" \
      org.opencontainers.image.description="Airflow with the Rakuten DAGs and CLI"
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 airflow \
    && useradd --system --uid 10001 --gid airflow --home-dir /opt/airflow --create-home --shell /usr/sbin/nologin airflow
COPY --from=builder /opt/airflow-venv /opt/airflow-venv
COPY --from=builder /opt/venv /opt/venv
COPY --chown=airflow:airflow orchestration/airflow/dags /opt/airflow/dags
COPY --chown=airflow:airflow params.yaml dvc.yaml /opt/airflow/project/
ENV PATH=/opt/airflow-venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    RAKUTEN_CLI=/opt/venv/bin/rakuten-mlops \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /opt/airflow/project
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/v2/monitor/health', timeout=4)"]
# `standalone` (scheduler + API server + DAG processor) for one host; on Kubernetes the
# official Helm chart runs each component (deploy/k8s/airflow/values.yaml).
CMD ["airflow", "standalone"]
