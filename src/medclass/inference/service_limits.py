"""What one request to ``medclass serve`` may cost, enforced before the cost is paid.

Starlette and FastAPI have no limit on a request body (multipart uploads are spooled to a temporary file of any
size), and uvicorn has neither a body size limit nor a body or request-header timeout; its ``limit_concurrency``
counts open connections, so idle ones would lock everybody out. So the two pieces below are written here:

- :class:`RequestGuard`, an ASGI middleware in front of the upload endpoints: admission (at most ``concurrency +
  queue`` uploads in progress, then 503 with Retry-After, before a byte of the body is read), the declared
  Content-Length checked before reading (413), the body counted while it arrives and refused the moment it passes
  the limit (so nothing larger than the limit is ever held in memory or spooled to disk), and a deadline for the
  whole body (408: a body shorter than its Content-Length, or trickled slowly, cannot hold a connection).
- :class:`DeadlineH11Protocol`, uvicorn's h11 protocol with one addition: a connection must send a complete request
  head within ``idle_timeout`` seconds of opening or of its previous response, else it is closed (slow or absent
  headers, and clients that keep trickling a refused body).

Decoding and inference run under ``concurrency`` slots (:attr:`RequestGuard.slots`); an image's decode memory is
estimated from its header (``medclass.data.images.decode_bytes``) and refused over ``max_decode_bytes``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import math
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file in a multipart body


@dataclass(frozen=True)
class ServiceLimits:
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_decode_bytes: int = 256 * 1024 * 1024
    concurrency: int = 2  # uploads decoded and predicted at once
    queue: int = 8  # uploads waiting (their bodies read and held) for a slot
    body_timeout: float = 60.0  # seconds for a whole request body to arrive
    idle_timeout: float = 10.0  # seconds for a connection to send a complete request head

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_decode_bytes", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.queue < 0 or not (self.body_timeout > 0 and self.idle_timeout > 0):
            raise ValueError("queue must be >= 0 and the timeouts > 0")

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + MULTIPART_OVERHEAD

    def memory_bound_bytes(self) -> int:
        """Worst case above the loaded model: every admitted upload held twice (the request body, then the bytes
        read from it) and every slot decoding an image of the largest allowed cost."""
        return (self.concurrency + self.queue) * 2 * self.max_body_bytes + self.concurrency * self.max_decode_bytes

    def describe(self) -> str:
        mib = 2**20
        return (
            f"uploads up to {self.max_upload_bytes / mib:g} MiB and {self.max_pixels:,} pixels, decoding up to "
            f"{self.max_decode_bytes / mib:g} MiB per image; {self.concurrency} at once + {self.queue} queued (503 "
            f"beyond); bodies within {self.body_timeout:g} s, request heads within {self.idle_timeout:g} s; at most "
            f"about {self.memory_bound_bytes() / mib:,.0f} MiB for requests above the model"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "memory_bound_bytes": self.memory_bound_bytes()}


async def _reply(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI middleware: admission, body size and body deadline for POST requests to ``paths`` (see the module
    docstring). Other requests pass straight through."""

    def __init__(self, app: Any, limits: ServiceLimits, paths: tuple[str, ...] = ("/predict",)) -> None:
        self.app = app
        self.limits = limits
        self.paths = frozenset(paths)
        self.in_flight = 0  # touched only on the event loop's thread
        self.slots = threading.BoundedSemaphore(limits.concurrency)  # taken by the endpoint around decode + predict
        self._seconds = 1.0  # moving average of one request's service time, for Retry-After
        self._lock = threading.Lock()

    def record_seconds(self, seconds: float) -> None:
        with self._lock:
            self._seconds = 0.8 * self._seconds + 0.2 * seconds

    def retry_after(self) -> int:
        waiting = self.in_flight / self.limits.concurrency
        return max(1, min(60, math.ceil(self._seconds * waiting)))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if self.in_flight >= limits.concurrency + limits.queue:
            seconds = self.retry_after()
            await _reply(send, 503, f"the service is busy ({self.in_flight} uploads in progress); retry in {seconds} s",
                         [(b"retry-after", str(seconds).encode())])  # fmt: skip
            return
        self.in_flight += 1
        try:
            chunks = await self._read_body(scope, receive, send)
            if chunks is not None:
                await self.app(scope, _replay(chunks, receive), send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, scope: Any, receive: Any, send: Any) -> deque[bytes] | None:
        """The body as the chunks it came in (no joined copy), or None when a reply was sent instead."""
        limit = self.limits.max_body_bytes
        too_large = (f"upload larger than the limit of {self.limits.max_upload_bytes} bytes "
                     f"(--max-upload-mb)")  # fmt: skip
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _reply(send, 400, "Content-Length is not a number", [(b"connection", b"close")])
                return None
            if int(declared) > limit:
                await _reply(send, 413, too_large)  # before a byte of the body is read
                return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout
        chunks: deque[bytes] = deque()
        size = 0
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                await _reply(send, 408, f"the request body did not arrive within {self.limits.body_timeout:g} s "
                             f"({size} bytes came)", [(b"connection", b"close")])  # fmt: skip
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(send, 413, too_large)
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks


def _replay(chunks: deque[bytes], receive: Any) -> Any:
    """A receive() that hands the buffered body to the app chunk by chunk (dropping each as it goes), then waits
    on the server's own receive (for the disconnect)."""
    finished = False

    async def replay() -> dict[str, Any]:
        nonlocal finished
        if not finished:
            chunk = chunks.popleft() if chunks else b""
            finished = not chunks
            return {"type": "http.request", "body": chunk, "more_body": not finished}
        return await receive()

    return replay


def return_freed_memory_at_once() -> bool:
    """Have glibc give large freed blocks (decoded images) back to the system at once. By default it raises its
    mmap threshold after the first large free, and from then on keeps each worker thread's freed images in that
    thread's arena: 8 parallel uploads with one decode slot grew the server by 91 MiB instead of 14 (measured
    with tests/inference/test_serve_limits.py), which would break the stated memory bound. A fixed threshold
    (mallopt M_MMAP_THRESHOLD) turns the adjustment off. No-op (False) where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    m_mmap_threshold = -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 128 * 1024))


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that has not sent a complete request head ``idle_timeout``
    seconds after it opened or after its last response (uvicorn's keep-alive timer is cancelled by any byte, so a
    trickle would keep a connection forever). Set ``idle_timeout`` on a subclass."""

    idle_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        self.loop.call_later(self.idle_timeout, self._deadline, self.cycle)

    def _deadline(self, cycle: Any) -> None:
        # A new request since arming replaces self.cycle; the same cycle means no complete request head came.
        if self.cycle is cycle and not self.transport.is_closing():
            if cycle is not None and not cycle.response_complete:
                return  # a request is still being answered (a long prediction): not idle
            self.transport.close()
