"""The production topology as local processes on 127.0.0.1, without Docker.

    python deploy/local/stack.py up [--register-model DIR] [--run-dir .stack]
    python deploy/local/stack.py status | down [--keep-data]

`up` starts: PostgreSQL 15 (the installed cluster: `pg_ctlcluster 15 main start` when it is
not running; a role and two databases of this stack: service DB + MLflow backend store),
redis-server, an S3-compatible store (moto's server, standing in for MinIO), the MLflow
tracking server (PostgreSQL backend, artifacts proxied to the S3 bucket), two API
processes (`rakuten-mlops serve`) behind nginx, and Prometheus scraping both replicas. Every
process is started in its own session; its PID, command and port go to `<run-dir>/stack.json`.

The replicas run as in production: `RAKUTEN_ENV=prod`, a JWT secret, the first admin's
password and a metrics token generated for the stack (in `stack.json`, mode 0600; printed by
`up`), rate limits shared through the stack's Redis, `/metrics` behind the token (Prometheus
sends it), and the X-Forwarded-For of nginx trusted (the per-IP `/token` limit sees clients).
`down` stops exactly those process groups (SIGTERM, then SIGKILL), drops this stack's
databases and role (unless `--keep-data`) and removes the run directory; it leaves the
system PostgreSQL cluster running (other programs may use it).

`--register-model DIR` logs a local pyfunc model directory (e.g. `models/classifier`) into
the stack's MLflow as a new version of RAKUTEN_MODEL_NAME with alias `champion` before the
API replicas start, so they serve it. Ports are free ports chosen at start (printed, and in
`stack.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STATE_FILE = "stack.json"
HOST = "127.0.0.1"
PG_VERSION = "15"
PG_CLUSTER = "main"
MODEL_NAME_DEFAULT = "rakuten-product-classifier"
BUCKET = "mlflow-artifacts"
# moto accepts any credentials; real ones would come from the environment.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "stack",
    "AWS_SECRET_ACCESS_KEY": "stack",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ALERT_RULES = REPO / "monitoring" / "prometheus" / "alerts.yml"


class StackError(RuntimeError):
    """A component did not start, or the stack is in an unexpected state."""


@dataclass
class Process:
    """A process of the stack (the leader of its own process group)."""

    name: str
    pid: int
    command: list[str]
    port: int | None = None
    log: str = ""
    started: int = 0


@dataclass
class Stack:
    """What `up` started: everything `down` needs to undo it."""

    run_dir: str
    suffix: str
    pg_port: int
    pg_role: str
    pg_password: str
    pg_databases: list[str]
    processes: list[Process] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    # The API's first admin and metrics token (RAKUTEN_ADMIN_*, RAKUTEN_METRICS_TOKEN).
    admin_username: str = ""
    admin_password: str = ""
    metrics_token: str = ""

    def save(self) -> None:
        """Write the state file (after every started process, so `down` can always clean)."""
        path = Path(self.run_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)  # passwords and tokens of the stack
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir: Path) -> Stack:
        """Read the state file of a running stack."""
        data = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
        data["processes"] = [Process(**p) for p in data["processes"]]
        return cls(**data)

    def process(self, name: str) -> Process:
        """The process called `name`."""
        for process in self.processes:
            if process.name == name:
                return process
        raise StackError(f"no process {name} in the stack")

    @property
    def service_db_url(self) -> str:
        """SQLAlchemy URL of the service database (psycopg 3)."""
        return (
            f"postgresql+psycopg://{self.pg_role}:{self.pg_password}@{HOST}:{self.pg_port}/"
            f"{self.pg_databases[0]}"
        )

    @property
    def mlflow_db_url(self) -> str:
        """SQLAlchemy URL of the MLflow backend store (psycopg2, as the MLflow image has)."""
        return (
            f"postgresql+psycopg2://{self.pg_role}:{self.pg_password}@{HOST}:{self.pg_port}/"
            f"{self.pg_databases[1]}"
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None, log: str = ""
) -> None:
    """Wait until `url` answers 2xx (or the process dies, or time runs out).

    Raises:
        StackError: naming the URL, with the end of the process's log when given.
    """
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(
                f"{url}: the process exited with code {process.returncode}{_log_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise StackError(f"{url} not answering after {timeout_s:.0f} s ({last}){_log_tail(log)}")


def _log_tail(log: str, lines: int = 25) -> str:
    if not log or not Path(log).is_file():
        return ""
    tail = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log}:\n" + "\n".join(tail)


def _pg_cluster_port() -> int:
    """Port of the installed PostgreSQL cluster (15/main, else the first one), started if down."""
    out = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout
    clusters = [line.split() for line in out.splitlines() if line.strip()]
    if not clusters:
        raise StackError("no PostgreSQL cluster (pg_lsclusters): apt-get install postgresql")
    preferred = [c for c in clusters if (c[0], c[1]) == (PG_VERSION, PG_CLUSTER)]
    version, cluster, port, status, *_ = (preferred or clusters)[0]
    if status != "online":
        subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=True)
    return int(port)


def as_postgres() -> list[str]:
    """Command prefix that runs a program as the `postgres` system user (peer auth)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return ["sudo", "-n", "-u", "postgres", "--"]


