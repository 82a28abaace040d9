# MLflow tracking server + model registry: PostgreSQL backend store (psycopg2), artifacts
# proxied to an S3-compatible store (boto3; MinIO in compose). Build from the repository
# root: docker build -f docker/mlflow.Dockerfile -t rakuten-mlflow .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/lock.txt /tmp/lock.txt
# Same MLflow version as the project (the lock), no torch.
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
    && pip install -c /tmp/lock.txt mlflow psycopg2-binary boto3

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rakuten-mlflow" \
      org.opencontainers.image.description="MLflow tracking server (PostgreSQL + S3 artifacts)"
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /mlflow --create-home --shell /usr/sbin/nologin mlflow
COPY --from=builder /opt/venv /opt/venv
# Every value comes from the environment (compose `.env`, a Kubernetes Secret):
# MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://user:password@postgres:5432/mlflow
# MLFLOW_ARTIFACTS_DESTINATION=s3://mlflow-artifacts, MLFLOW_S3_ENDPOINT_URL=http://minio:9000,
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, MLFLOW_ALLOWED_HOSTS (Host headers accepted).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_PORT=5000 \
    MLFLOW_WORKERS=2 \
    MLFLOW_ALLOWED_HOSTS=localhost,localhost:5000,127.0.0.1:5000,mlflow,mlflow:5000
WORKDIR /mlflow
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['MLFLOW_PORT'], timeout=2)"]
CMD ["sh", "-c", "exec mlflow server --host 0.0.0.0 --port \"$MLFLOW_PORT\" --workers \"$MLFLOW_WORKERS\" --backend-store-uri \"$MLFLOW_BACKEND_STORE_URI\" --artifacts-destination \"$MLFLOW_ARTIFACTS_DESTINATION\" --serve-artifacts --allowed-hosts \"$MLFLOW_ALLOWED_HOSTS\""]
