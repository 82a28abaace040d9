"""Prediction service vs `mlflow models serve` and BentoML on the same model, real processes.

Starts `rakuten-mlops serve`, the reference `mlflow models serve -m MODEL --env-manager
local` and the Bento of the same model (`bentoml serve`, deploy/bentoml/, adaptive batching),
one worker each, on 127.0.0.1; sends them the same products from the shared sample (text
only, and text + the product's real JPEG) at concurrency 1 and 16, and prints p50 / p95 /
p99 latency, throughput and errors side by side, with the in-process prediction time of the
same model (so the HTTP overhead is a visible ratio), each server's peak RSS, and the share
of products each answers with the reference's code.

The load generator is a small asyncio HTTP/1.1 client over keep-alive connections (cheap
per request: it shares the 2 cores with the servers). Ours receives multipart forms
(`POST /v1/predict`); the reference receives `dataframe_split` JSON with base64 image bytes
(`POST /invocations`); the Bento receives `{"products": [...]}` JSON with base64 image bytes
(`POST /classify`): the formats each documents.

Usage:
    python bench/bench_api.py [--model DIR] [--source ../shared/data/rakuten-sample] [--no-bento]

The Bento runs in .venv-bento (`make bento-venv`); it is built from the model in a
throwaway BentoML home. --no-bento leaves it out.

Without --model, a default model is trained once with the project CLI on the sample
(import -> prepare -> train, default params.yaml) under bench/results/api/ and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = BIN / "rakuten-mlops"
WORKDIR = REPO / "bench" / "results" / "api"


# --------------------------------------------------------------------------- model


def ensure_model(source: Path, workdir: Path) -> Path:
    """The default model trained on the sample with the project CLI (cached in workdir)."""
    model = workdir / "model"
    if (model / "MLmodel").is_file():
        return model
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db",
        "RAKUTEN_MLFLOW_ARTIFACT_ROOT": str(workdir / "mlartifacts"),
    }
    steps = [
        ["data", "import", "--source", str(source), "--dest", str(workdir / "raw")],
        ["data", "prepare", "--raw-dir", str(workdir / "raw"), "--out-dir", str(workdir / "processed")],
        ["train", "--data-dir", str(workdir / "processed"), "--model-out", str(model),
         "--no-register", "--metrics-out", str(workdir / "train.json"), "--no-progress"],
    ]  # fmt: skip
    for step in steps:
        print("$ rakuten-mlops", " ".join(step), flush=True)
        subprocess.run([str(CLI), *step], env=env, check=True, cwd=REPO)
    return model


# --------------------------------------------------------------------------- products


@dataclass(frozen=True)
class Product:
    designation: str
    description: str
    productid: str
    imageid: str
    image: bytes | None


def load_products(source: Path, n: int, with_image: bool, seed: int = 0) -> list[Product]:
    """`n` products of the sample (with their JPEG when `with_image`)."""
    frame = pd.read_csv(source / "X_train_update.csv", index_col=0, keep_default_na=False)
    images = source / "images" / "image_train"
    frame = frame.sample(frac=1.0, random_state=seed)
    out: list[Product] = []
    for row in frame.itertuples():
        path = images / f"image_{row.imageid}_product_{row.productid}.jpg"
        if with_image and not path.is_file():
            continue
        out.append(
            Product(
                designation=str(row.designation),
                description=str(row.description)[:2000],
                productid=str(row.productid),
                imageid=str(row.imageid),
                image=path.read_bytes() if with_image else None,
            )
        )
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} products with images in {images}")
    return out


BENCH_PASSWORD = "bench password " + uuid.uuid4().hex[:8]


def ours_request(product: Product, port: int, credential: str = "") -> bytes:
    """A multipart POST /v1/predict, as bytes (`credential`: an `Authorization` or
    `X-API-Key` header line)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name in ("designation", "description", "productid", "imageid"):
        value = getattr(product, name)
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    if product.image is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + product.image
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        + (f"{credential}\r\n" if credential else "")
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def reference_request(product: Product, port: int) -> bytes:
    """A `dataframe_split` JSON POST /invocations, as bytes."""
    columns = ["designation", "description"]
    row: list[Any] = [product.designation, product.description]
    if product.image is not None:
        columns.append("image_bytes")
        row.append(base64.b64encode(product.image).decode())
    body = json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def bento_request(product: Product, port: int) -> bytes:
    """A `{"products": [...]}` JSON POST /classify of the Bento, as bytes."""
    item: dict[str, str] = {"designation": product.designation}
    if product.description:
        item["description"] = product.description
    if product.image is not None:
        item["image_base64"] = base64.b64encode(product.image).decode()
    body = json.dumps({"products": [item]}).encode()
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --------------------------------------------------------------------------- load


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
    }
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:  # chunked
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return status, body
        body += await reader.readexactly(size)
        await reader.readline()