def _psql(sql: str, port: int) -> str:
    command = [*as_postgres(), "psql", "-v", "ON_ERROR_STOP=1", "-qtA", "-p", str(port)]
    result = subprocess.run(
        [*command, "-d", "postgres", "-c", sql],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    if result.returncode != 0:
        raise StackError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


def stack_database_objects(stack: Stack) -> list[str]:
    """Databases and roles of this stack still present in the cluster."""
    pattern = f"rakuten_stack_{stack.suffix}%"
    out = _psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{pattern}' "
        f"UNION ALL SELECT rolname FROM pg_roles WHERE rolname LIKE '{pattern}'",
        stack.pg_port,
    )
    return out.split()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without inherited RAKUTEN_* / MLFLOW_* settings, plus `extra`.

    The stack's processes get exactly the settings the stack gives them, whatever the
    calling shell (or test session) exported.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    return {**base, **(extra or {})}


def _start(
    stack: Stack,
    name: str,
    command: list[str],
    *,
    port: int | None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    log = Path(stack.run_dir) / "logs" / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(env),
            cwd=stack.run_dir,
            start_new_session=True,
        )
    stack.processes.append(
        Process(name, popen.pid, command, port, str(log), _start_ticks(popen.pid))
    )
    stack.save()
    return popen


def _nginx_conf(stack: Stack, port: int, upstreams: list[int]) -> Path:
    run = Path(stack.run_dir)
    for sub in ("client_body", "proxy"):
        (run / "nginx" / sub).mkdir(parents=True, exist_ok=True)
        (run / "nginx" / sub).chmod(0o777)  # the worker processes may run as nobody
    servers = "\n".join(f"    server {HOST}:{p} max_fails=1 fail_timeout=10s;" for p in upstreams)
    conf = run / "nginx" / "nginx.conf"
    conf.write_text(
        f"""# Generated by deploy/local/stack.py (same balancing as deploy/compose/nginx/nginx.conf).
daemon off;
worker_processes 1;
pid {run}/nginx/nginx.pid;
error_log {run}/logs/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log {run}/logs/nginx-access.log;
  client_body_temp_path {run}/nginx/client_body;
  proxy_temp_path {run}/nginx/proxy;
  fastcgi_temp_path {run}/nginx/proxy;
  uwsgi_temp_path {run}/nginx/proxy;
  scgi_temp_path {run}/nginx/proxy;
  client_max_body_size 20m;
  upstream rakuten_api {{
{servers}
    keepalive 16;
  }}
  server {{
    listen {HOST}:{port};
    location = /nginx-health {{ return 200 "ok\\n"; }}
    location / {{
      proxy_pass http://rakuten_api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 2;
    }}
  }}
}}
""",
        encoding="utf-8",
    )
    return conf


