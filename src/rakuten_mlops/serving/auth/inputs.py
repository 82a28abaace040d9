"""Input limits: request body size, images (verified with Pillow) and text fields.

Each check answers a short message that names what is wrong (the routes put it in a 4xx
naming the field); nothing here echoes the input back.
"""

from __future__ import annotations

import io
import threading
import unicodedata
import warnings

from PIL import Image
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rakuten_mlops.serving.errors import error_body, send_json

# What the model reads; the declared content type (when one is declared) must agree.
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_NEUTRAL_CONTENT_TYPES = {"", "application/octet-stream"}
# Image checks run in worker threads (never on the event loop); at most this many decode at
# once, so that many parallel uploads cannot hold many 25-megapixel bitmaps in memory.
_DECODING = threading.BoundedSemaphore(2)
# Control characters refused in text (tab, newline and carriage return are fine).
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}


def image_problem(data: bytes, max_pixels: int, content_type: str | None = None) -> str | None:
    """Why `data` is not an acceptable product image, None when it is.

    Refuses: a declared content type that is not an image we read (or disagrees with the
    bytes), anything Pillow cannot identify, formats other than JPEG/PNG/WebP, more than
    `max_pixels` pixels (decompression bombs are refused from the header, before decoding),
    and truncated or corrupt files (JPEG decoded at 1/8 scale, PNG checksums verified).
    Pillow is only allowed to open the accepted formats (no other decoder sees the bytes).
    It decodes, so call it from a worker thread (`run_in_threadpool`), not the event loop.
    """
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in _NEUTRAL_CONTENT_TYPES and declared not in IMAGE_FORMATS.values():
        return f"content type {declared!r} is not an image (JPEG, PNG or WebP)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _DECODING, Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as image:
                image_format = image.format or ""
                width, height = image.size
                if image_format not in IMAGE_FORMATS:
                    return (
                        f"{image_format or 'unknown'} images are not accepted (JPEG, PNG or WebP)"
                    )
                if (
                    declared not in _NEUTRAL_CONTENT_TYPES
                    and declared != IMAGE_FORMATS[image_format]
                ):
                    return f"declared {declared} but the file is {IMAGE_FORMATS[image_format]}"
                if width * height > max_pixels:
                    return (
                        f"{width}x{height} pixels, at most {max_pixels} (RAKUTEN_MAX_IMAGE_PIXELS)"
                    )
                if image_format == "PNG":
                    image.verify()
                else:
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return f"too many pixels, at most {max_pixels} (RAKUTEN_MAX_IMAGE_PIXELS)"
    except Image.UnidentifiedImageError:
        return "not an image file (JPEG, PNG or WebP)"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow says "image file is truncated", "broken data stream", bad CRC...
        reason = str(exc).split("(")[0].strip() or type(exc).__name__
        return f"corrupt or truncated image: {reason}"
    return None


def text_problem(value: str) -> str | None:
    """Why a text field is unacceptable: NUL or another C0 control character (tab, newline
    and carriage return are fine), or DEL. None when it is fine.

    C1 characters (U+0080-U+009F) are accepted: real listings carry them (cp1252 quotes
    decoded as Latin-1, such as U+0092 for an apostrophe).
    """
    if any((c < "\x20" and c not in _ALLOWED_CONTROLS) or c == "\x7f" for c in value):
        return "control characters (such as NUL) are not allowed"
    return None


def is_blank(value: str) -> bool:
    """Nothing but whitespace and invisible format characters (zero-width, RTL marks...)."""
    return all(c.isspace() or unicodedata.category(c) in {"Cf", "Cc"} for c in value)


def product_text_errors(**fields: str | None) -> list[tuple[str, str]]:
    """(field, message) for each unacceptable text field of a product; `designation` must
    also hold something visible. Emoji, right-to-left text and zero-width characters inside
    real text are fine: they are product titles too."""
    errors: list[tuple[str, str]] = []
    for name, value in fields.items():
        if value is None:
            continue
        problem = text_problem(value)
        if problem is None and name == "designation" and is_blank(value):
            problem = "must not be blank"
        if problem is not None:
            errors.append((name, problem))
    return errors


class BodySizeLimitMiddleware:
    """413 for request bodies over `max_bytes`: from `Content-Length` before reading, or
    as soon as a streamed body goes over."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(received, self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as exc:
            if started:
                raise
            await self._refuse(send, exc.size)

    async def _refuse(self, send: Send, size: int) -> None:
        body = error_body(_too_large_message(size, self.max_bytes))
        await send_json(send, 413, body, [(b"connection", b"close")])


class BodyTooLargeError(HTTPException):
    """A streamed request body went over the limit (a 413; the routes' error handler
    answers it when raised while a route reads its body)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(413, detail=_too_large_message(size, limit))
        self.size = size


def _too_large_message(size: int, limit: int) -> str:
    return f"request body of {size} bytes or more, at most {limit} (RAKUTEN_MAX_BODY_BYTES)"


def content_length(scope: Scope) -> int | None:
    """The request's declared `Content-Length`, None when absent or malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