@dataclass
class RunResult:
    latencies_ms: list[float]
    errors: int
    seconds: float
    codes: list[int | None]


async def _load(port: int, requests: list[bytes], concurrency: int, parse: Any) -> RunResult:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)
    latencies = [0.0] * len(requests)
    codes: list[int | None] = [None] * len(requests)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                try:
                    writer.write(requests[i])
                    status, body = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies[i] = (time.perf_counter() - t0) * 1000
                if status != 200:
                    errors += 1
                else:
                    codes[i] = parse(body)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return RunResult(latencies, errors, time.perf_counter() - t0, codes)


def run_load(port: int, requests: list[bytes], concurrency: int, parse: Any) -> RunResult:
    return asyncio.run(_load(port, requests, concurrency, parse))


def _ours_code(body: bytes) -> int:
    return int(json.loads(body)["prdtypecode"])


def _reference_code(body: bytes) -> int:
    return int(json.loads(body)["predictions"][0]["prdtypecode"])


def _bento_code(body: bytes) -> int:
    return int(json.loads(body)[0]["prdtypecode"])


def build_bento(model: Path, home: Path) -> None:
    """Build the Bento of `model` in the BentoML home `home` (scripts/bento.sh build)."""
    print("building the Bento of the model (scripts/bento.sh build)", flush=True)
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTO_MODEL": str(model)}
    built = subprocess.run(
        ["bash", str(REPO / "scripts/bento.sh"), "build"], env=env, capture_output=True, text=True
    )
    if built.returncode != 0:
        raise SystemExit(f"the Bento did not build:\n{built.stdout[-2000:]}{built.stderr[-2000:]}")


# --------------------------------------------------------------------------- servers


