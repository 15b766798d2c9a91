"""The service's limits against a client that tries to exhaust it (a real server process on loopback with the small
limits of serving.LIMITS: 1 MiB uploads, 32 MiB decode budget, 1 slot + 1 queued, 2 s for a body, 3 s for a
request head): every bound is reached and holds, and the server answers a good request after each attack."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import Server, post, read_reply

MULTIPART_HEAD = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def still_serving(service: Server, xray: Path):
    """After the test: the same server answers a real X-ray."""
    yield
    response = post(service.url, xray.name, xray.read_bytes())
    assert response.status_code == 200, response.text


def request_head(content_length: int | None, chunked: bool = False) -> bytes:
    head = b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    if content_length is not None:
        head += f"Content-Length: {content_length}\r\n".encode()
    if chunked:
        head += b"Transfer-Encoding: chunked\r\n"
    return head + b"\r\n"


def test_declared_oversize_is_refused_before_the_body_is_read(service: Server, still_serving) -> None:
    sock = service.raw(request_head(1_500_000_000))  # 1.5 GB announced, not one byte of it sent
    reply, _ = read_reply(sock, timeout=5)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"larger than the limit of 1048576 bytes" in reply


def test_streamed_oversize_upload_never_reaches_disk_or_memory(service: Server, still_serving) -> None:
    """200 MiB sent chunked (no Content-Length): cut at the limit, never spooled, never held."""
    rss_before = service.reset_peak_memory()
    spooled: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            spooled.append(service.spooled_bytes())
            time.sleep(0.02)

    def body():
        yield MULTIPART_HEAD
        for _ in range(200):
            yield b"\0" * 2**20
        yield b"\r\n--b--\r\n"

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = httpx.post(f"{service.url}/predict", content=body(), timeout=120,
                              headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
    finally:
        done.set()
        watcher.join()
    assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]
    limit = 2**20 + 64 * 1024  # the upload limit plus the multipart allowance
    assert max(spooled) <= limit, f"{max(spooled) / 2**20:.1f} MiB spooled to disk"
    growth = service.peak_memory() - rss_before
    assert growth < limit + 32 * 2**20, f"server memory grew by {growth / 2**20:.0f} MiB for a refused upload"


def test_sixteen_bit_image_is_charged_by_its_bytes_per_pixel(service: Server, still_serving) -> None:
    """Same pixel count (under --max-pixels 4000000): 8-bit is decoded, 16-bit is over --max-decode-mb 32."""
    grey = png(np.zeros((1900, 1900), np.uint8))
    deep = png(np.zeros((1900, 1900), np.uint16))
    assert post(service.url, "grey.png", grey).status_code == 200
    started = time.perf_counter()
    response = post(service.url, "deep.png", deep)
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "1900x1900 I;16 image needs about" in detail and "over the limit of 32 MiB" in detail, detail
    assert time.perf_counter() - started < 2


def test_parallel_heavy_uploads_get_503_not_500_and_memory_stays_bounded(service: Server, still_serving) -> None:
    heavy = png(np.zeros((1400, 1400), np.uint16))  # about 28 MiB to decode: under the budget, so each is decoded
    bound = httpx.get(f"{service.url}/model").json()["limits"]["memory_bound_bytes"]
    rss_before = service.reset_peak_memory()
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def client() -> None:
        start.wait()
        answers.append(post(service.url, "heavy.png", heavy, heatmap="true"))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    for response in answers:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1 and "busy" in response.json()["detail"]
    growth = service.peak_memory() - rss_before
    assert growth < bound + 16 * 2**20, f"grew {growth / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB"


def test_stalled_body_times_out(service: Server, still_serving) -> None:
    """A body shorter than its Content-Length: 408 after --body-timeout 2, and the connection is closed."""
    sock = service.raw(request_head(100_000) + MULTIPART_HEAD)
    reply, closed_after = read_reply(sock, timeout=10)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within 2 s" in reply
    assert 1.5 < closed_after < 6


def test_trickled_body_times_out(service: Server, still_serving) -> None:
    sock = service.raw(request_head(None, chunked=True))
    started = time.perf_counter()
    reply = b""
    sock.settimeout(0.05)
    while time.perf_counter() - started < 10 and not reply:
        try:
            sock.sendall(b"1\r\nx\r\n")  # one byte per chunk, every 0.3 s
            time.sleep(0.3)
            reply = sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.perf_counter() - started < 6


def test_idle_connections_and_slow_request_heads_are_closed(service: Server, still_serving) -> None:
    idle = service.raw()
    _, closed_after = read_reply(idle, timeout=10)
    idle.close()
    assert 2 < closed_after < 6, "a connection that sends nothing is closed after --idle-timeout 3"

    slow = service.raw(b"GET /health HTTP/1.1\r\n")
    started = time.perf_counter()
    slow.settimeout(0.05)
    closed = False
    for header in (b"Host: localhost\r\n", *[f"X-Slow-{i}: 1\r\n".encode() for i in range(40)]):
        try:
            slow.sendall(header)
            time.sleep(0.25)
            if slow.recv(4096) == b"":
                closed = True
                break
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
    slow.close()
    assert closed and time.perf_counter() - started < 6, "a request head trickled for longer than 3 s is cut"
