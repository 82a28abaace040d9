"""Anonymous uploads against authenticated predictions: does an anonymous flood slow them?

A real `rakuten-mlops serve` process (one worker, its model process) answers authenticated
`POST /v1/predict` calls (one client, one after the other: the latency a user sees) for
`--seconds`, first alone (the reference), then while `--flooders` anonymous clients each
post 16 MB multipart bodies (`RAKUTEN_MAX_BODY_BYTES`) without a credential, over and over.
The service authenticates from the headers before reading a body (`serving/auth/preauth.py`),
so the flood costs an answer per connection, not 16 MB of parsing. Target: flooded p50 and
p95 at most 2x the reference.

    python bench/bench_preauth.py [--model DIR] [--seconds 20] [--flooders 50]

Without `--model`, a tiny model is trained in a few seconds (the route, not the model, is
measured here).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("rakuten-mlops")
SECRET = "bench-preauth-" + "k9Vw2pLx7" * 5
PASSWORD = "bench preauth password"
BODY_BYTES = 16 * 1024**2


def _tiny_model(workdir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from service_testing import train_tiny_model

    return train_tiny_model(workdir, seeds=(1, 2, 3), model_seed=4).path


def _start(model: Path, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAKUTEN_ENV": "test",
        "RAKUTEN_DATABASE_URL": f"sqlite:///{workdir}/service.db",
        "RAKUTEN_SERVE_MODEL": str(model),
        "RAKUTEN_JWT_SECRET": SECRET,
        "RAKUTEN_ADMIN_PASSWORD": PASSWORD,
        "RAKUTEN_LOG_FILE": "",
        "RAKUTEN_LOG_LEVEL": "WARNING",
        "RAKUTEN_RATE_LIMIT_PREDICT": "off",
        "RAKUTEN_RATE_LIMIT_API": "off",
        "RAKUTEN_RATE_LIMIT_TOKEN": "off",
    }
    log = (workdir / "serve.log").open("wb")
    return subprocess.Popen(
        [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 180
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit("the service exited; see serve.log")
            try:
                if http.get("/ready").status_code == 200:
                    answer = http.post("/token", data={"username": "admin", "password": PASSWORD})
                    return str(answer.json()["access_token"])
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise SystemExit("the service did not get ready")


async def _flooder(port: int, stop: asyncio.Event, counts: list[int]) -> None:
    """Anonymous 16 MB multipart posts, one connection after the other, until `stop`."""
    boundary = "benchboundary"
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {BODY_BYTES}\r\n\r\n"
    ).encode()
    chunk = b"A" * 65536
    while not stop.is_set():
        answered: asyncio.Future[bytes] | None = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            sent = 0
            answered = asyncio.ensure_future(reader.read(1024))
            while sent < BODY_BYTES and not answered.done() and not stop.is_set():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            await asyncio.wait_for(answered, timeout=30)
            counts.append(sent)
            writer.close()
        except (TimeoutError, OSError):
            # The service answered and closed while the body was still being sent (an
            # early 401 does that): a refused post too.
            counts.append(-1)
            await asyncio.sleep(0.01)
        finally:
            if answered is not None and not answered.done():
                answered.cancel()
            elif answered is not None and not answered.cancelled():
                answered.exception()  # retrieved: a reset is expected here, not a warning


async def _flood(port: int, flooders: int, seconds: float) -> list[int]:
    stop = asyncio.Event()
    counts: list[int] = []
    tasks = [asyncio.create_task(_flooder(port, stop, counts)) for _ in range(flooders)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def _flood_process(port: int, flooders: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(_flood(port, flooders, seconds)))


async def _predict_for(url: str, token: str, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            tick = time.perf_counter()
            response = await http.post(
                "/v1/predict", data={"designation": f"Piscine tubulaire {i}"}, headers=headers
            )
            latencies.append((time.perf_counter() - tick) * 1000)
            errors += response.status_code != 200
            i += 1
    return latencies, errors


def _measure(url: str, token: str, seconds: float, flooders: int, port: int) -> dict[str, float]:
    """Authenticated predictions for `seconds`; the anonymous flood runs in a process of its
    own, so that its client-side work does not delay the measuring client's event loop."""
    counts: list[int] = []
    flood = None
    if flooders:
        queue: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
        flood = multiprocessing.Process(
            target=_flood_process, args=(port, flooders, seconds + 2, queue)
        )
        flood.start()
        time.sleep(1.0)
    latencies, errors = asyncio.run(_predict_for(url, token, seconds))
    if flood is not None:
        counts = queue.get(timeout=120)
        flood.join(60)
    answered = [c for c in counts if c >= 0]
    return {
        "refused_mid_body": len(counts) - len(answered),
        "p50": statistics.median(latencies),
        "p95": statistics.quantiles(latencies, n=20)[-1],
        "requests": len(latencies),
        "errors": errors,
        "anonymous_posts": len(answered),
        "mb_sent_per_post": (statistics.mean(answered) / 1024**2) if answered else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flooders", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-preauth-") as tmp:
        workdir = Path(tmp)
        model = args.model.resolve() if args.model else _tiny_model(workdir)
        sock = __import__("socket").socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        process = _start(model, workdir, port)
        try:
            url = f"http://127.0.0.1:{port}"
            token = _wait_ready(url, process)
            alone = _measure(url, token, args.seconds, 0, port)
            flooded = _measure(url, token, args.seconds, args.flooders, port)
        finally:
            process.terminate()
            process.wait(60)
    print(f"authenticated POST /v1/predict, c=1, {args.seconds:.0f} s each; model: {model.name}")
    print(f"{'':<34}{'p50 ms':>10}{'p95 ms':>10}{'requests':>10}{'errors':>8}")
    for name, row in (
        ("alone (reference)", alone),
        (f"+ {args.flooders} anonymous 16 MB posts", flooded),
    ):
        print(
            f"{name:<34}{row['p50']:>10.1f}{row['p95']:>10.1f}{row['requests']:>10.0f}{row['errors']:>8.0f}"
        )
    print(
        f"ratio flooded / alone: p50 {flooded['p50'] / alone['p50']:.2f}x, "
        f"p95 {flooded['p95'] / alone['p95']:.2f}x (target <= 2x)"
    )
    print(
        f"anonymous posts: {flooded['anonymous_posts']:.0f} answered after the whole body, "
        f"{flooded['refused_mid_body']:.0f} cut off mid-body by an early answer "
        f"({flooded['mb_sent_per_post']:.2f} MB sent per answered post)"
    )


if __name__ == "__main__":
    main()
