"""Load on the prediction service: a real `medclass serve` process on loopback, held under concurrent uploads of a
real chest X-ray for a bounded time by a local client (threads + httpx). Prints requests/s, latency percentiles,
errors and the server's memory (resident set) before and after, and, as the baseline, the same predictor called
in this process without HTTP: the ratio says what the service layer costs.

    python benchmarks/serve_load.py [--model RUN_OR_PACKAGE] [--clients 8] [--seconds 30] [--json out.json]

Without --model a small chest X-ray model (resnet18, 64 px, a few training steps) is trained first into a
temporary folder: the figures are about the service, not the model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_model(out: Path) -> Path:
    from medclass import load_config, run_experiment

    config = load_config(
        REPO / "configs" / "chest_xray.yaml",
        [f"output_dir={out}", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.progress_bar=false",
         "evaluation.bootstrap=0", "evaluation.report=false"],
    )  # fmt: skip
    return run_experiment(config).run_dir


def start_server(model: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = Path(sys.executable).with_name("medclass")
    process = subprocess.Popen([str(script), "serve", str(model), "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
        if process.poll() is not None:
            raise SystemExit("the server exited during start-up")
    process.kill()
    raise SystemExit("the server did not start within 180 s")


def load(url: str, image: bytes, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as session:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    response = session.post(f"{url}/predict", files={"file": ("xray.jpeg", image)})
                    ok = response.status_code == 200 and "probabilities" in response.json()
                    problem = None if ok else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if problem:
                        errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
        "requests_per_s": len(latencies) / elapsed,
        "latency_ms": {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)} | {"max": float(ms.max())},
    }  # fmt: skip


def direct_rate(model: Path, image_path: Path, seconds: float) -> float:
    """The baseline: what the service does per request (decode the file, predict one image), in this process."""
    import io

    from medclass.inference.predictor import decode, load_predictor, probabilities

    predictor = load_predictor(model)
    data = image_path.read_bytes()

    def once() -> None:
        probabilities(predictor, decode(predictor, io.BytesIO(data))[None], tta=False, calibrated=False)

    once()
    count, stop_at = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < stop_at:
        once()
        count += 1
    return count / (time.perf_counter() - started)


# Server settings compared by --compare: the service as it was (one image per pass) and with dynamic batching.
# The queue is raised in all of them so that 32 clients are served rather than turned away with 503.
SETTINGS = {
    "one image per pass": ["--max-batch", "1", "--queue", "64"],
    "batching": ["--queue", "64"],
    "batching, 2 workers": ["--queue", "64", "--workers", "2"],
}


def compare(model: Path, image: bytes, clients: list[int], seconds: float) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {}
    for name, options in SETTINGS.items():
        process, url = start_server(model, *options)
        try:
            load(url, image, 2, 2.0)  # warm-up
            results[name] = {n: load(url, image, n, seconds) for n in clients}
        finally:
            process.terminate()
            process.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--compare", action="store_true", help="Batching against one image per pass, 8 and 32 clients.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args()
    data = Path(os.environ.get("MEDCLASS_DATA", REPO.parent / "shared" / "data"))
    image_path = sorted((data / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            model = args.model or tiny_model(Path(tmp))
            results = compare(model, image_path.read_bytes(), [8, 32], args.seconds)
        print(f"machine: {machine}; {args.seconds:g} s per setting and client count, image {image_path.name}")
        print(f"{'setting':24s} {'clients':>7s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s}")
        for name, by_clients in results.items():
            for n, r in by_clients.items():
                print(f"{name:24s} {n:7d} {r['requests_per_s']:7.1f} {r['latency_ms']['p50']:8.1f} "
                      f"{r['latency_ms']['p99']:8.1f} {r['errors']:6d}")  # fmt: skip
        for n in (8, 32):
            base = results["one image per pass"][n]
            for name in ("batching", "batching, 2 workers"):
                r = results[name][n]
                print(f"serve batching {r['requests_per_s'] / base['requests_per_s']:.1f}x ({name}, {n} clients; p99 "
                      f"{r['latency_ms']['p99']:.0f} ms vs {base['latency_ms']['p99']:.0f} ms)")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp))
        process, url = start_server(model)
        try:
            load(url, image_path.read_bytes(), 2, 2.0)  # warm-up
            rss_before = rss_mib(process.pid)
            result = load(url, image_path.read_bytes(), args.clients, args.seconds)
            rss_after = rss_mib(process.pid)
            healthy = httpx.get(f"{url}/health", timeout=5).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=30)
        direct = direct_rate(model, image_path, min(10.0, args.seconds))
    result |= {"server_rss_mib": {"before": rss_before, "after": rss_after}, "healthy_after": healthy,
               "direct_images_per_s": direct, "clients": args.clients, "seconds": args.seconds,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}  # fmt: skip
    latency = result["latency_ms"]
    print(f"machine: {result['machine']}; {args.clients} clients for {args.seconds:g} s, image {image_path.name}")
    print(f"requests: {result['requests']}, errors: {result['errors']} {result['error_kinds'] or ''}")
    print(f"service:  {result['requests_per_s']:.1f} requests/s; latency p50 {latency['p50']:.1f} ms, "
          f"p90 {latency['p90']:.1f} ms, p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms")  # fmt: skip
    print(f"direct:   {direct:.1f} images/s (same predictor, no HTTP); ratio service / direct "
          f"{result['requests_per_s'] / direct:.2f}")  # fmt: skip
    print(f"server memory (RSS): {rss_before:.0f} MiB before, {rss_after:.0f} MiB after; healthy after: {healthy}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
