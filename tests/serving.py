"""A real `medclass serve` process on loopback for the service tests, and what they read from it: its memory (from
/proc), its temporary files, raw sockets for requests no HTTP client would send."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# The limits the test server runs with: small, so that every bound is reached with small inputs.
LIMITS = ["--max-upload-mb", "1", "--max-pixels", "4000000", "--max-decode-mb", "32", "--concurrency", "1",
          "--queue", "1", "--body-timeout", "2", "--idle-timeout", "3"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    tmpdir: Path  # the server's TMPDIR: where uploads would be spooled

    def status_kib(self, key: str) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(text.split(f"{key}:")[1].split()[0])

    def reset_peak_memory(self) -> int:
        """Start a new peak-RSS window (Linux clear_refs); returns the RSS now, in bytes."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self.status_kib("VmRSS") * 1024

    def peak_memory(self) -> int:
        return self.status_kib("VmHWM") * 1024

    def spooled_bytes(self) -> int:
        """Bytes in the server's temporary files, open (spooled uploads are unlinked at once) or not."""
        total = sum(p.stat().st_size for p in self.tmpdir.rglob("*") if p.is_file())
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                if os.readlink(fd).startswith(str(self.tmpdir)):
                    total += os.stat(fd).st_size
            except OSError:  # closed meanwhile
                pass
        return total

    def raw(self, data: bytes = b"") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        if data:
            sock.sendall(data)
        return sock


def start_server(model: Path, tmpdir: Path, *args: str) -> Server:
    port = free_port()
    script = Path(sys.executable).with_name("medclass")
    tmpdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(script), "serve", str(model), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmpdir)}, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, port, process, tmpdir)
        except httpx.TransportError:
            time.sleep(0.3)
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.stdout.read() if process.stdout else ''}")
    process.kill()
    pytest.fail("server did not start within 120 s")


def post(url: str, name: str, content: bytes, **params) -> httpx.Response:
    return httpx.post(f"{url}/predict", files={"file": (name, content)}, params=params, timeout=60)


def read_reply(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection or ``timeout`` passes, and when it closed
    (seconds from now; inf when it did not)."""
    sock.settimeout(0.2)
    started = time.perf_counter()
    data = b""
    while time.perf_counter() - started < timeout:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, time.perf_counter() - started
        if not chunk:
            return data, time.perf_counter() - started
        data += chunk
    return data, float("inf")