def _prometheus_conf(stack: Stack, targets: list[int]) -> Path:
    run = Path(stack.run_dir)
    rules = f"rule_files:\n  - {ALERT_RULES}\n" if ALERT_RULES.is_file() else ""
    conf = run / "prometheus.yml"
    listed = ", ".join(f'"{HOST}:{p}"' for p in targets)
    auth = ""
    if stack.metrics_token:  # GET /metrics needs `Authorization: Bearer <token>`
        token_file = run / "metrics-token"
        token_file.touch(mode=0o600)
        token_file.write_text(stack.metrics_token, encoding="utf-8")
        auth = f"    authorization:\n      type: Bearer\n      credentials_file: {token_file}\n"
    conf.write_text(
        f"""# Generated by deploy/local/stack.py: both API replicas, the monitoring alert rules.
global:
  scrape_interval: 2s
  evaluation_interval: 15s
{rules}scrape_configs:
  - job_name: rakuten-service
    metrics_path: /metrics
{auth}    static_configs:
      - targets: [{listed}]
        labels:
          service: rakuten-classifier
""",
        encoding="utf-8",
    )
    return conf


def register_model(stack: Stack, model_dir: Path, model_name: str) -> str:
    """Log a local pyfunc model directory into the stack's MLflow as the new champion."""
    env = {**S3_ENV, "MLFLOW_TRACKING_URI": stack.urls["mlflow"]}
    code = (
        "import sys, mlflow\n"
        "from mlflow import MlflowClient\n"
        "mlflow.set_experiment('rakuten-stack')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_artifacts(sys.argv[1], artifact_path='model')\n"
        "version = mlflow.register_model(f'runs:/{run.info.run_id}/model', sys.argv[2])\n"
        "from rakuten_mlops.registry.integrity import record_artifacts_digest\n"
        "record_artifacts_digest(MlflowClient(), sys.argv[2], version.version)\n"
        "MlflowClient().set_registered_model_alias(sys.argv[2], 'champion', version.version)\n"
        "print(version.version)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_dir.resolve()), model_name],
        capture_output=True,
        text=True,
        env=clean_env(env),
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"registering {model_dir} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def up(
    run_dir: Path,
    *,
    register: Path | None = None,
    model_name: str = MODEL_NAME_DEFAULT,
    replicas: int = 2,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
) -> Stack:
    """Start the whole stack; on any failure, stop what was started and raise."""
    run_dir = run_dir.resolve()
    if (run_dir / STATE_FILE).exists():
        raise StackError(f"a stack is already running from {run_dir} (stack.py down first)")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    suffix = secrets.token_hex(4)
    stack = Stack(
        run_dir=str(run_dir),
        suffix=suffix,
        pg_port=_pg_cluster_port(),
        pg_role=f"rakuten_stack_{suffix}",
        pg_password=secrets.token_urlsafe(16),
        pg_databases=[f"rakuten_stack_{suffix}_service", f"rakuten_stack_{suffix}_mlflow"],
    )
    stack.save()
    try:
        _start_all(stack, register, model_name, replicas, extra_env or {}, timeout_s)
    except BaseException:
        down(run_dir)
        raise
    return stack