class Server:
    """A server process started here, stopped by PID (its children first)."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], port: int, ready: str, log: Path
    ) -> None:
        self.name, self.port, self.ready_path, self.log = name, port, ready, log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=log.parent
        )

    def wait_ready(self, timeout_s: float = 300) -> float:
        t0 = time.monotonic()
        with httpx.Client(timeout=5) as http:
            while time.monotonic() - t0 < timeout_s:
                if self.process.poll() is not None:
                    raise SystemExit(f"{self.name} exited:\n{self.log.read_text()[-2000:]}")
                try:
                    if (
                        http.get(f"http://127.0.0.1:{self.port}{self.ready_path}").status_code
                        == 200
                    ):
                        return time.monotonic() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise SystemExit(f"{self.name} not ready after {timeout_s}s")

    def peak_rss_mb(self, total: bool = False) -> float:
        """Peak RSS (VmHWM), MB: of the largest process of the server (the one serving
        requests), or with `total` the sum over the server and its children (ours: the
        service and its model process, what one worker needs)."""
        procs = [psutil.Process(self.process.pid)]
        procs += procs[0].children(recursive=True)
        peaks = []
        for proc in procs:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        if not peaks:
            return float("nan")
        return sum(peaks) if total else max(peaks)

    def stop(self) -> None:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        psutil.wait_procs(children, timeout=30)
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._out.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- in process


def in_process(model: Path, text: list[Product], image: list[Product]) -> dict[str, float]:
    """Single-item p50 (text, text + image) and batch throughput of the model in process."""
    from rakuten_mlops.models.pyfunc import load_pyfunc_model

    loaded = load_pyfunc_model(model)

    def frame(products: list[Product]) -> pd.DataFrame:
        data: dict[str, list[Any]] = {
            "designation": [p.designation for p in products],
            "description": [p.description for p in products],
        }
        if products[0].image is not None:
            data["image_bytes"] = [p.image for p in products]
        return pd.DataFrame(data)

    out: dict[str, float] = {}
    for name, products in (("text", text), ("image", image)):
        loaded.predict(frame(products[:2]))
        times = []
        for p in products[:100]:
            t0 = time.perf_counter()
            loaded.predict(frame([p]))
            times.append((time.perf_counter() - t0) * 1000)
        out[f"{name}_single_p50_ms"] = statistics.median(times)
        t0 = time.perf_counter()
        loaded.predict(frame(products))
        out[f"{name}_batch_per_s"] = len(products) / (time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- main


@dataclass
class Row:
    scenario: str
    server: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float
    errors: int
    agree_with_reference: float | None = None


def summarize(scenario: str, server: str, result: RunResult) -> Row:
    lat = np.array([x for x in result.latencies_ms if x > 0])
    return Row(
        scenario=scenario,
        server=server,
        p50_ms=float(np.percentile(lat, 50)),
        p95_ms=float(np.percentile(lat, 95)),
        p99_ms=float(np.percentile(lat, 99)),
        throughput=len(lat) / result.seconds,
        errors=result.errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="MLflow model directory (default: train one)")
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/rakuten-sample")
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--requests-c16", type=int, default=1200)
    parser.add_argument("--threads", type=int, default=0, help="RAKUTEN_NUM_THREADS (0 = default)")
    parser.add_argument(
        "--bento",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also serve the model as a Bento (needs .venv-bento, `make bento-venv`).",
    )
    parser.add_argument(
        "--auth",
        choices=["jwt", "api-key"],
        default="jwt",
        help="How our requests authenticate (a bearer token from POST /token, or an API key); "
        "the rate limiter stays on with a limit the load cannot reach.",
    )
    args = parser.parse_args()

    model = (args.model or ensure_model(args.source, WORKDIR)).resolve()
    n = max(args.requests_c1, args.requests_c16)
    text_products = load_products(args.source, n, with_image=False)
    image_products = load_products(args.source, min(n, 600), with_image=True)
    print(
        f"model: {model}\nproducts: {len(text_products)} text, {len(image_products)} with a JPEG",
        flush=True,
    )

    inproc = in_process(model, text_products[:1000], image_products[:200])

    run_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    if args.threads:
        env["RAKUTEN_NUM_THREADS"] = str(args.threads)
    ours_port, ref_port, bento_port = free_port(), free_port(), free_port()
    ours_env = {
        **env,
        "RAKUTEN_SERVE_MODEL": str(model),
        "RAKUTEN_DATABASE_URL": f"sqlite:///{run_dir}/service.db",
        "RAKUTEN_LOG_FILE": str(run_dir / "service.log"),
        "RAKUTEN_ENV": "prod",
        "RAKUTEN_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "RAKUTEN_ADMIN_USERNAME": "bench",
        "RAKUTEN_ADMIN_PASSWORD": BENCH_PASSWORD,
        "RAKUTEN_RATE_LIMIT_PREDICT": "1000000/minute",
    }
    servers = {
        "ours": Server(
            "ours", [str(CLI), "serve", "--port", str(ours_port), "--workers", "1"],
            ours_env, ours_port, "/ready", run_dir / "ours.log",
        ),
        "mlflow": Server(
            "mlflow", [str(BIN / "mlflow"), "models", "serve", "-m", str(model), "--env-manager",
                       "local", "-h", "127.0.0.1", "-p", str(ref_port), "-w", "1"],
            env, ref_port, "/ping", run_dir / "mlflow.log",
        ),
    }  # fmt: skip
    if args.bento:
        bento_home = run_dir / "bentoml"
        build_bento(model, bento_home)
        bento_env = {**env, "BENTOML_HOME": str(bento_home), "BENTO_PORT": str(bento_port)}
        servers["bento"] = Server(
            "bento", ["bash", str(REPO / "scripts/bento.sh"), "serve"],
            bento_env, bento_port, "/readyz", run_dir / "bento.log",
        )  # fmt: skip
    requesters = {
        "ours": (lambda p, port: ours_request(p, port, credential), _ours_code),
        "mlflow": (reference_request, _reference_code),
        "bento": (bento_request, _bento_code),
    }
    rows: list[Row] = []
    try:
        for server in servers.values():
            print(f"{server.name}: ready in {server.wait_ready():.1f} s", flush=True)
        credential = _credential(ours_port, args.auth)
        scenarios = [
            ("text, c=1", text_products[: args.requests_c1], 1),
            ("text+image, c=1", image_products[: args.requests_c1], 1),
            ("text, c=16", text_products[: args.requests_c16], 16),
            ("text+image, c=16", image_products[: args.requests_c16], 16),
        ]
        for scenario, products, concurrency in scenarios:
            codes: dict[str, list[int | None]] = {}
            scenario_rows: dict[str, Row] = {}
            for name, server in servers.items():
                build, parse = requesters[name]
                requests = [build(p, server.port) for p in products]
                run_load(server.port, requests[:30], concurrency, parse)  # warm-up
                result = run_load(server.port, requests, concurrency, parse)
                codes[name] = result.codes
                scenario_rows[name] = summarize(scenario, name, result)
                print(f"  {scenario:<18} {name:<7} done", flush=True)
            for name, row in scenario_rows.items():
                if name != "mlflow":
                    pairs = zip(codes[name], codes["mlflow"], strict=True)
                    same = [a == b for a, b in pairs if a and b]
                    row.agree_with_reference = sum(same) / len(same) if same else None
            rows.extend(scenario_rows.values())
        # Ours: the service and its model process; the Bento: its server and its worker
        # (both are needed to answer); the reference: its serving worker.
        rss = {name: server.peak_rss_mb(total=name != "mlflow") for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    print_table(rows, inproc, rss)
    out = WORKDIR / f"bench_api_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "model": str(model),
                "rows": [asdict(r) for r in rows],
                "in_process": inproc,
                "peak_rss_mb": rss,
            },
            indent=2,
        )
    )
    print(f"\nwritten: {out}")


def _credential(port: int, auth: str) -> str:
    """The header line our requests authenticate with: a bearer token or an API key."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        login = http.post("/token", data={"username": "bench", "password": BENCH_PASSWORD})
        login.raise_for_status()
        token = login.json()["access_token"]
        if auth == "jwt":
            return f"Authorization: Bearer {token}"
        created = http.post(
            "/v1/admin/api-keys",
            json={"username": "bench", "name": "bench"},
            headers={"Authorization": f"Bearer {token}"},
        )
        created.raise_for_status()
        return f"X-API-Key: {created.json()['key']}"


