"""graspcheck serve under load from a second process on loopback, beside the same work done in-process:

- in-process: the model's end to end time for one 224x224 PNG held in memory, decode to verdict
  (graspcheck.load(...).predict(image decoded from the bytes)), median and p99;
- over HTTP: N concurrent clients (threads of this process, each with its own keep-alive connection) posting
  the PNG to /predict as fast as answers come: requests/s, p50 and p99 latency; N = 1, 4 and 16;
- graspcheck.Client (httpx) at 1 client, for what the Python client adds;
- /stream: frames/s and latency through the WebSocket, one frame in flight (graspcheck.Client.stream);
- the server's overhead: HTTP latency at 1 client minus the in-process time (medians).

The model is the default recipe's (efficientnet_lite0 at its input size) with random weights, exported to ONNX
and served by ONNX Runtime (speed does not depend on the weights' values).

    python benchmarks/serve_speed.py [--seconds 8] [--clients 1 4 16] [--frames 500]

Goals on the 2-core machine: p99 under 10 ms at 1 client, at least 300 requests/s at 4 clients, overhead under 1 ms.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from inference_speed import make_images, make_model  # noqa: E402  the same model and images as inference_speed.py

MAX_REQUESTS_PER_CLIENT = 50_000  # with --seconds, bounds each load loop in count as well as time


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    return 1000 * float(np.percentile(seconds, 50)), 1000 * float(np.percentile(seconds, 99))


def in_process(model_path: Path, png: bytes, repeats: int) -> list[float]:
    import graspcheck

    model = graspcheck.load(model_path)
    times = []
    for i in range(repeats + 30):  # the first 30 warm up
        start = time.perf_counter()
        image = Image.open(io.BytesIO(png))
        model.predict(image)
        if i >= 30:
            times.append(time.perf_counter() - start)
    return times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "graspcheck", "serve", str(model_path), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def load(port: int, png: bytes, clients: int, seconds: float) -> tuple[float, list[float], list[float]]:
    """clients threads posting png until seconds pass; returns requests/s, latencies and the server's own latency_ms."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    reported: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    start_line = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "image/png"}
        for _ in range(5):  # warm-up: the connection, the server's threads
            connection.request("POST", "/predict", png, headers)
            connection.getresponse().read()
        start_line.wait()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                break
            start = time.perf_counter()
            connection.request("POST", "/predict", png, headers)
            response = connection.getresponse()
            body = response.read()
            latencies[index].append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(body.decode())
                break
            reported[index].append(json.loads(body)["latency_ms"])
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"a request failed: {failures[0]}")
    flat = [t for per_client in latencies for t in per_client]
    return len(flat) / elapsed, flat, [t for per_client in reported for t in per_client]


def python_client(port: int, png: bytes, seconds: float) -> list[float]:
    import graspcheck

    times = []
    with graspcheck.Client(f"http://127.0.0.1:{port}") as client:
        for _ in range(10):
            client.predict(png)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and len(times) < MAX_REQUESTS_PER_CLIENT:
            start = time.perf_counter()
            client.predict(png)
            times.append(time.perf_counter() - start)
    return times


def stream(port: int, png: bytes, frames: int) -> tuple[float, list[float]]:
    import graspcheck

    times = []
    with graspcheck.Client(f"http://127.0.0.1:{port}") as client:
        started = time.perf_counter()
        last = started
        for _ in client.stream(png for _ in range(frames)):
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return frames / (time.perf_counter() - started), times[10:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per number of clients")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=500, help="in-process calls")
    parser.add_argument("--frames", type=int, default=500, help="frames through /stream")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path = make_model("default onnx fp32", folder)
        (folder / "images").mkdir()
        make_images(folder / "images", 1)
        png = next((folder / "images").iterdir()).read_bytes()
        print(f"model: {model_path.name} (ONNX Runtime), one 224x224 PNG of {len(png)} bytes")

        local_p50, local_p99 = percentiles_ms(in_process(model_path, png, args.repeats))
        print(f"in-process predict(decoded PNG): p50 {local_p50:.2f} ms, p99 {local_p99:.2f} ms ({args.repeats} calls)")

        server, port = start_server(model_path)
        try:
            print(f"\n{'POST /predict':<16} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'server ms':>9}  (server ms: the handler's own latency_ms, p50)")
            results = {}
            for clients in args.clients:
                rate, latencies, reported = load(port, png, clients, args.seconds)
                p50, p99 = percentiles_ms(latencies)
                results[clients] = (rate, p50, p99)
                print(f"{clients:>3} client(s)     {rate:>7.0f} {p50:>7.2f} {p99:>7.2f} {float(np.median(reported)):>9.2f}", flush=True)
            client_p50, client_p99 = percentiles_ms(python_client(port, png, args.seconds / 2))
            print(f"graspcheck.Client, 1 client: p50 {client_p50:.2f} ms, p99 {client_p99:.2f} ms")
            frame_rate, frame_times = stream(port, png, args.frames)
            frame_p50, frame_p99 = percentiles_ms(frame_times)
            print(f"/stream (WebSocket, 1 frame in flight): {frame_rate:.0f} frames/s, p50 {frame_p50:.2f} ms, p99 {frame_p99:.2f} ms per frame")
        finally:
            server.terminate()
            server.wait(timeout=30)

    overhead = results[1][1] - local_p50 if 1 in results else float("nan")
    print(f"\nserver overhead at 1 client (HTTP p50 - in-process p50): {overhead:.2f} ms")
    goals = []
    if 1 in results:
        goals += [("p99 at 1 client < 10 ms", results[1][2] < 10), ("overhead < 1 ms", overhead < 1)]
    if 4 in results:
        goals.append(("at least 300 requests/s at 4 clients", results[4][0] >= 300))
    for goal, met in goals:
        print(f"goal {goal}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
