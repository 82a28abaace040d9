"""A model in a process of its own (`RAKUTEN_MODEL_PROCESS`, on by default).

The service's event loop parses requests, checks credentials, records and logs; the model
tokenises, vectorises and runs its networks. Both are mostly Python, and one interpreter runs
one thread at a time: in one process they take turns on one core. With the model in its own
process they run side by side on two cores, and a micro-batch costs one round trip of plain
lists (titles, descriptions, image bytes there; codes and probabilities back).

Each loaded model has its process: a reload starts the new model's process while the old one
keeps answering, the swap is the same attribute assignment as in process, and the old
process is stopped a grace period later (requests that took the old model finish on it). A
model process that dies (killed, out of memory) is started again and the call retried once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from rakuten_mlops.errors import ModelError
from rakuten_mlops.inference.model_io import (
    ItemPrediction,
    ItemsFn,
    build_model_input,
    load_items_predictor,
)

logger = logging.getLogger(__name__)

Request = tuple[list[str], list[str], list[bytes | None] | None]


def _serve(conn: Connection, load_uri: str, tracking_uri: str | None, num_threads: int) -> None:
    """The model process: load the model, say so, then answer micro-batches until told to
    stop (None) or until the service is gone (the pipe closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the service's; it stops us
    try:
        predict_items = _load(load_uri, tracking_uri, num_threads)
    except Exception as exc:  # sent to the service, which keeps its models
        conn.send(("error", _describe(exc)))
        return
    gc.collect()
    gc.freeze()  # the loaded model stays: full collections skip it (no pause per batch)
    conn.send(("ready", None))
    while True:
        try:
            request: Request | None = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            frame, notes = build_model_input(request[0], request[1], image_bytes=request[2])
            reply: tuple[str, Any] = ("ok", predict_items(frame, notes))
        except Exception as exc:
            reply = ("error", _describe(exc))
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


def _load(load_uri: str, tracking_uri: str | None, num_threads: int) -> ItemsFn:
    """In the model process: the threads, the registry, then the loaded model's reader.

    Raises:
        ModelError: the model cannot be loaded or does not predict.
    """
    if num_threads > 0:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(num_threads)
        threadpool_limits(num_threads)
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    return load_items_predictor(load_uri)


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"


class ModelProcess:
    """One loaded model in a child process (started, loaded and warmed up on creation).

    Calls go through one pipe, one at a time (the process predicts one batch at a time).
    """

    def __init__(
        self,
        load_uri: str,
        *,
        tracking_uri: str | None = None,
        num_threads: int = 0,
        load_timeout_s: float = 600.0,
    ) -> None:
        self.load_uri = load_uri
        self._tracking_uri = tracking_uri
        self._num_threads = num_threads
        self._load_timeout_s = load_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._process, self._conn = self._start()

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        """A new process with the model loaded.

        Raises:
            ModelError: the process cannot start or the model cannot be loaded.
        """
        context = multiprocessing.get_context("spawn")
        conn, child_conn = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(child_conn, self.load_uri, self._tracking_uri, self._num_threads),
            name="rakuten-model",
            daemon=True,
        )
        process.start()
        child_conn.close()
        try:
            if conn.poll(self._load_timeout_s):
                state, detail = conn.recv()
            else:
                state = "error"
                detail = f"the model process did not load it in {self._load_timeout_s:.0f} s"
        except (EOFError, OSError):
            state, detail = "error", "the model process exited while loading it"
        if state != "ready":
            _stop(process, conn)
            raise ModelError(f"cannot load the model {self.load_uri}: {detail}")
        return process, conn

    def predict(
        self,
        designations: Sequence[str],
        descriptions: Sequence[str],
        images: Sequence[bytes | None] | None,
    ) -> list[ItemPrediction]:
        """The predictions of one micro-batch (blocks the calling thread, not the process).

        Raises:
            ModelError: the model failed, or its process died twice in a row.
        """
        request: Request = (
            list(designations),
            list(descriptions),
            list(images) if images is not None else None,
        )
        with self._lock:
            if self._closed:
                raise ModelError("the model process is stopped (the model was replaced)")
            try:
                state, result = self._call(request)
            except (EOFError, OSError):
                logger.error(
                    "the model process died; starting it again", extra={"model": self.load_uri}
                )
                _stop(self._process, self._conn)
                self._process, self._conn = self._start()
                state, result = self._call(request)
        if state != "ok":
            raise ModelError(f"the model failed: {result}")
        predictions: list[ItemPrediction] = result
        return predictions

    def _call(self, request: Request) -> tuple[str, Any]:
        self._conn.send(request)
        reply: tuple[str, Any] = self._conn.recv()
        return reply

    @property
    def pid(self) -> int | None:
        """The model process's PID."""
        return self._process.pid

    def close(self) -> None:
        """Stop the process once the call in progress is done (waits a few seconds at most)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _stop(self._process, self._conn)


def _stop(process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
    """Ask the model process to exit, then make sure it did."""
    with contextlib.suppress(EOFError, OSError):
        conn.send(None)
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)
    conn.close()