def print_table(rows: list[Row], inproc: dict[str, float], rss: dict[str, float]) -> None:
    print(
        "\n| scenario | server | p50 ms | p95 ms | p99 ms | req/s | errors | same code as reference |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        agree = f"{r.agree_with_reference:.1%}" if r.agree_with_reference is not None else ""
        print(
            f"| {r.scenario} | {r.server} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.throughput:.0f} | {r.errors} | {agree} |"
        )
    print("\n| ratio ours / other | other | p50 | p99 | throughput |")
    print("| --- | --- | ---: | ---: | ---: |")
    ours_rows = {r.scenario: r for r in rows if r.server == "ours"}
    for other in (r for r in rows if r.server != "ours"):
        ours = ours_rows[other.scenario]
        print(
            f"| {other.scenario} | {other.server} | {ours.p50_ms / other.p50_ms:.2f}x | "
            f"{ours.p99_ms / other.p99_ms:.2f}x | {ours.throughput / other.throughput:.2f}x |"
        )
    print(
        f"\nin process (same model): one product {inproc['text_single_p50_ms']:.1f} ms text, "
        f"{inproc['image_single_p50_ms']:.1f} ms with image (p50); batch "
        f"{inproc['text_batch_per_s']:.0f} products/s text, {inproc['image_batch_per_s']:.0f}/s with image"
    )
    print(
        f"peak RSS: ours {rss['ours']:.0f} MB (service + model process), "
        f"reference {rss['mlflow']:.0f} MB"
        + (f", Bento {rss['bento']:.0f} MB (server + worker)" if "bento" in rss else "")
    )


if __name__ == "__main__":
    main()
