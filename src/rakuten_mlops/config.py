"""Runtime settings: the environment and `.env`.

`Settings` says where things are and how to reach them (paths, URIs, secrets, thresholds
of the runtime). It is read from `RAKUTEN_*` environment variables or a `.env` file, built
by `get_settings()` when a command starts, never at import time. The versioned
hyperparameters of `params.yaml` are `rakuten_mlops.params`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HF_BASE_URL = (
    "https://huggingface.co/datasets/ndiguesene/ml-datasets-image-rakuten-ecommerce/resolve/main/"
)


class Settings(BaseSettings):
    """Runtime settings; every field maps to `RAKUTEN_<FIELD>` (documented in .env.example)."""

    model_config = SettingsConfigDict(
        env_prefix="RAKUTEN_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = "dev"
    log_level: str = "INFO"

    # Data layers.
    raw_dir: Path = Path("data/raw")
    interim_dir: Path = Path("data/interim")
    processed_dir: Path = Path("data/processed")

    # Download from the Hugging Face dataset (or a mirror of it).
    hf_base_url: str = DEFAULT_HF_BASE_URL
    hf_token: SecretStr | None = None
    download_timeout_s: float = 60.0
    download_retries: int = Field(default=5, ge=0)
    download_backoff_s: float = Field(default=1.0, ge=0)
    # Refuse archives that would expand beyond this many bytes or this ratio of their size.
    max_extract_bytes: int = 20 * 1024**3
    max_extract_ratio: float = 200.0

    # Experiment parameters and outputs.
    params_file: Path = Path("params.yaml")
    models_dir: Path = Path("models")
    reports_dir: Path = Path("reports")

    # MLflow: MLFLOW_TRACKING_URI, when set, wins over RAKUTEN_MLFLOW_TRACKING_URI.
    mlflow_tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    mlflow_artifact_root: Path = Path("mlflow/artifacts")
    mlflow_experiment: str = "rakuten-product-classification"
    model_name: str = "rakuten-product-classifier"

    # CPU threads for torch and BLAS (0 = library default).
    num_threads: int = Field(default=0, ge=0)

    # Prediction service
    database_url: str = "sqlite:///data/service/service.db"
    serve_model: str = "models:/rakuten-product-classifier@champion"
    # Empty: the `challenger` alias of the served registered model (none for a directory).
    serve_challenger_model: str = ""
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=8000, ge=1, le=65535)
    serve_workers: int = Field(default=1, ge=1)
    # Flag for review every prediction under this confidence, instead of the model's own
    # review rule (None: the rule the model learnt for `review.target_precision`).
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    challenger_mode: Literal["off", "split", "shadow"] = "off"
    challenger_share: float = Field(default=0.1, ge=0.0, le=1.0)
    reload_poll_s: float = Field(default=0.0, ge=0.0)
    # Start-up waits this long for the first model load before accepting connections (a
    # load balancer without health checks then sends nothing to a replica that cannot
    # predict yet); 0 accepts at once and answers 503 until the model is in.
    wait_for_model_s: float = Field(default=0.0, ge=0.0, le=3600.0)
    batch_max_items: int = Field(default=64, ge=1)
    max_image_bytes: int = Field(default=10 * 1024**2, ge=1)
    microbatch_max_size: int = Field(default=64, ge=1)
    microbatch_max_wait_ms: float = Field(default=5.0, ge=0.0)
    microbatch_concurrency: int = Field(default=2, ge=1)
    # Each model predicts in a process of its own (the event loop and the model then use two
    # cores instead of sharing one interpreter); false: in the service's process.
    model_process: bool = True
    # CPU threads of each model process (torch, BLAS): with one, the model and the event loop
    # each keep a core of a 2-core machine (threads competing for a busy core slow it down).
    model_threads: int = Field(default=1, ge=1)
    # Seconds a replaced model's process keeps answering the requests that took it.
    model_retire_s: float = Field(default=30.0, ge=0.0)
    record_flush_ms: float = Field(default=200.0, gt=0.0)
    record_batch_size: int = Field(default=256, ge=1)
    # Prediction records waiting in memory while the database is down; beyond it (and at a
    # shutdown during an outage) they go to an append-only spool file in record_spool_dir,
    # written to the database when it is back (at start-up too), each row once.
    record_queue_max: int = Field(default=50_000, ge=1)
    record_spool_dir: Path = Path("data/service/spool")
    # Seconds between two checks of the service database (rakuten_db_up, /ready's
    # "database"); the Retry-After of the 503s that need it.
    db_probe_s: float = Field(default=2.0, gt=0.0)
    db_retry_after_s: int = Field(default=5, ge=1)
    log_file: Path | None = Path("logs/service.log")
    log_title_chars: int = Field(default=80, ge=0)
    image_store_dir: Path | None = None
    service_url: str = "http://127.0.0.1:8000"
    service_api_key: SecretStr | None = None

    # Monitoring
    # A drift check needs at least this many predictions in its window.
    drift_min_rows: int = Field(default=50, ge=1)
    # Dataset drift when at least this share of the descriptor columns drift.
    drift_share: float = Field(default=0.3, gt=0.0, le=1.0)
    # Held-out split the model predicts once to give the reference its predictions.
    drift_heldout_split: str = "test"
    # Rolling window of the online quality (`monitor quality`, Prometheus gauges).
    quality_window_days: float = Field(default=7.0, gt=0.0)
    # The service re-reads the drift and quality gauges from its database at most this often.
    monitoring_cache_s: float = Field(default=30.0, ge=0.0)

    # Security
    # HS256 signing key of access tokens (at least 32 characters outside dev).
    jwt_secret: SecretStr | None = None
    jwt_issuer: str = "rakuten-mlops"
    jwt_audience: str = "rakuten-mlops-api"
    # Access token life: a reviewer's working stretch. The console renews its session token
    # while it is used, so a session ends after this long idle, not this long after sign-in.
    access_token_expire_minutes: int = Field(default=30, ge=1, le=8 * 60)
    # Seconds the service keeps who a token or API key is (changes made through the service
    # apply at once; ones made with the `users` CLI or on another replica within this; 0: off).
    auth_cache_s: float = Field(default=2.0, ge=0.0, le=60.0)
    # While the service database is unreachable, callers seen within this many seconds are
    # let in as they were then (tokens checked by signature and claims); others get 503.
    auth_stale_s: float = Field(default=300.0, ge=0.0)
    # First admin, created at start-up when no enabled admin exists.
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    # "N/second|minute|hour|day" per user or API key (token: per client IP); "off" disables.
    rate_limit_predict: str = "10/minute"
    rate_limit_token: str = "5/minute"
    rate_limit_api: str = "120/minute"
    # Shared rate-limit counters for every worker and replica (empty: in-memory, per process).
    redis_url: str = ""
    # While Redis is down: false counts in each process's memory (limits stay, per replica);
    # true lets every request through.
    rate_limit_fail_open: bool = False
    # Sign-in throttling per user name (POST /token and the console): after this many
    # failures each attempt waits a lock of login_lock_s, doubled at every further failure up
    # to login_lock_max_s; failures are forgotten login_forget_s after the last one and a
    # success resets them.
    login_max_failures: int = Field(default=5, ge=1)
    login_lock_s: float = Field(default=1.0, gt=0.0)
    login_lock_max_s: float = Field(default=300.0, gt=0.0)
    login_forget_s: float = Field(default=900.0, gt=0.0)
    # /docs and /openapi.json: None = on, except in RAKUTEN_ENV=prod.
    api_docs: bool | None = None
    # Allowed browser origins, comma-separated (empty: CORS off).
    cors_origins: str = ""
    # GET /metrics needs `Authorization: Bearer <token>` when set.
    metrics_token: SecretStr | None = None
    # Serve /metrics on this separate port instead of the API port (0: same port).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    max_body_bytes: int = Field(default=16 * 1024**2, ge=1024)
    max_image_pixels: int = Field(default=25_000_000, ge=1)

    # Review console
    # Send the console's session cookie over HTTPS only (None: only in RAKUTEN_ENV=prod).
    console_cookie_secure: bool | None = None
    console_cookie_samesite: Literal["lax", "strict"] = "strict"
    # Items per page of the review queue and the corrections history.
    console_page_size: int = Field(default=20, ge=1, le=200)
    # Reviews the team can do in a day: the queue shows done / budget (0: no budget).
    review_budget_per_day: int = Field(default=200, ge=0, le=1_000_000)
    # Share of the reviewed predictions drawn for a blind second review by another
    # reviewer (their agreement, Cohen's kappa, is on the console's Agreement page).
    review_second_share: float = Field(default=0.1, ge=0.0, le=1.0)

    @field_validator("console_cookie_secure", "api_docs", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        """An empty variable means "the default of this environment"."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("jwt_secret", "admin_password", "metrics_token", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        """An empty secret variable means "not set"."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "log_file", "image_store_dir", "service_api_key", "review_threshold", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """`RAKUTEN_LOG_FILE=` (empty) means "none", not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value

    # Deployment
    # Spark master of `score --engine spark` ("" = the one spark-submit configured).
    spark_master: str = "local[2]"
    # Partitions scored by Spark (0 = the cluster's default parallelism).
    spark_partitions: int = Field(default=0, ge=0)
    # torch threads per Spark Python worker (match spark.task.cpus).
    spark_task_threads: int = Field(default=1, ge=0)
    # Proxies (comma-separated IPs or networks, "*" = any) whose X-Forwarded-For/-Proto
    # `serve` trusts: the client IP seen by the per-IP /token limit behind nginx/ingress.
    forwarded_allow_ips: str = "127.0.0.1,::1"

    def cookie_secure(self) -> bool:
        """Whether the console cookie is sent over HTTPS only (default: in prod)."""
        if self.console_cookie_secure is None:
            return self.env == "prod"
        return self.console_cookie_secure

    def docs_enabled(self) -> bool:
        """Whether /docs and /openapi.json are served (default: outside prod)."""
        return self.env != "prod" if self.api_docs is None else self.api_docs

    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force (`MLFLOW_TRACKING_URI` first)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow_tracking_uri


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process (call it, never read env at import time)."""
    return Settings()