def _start_all(
    stack: Stack,
    register: Path | None,
    model_name: str,
    replicas: int,
    extra_env: dict[str, str],
    timeout_s: float,
) -> None:
    _psql(f"CREATE ROLE {stack.pg_role} LOGIN PASSWORD '{stack.pg_password}'", stack.pg_port)
    for database in stack.pg_databases:
        _psql(f"CREATE DATABASE {database} OWNER {stack.pg_role}", stack.pg_port)

    redis_port = free_port()
    redis = _start(
        stack,
        "redis",
        [
            "redis-server",
            "--bind",
            HOST,
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        port=redis_port,
    )
    s3_port = free_port()
    s3 = _start(
        stack, "s3", [str(BIN / "moto_server"), "-H", HOST, "-p", str(s3_port)], port=s3_port
    )
    stack.urls["s3"] = f"http://{HOST}:{s3_port}"
    wait_http(f"{stack.urls['s3']}/moto-api/", 60, s3)
    import boto3  # the `deploy` extra

    boto3.client("s3", endpoint_url=stack.urls["s3"], **_boto_credentials()).create_bucket(
        Bucket=BUCKET
    )

    mlflow_port = free_port()
    mlflow = _start(
        stack,
        "mlflow",
        [
            str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(mlflow_port),
            "--workers", "1", "--backend-store-uri", stack.mlflow_db_url,
            "--artifacts-destination", f"s3://{BUCKET}", "--serve-artifacts",
        ],
        port=mlflow_port,
        env={**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": stack.urls["s3"]},
    )  # fmt: skip
    stack.urls["mlflow"] = f"http://{HOST}:{mlflow_port}"
    wait_http(f"{stack.urls['mlflow']}/health", timeout_s, mlflow, stack.process("mlflow").log)
    if register is not None:
        register_model(stack, register, model_name)

    api_env = {
        "RAKUTEN_ENV": "prod",
        "RAKUTEN_DATABASE_URL": stack.service_db_url,
        "MLFLOW_TRACKING_URI": stack.urls["mlflow"],
        "RAKUTEN_MODEL_NAME": model_name,
        "RAKUTEN_SERVE_MODEL": f"models:/{model_name}@champion",
        # Rate-limit counters shared by the replicas.
        "RAKUTEN_REDIS_URL": f"redis://{HOST}:{redis_port}/0",
        "RAKUTEN_JWT_SECRET": secrets.token_urlsafe(48),
        "RAKUTEN_ADMIN_USERNAME": "admin",
        "RAKUTEN_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "RAKUTEN_METRICS_TOKEN": secrets.token_urlsafe(24),
        # nginx, on this host: its X-Forwarded-For is the client IP.
        "RAKUTEN_FORWARDED_ALLOW_IPS": HOST,
        "RAKUTEN_LOG_FILE": "",
        "RAKUTEN_IMAGE_STORE_DIR": "",
        **extra_env,
    }
    stack.admin_username = api_env["RAKUTEN_ADMIN_USERNAME"]
    stack.admin_password = api_env["RAKUTEN_ADMIN_PASSWORD"]
    stack.metrics_token = api_env["RAKUTEN_METRICS_TOKEN"]
    stack.save()
    # Migrate once before the replicas start, so that they never race on an empty database.
    migrate = subprocess.run(
        [str(BIN / "rakuten-mlops"), "db", "upgrade"],
        env=clean_env(api_env),
        cwd=stack.run_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        raise StackError(f"rakuten-mlops db upgrade failed: {migrate.stderr.strip()[-2000:]}")
    apis = []
    api_ports = []
    for i in range(1, replicas + 1):
        port = free_port()
        api_ports.append(port)
        apis.append(
            _start(
                stack,
                f"api-{i}",
                [str(BIN / "rakuten-mlops"), "serve", "--host", HOST, "--port", str(port)],
                port=port,
                env=api_env,
            )
        )
        stack.urls[f"api-{i}"] = f"http://{HOST}:{port}"

    lb_port = free_port()
    conf = _nginx_conf(stack, lb_port, api_ports)
    nginx = _start(
        stack,
        "nginx",
        ["nginx", "-c", str(conf), "-p", str(Path(stack.run_dir) / "nginx")],
        port=lb_port,
    )
    stack.urls["api"] = f"http://{HOST}:{lb_port}"
    prom_port = free_port()
    prometheus = _start(
        stack,
        "prometheus",
        [
            "prometheus", f"--config.file={_prometheus_conf(stack, api_ports)}",
            f"--storage.tsdb.path={Path(stack.run_dir) / 'prometheus-data'}",
            f"--web.listen-address={HOST}:{prom_port}",
        ],
        port=prom_port,
    )  # fmt: skip
    stack.urls["prometheus"] = f"http://{HOST}:{prom_port}"
    stack.save()
    for name, process in (("redis", redis), ("nginx", nginx), ("prometheus", prometheus)):
        if name == "redis":
            _wait_redis(redis_port, process)
        elif name == "nginx":
            wait_http(f"{stack.urls['api']}/nginx-health", 30, process)
        else:
            wait_http(f"{stack.urls['prometheus']}/-/ready", 60, process)
    for i, api in enumerate(apis, start=1):
        log = stack.process(f"api-{i}").log
        wait_http(f"{stack.urls[f'api-{i}']}/ready", timeout_s, api, log)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def _wait_redis(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"redis-server exited with code {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise StackError("redis-server not answering")


def _alive(process: Process) -> bool:
    """The recorded PID still runs the process this stack started (not a reused PID)."""
    return process.started != 0 and _start_ticks(process.pid) == process.started


def _start_ticks(pid: int) -> int:
    """Start time of a process (clock ticks since boot), 0 when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return 0 if fields[0] == "Z" else int(fields[19])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(
    process: Process, sig: signal.Signals = signal.SIGTERM, grace_s: float = 10
) -> None:
    """Stop the process group this stack started for `process` (its PID is the group id)."""
    if not _alive(process) and not _group_alive(process.pid):
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(process.pid):
        _reap(process.pid)
        time.sleep(0.1)
    if _group_alive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _group_alive(process.pid):
            _reap(process.pid)
            time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status when this process started it (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(run_dir: Path, *, keep_data: bool = False) -> list[str]:
    """Stop every process of the stack, drop its databases, remove the run directory.

    Returns the names of the processes that were stopped.
    """
    run_dir = run_dir.resolve()
    if not (run_dir / STATE_FILE).exists():
        return []
    stack = Stack.load(run_dir)
    stopped = []
    # The load balancer and the replicas first, the stores last.
    for process in reversed(stack.processes):
        stop_process(process)
        stopped.append(process.name)
    if not keep_data:
        for database in stack.pg_databases:
            _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", stack.pg_port)
        _psql(f"DROP ROLE IF EXISTS {stack.pg_role}", stack.pg_port)
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        (run_dir / STATE_FILE).unlink()
    return stopped


def status(run_dir: Path) -> dict[str, Any]:
    """Which processes of the stack are alive, and the URLs."""
    stack = Stack.load(run_dir.resolve())
    return {
        "processes": {
            p.name: {"pid": p.pid, "alive": _alive(p), "port": p.port} for p in stack.processes
        },
        "urls": stack.urls,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: up | down | status."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=REPO / ".stack", help="state, logs, data")
    parser.add_argument("--register-model", type=Path, help="pyfunc model dir to serve as champion")
    parser.add_argument(
        "--model-name", default=os.environ.get("RAKUTEN_MODEL_NAME", MODEL_NAME_DEFAULT)
    )
    parser.add_argument("--keep-data", action="store_true", help="down: keep the databases")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            stack = up(args.run_dir, register=args.register_model, model_name=args.model_name)
            print(json.dumps(stack.urls, indent=2))
            print(
                f"admin: {stack.admin_username} / {stack.admin_password}  (POST /token); "
                f"metrics token: {stack.metrics_token}  (also in {args.run_dir / STATE_FILE})"
            )
            print(f"stack up; stop it with: python {Path(__file__).relative_to(REPO)} down")
        elif args.action == "down":
            stopped = down(args.run_dir, keep_data=args.keep_data)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            print(json.dumps(status(args.run_dir), indent=2))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
