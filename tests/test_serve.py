"""graspcheck serve: a real uvicorn server in its own process on a free loopback port, asked over HTTP and a
WebSocket by graspcheck.Client and by httpx. Traffic goes to 127.0.0.1 only."""

import hashlib
import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import graspcheck
from graspcheck.client import ServerError
from graspcheck.console import GraspcheckError
from graspcheck.serve import check_exposure, load_for_serving
from graspcheck.watch import Smoother
from test_predict_evaluate import run_cli

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BATCH = 4
MAX_BODY = 1_000_000  # --max-body-mb 1
MAX_PIXELS = 2_000_000  # graspcheck --max-megapixels 2 serve ...: the limit of every command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args, global_options: tuple = (), timeout: float = 90) -> tuple[subprocess.Popen, str]:
    """`graspcheck GLOBAL_OPTIONS serve ARGS --port 0` in its own process; returns it and its URL, read from its first line."""
    env = {k: v for k, v in os.environ.items() if k != "GRASPCHECK_API_KEY"}
    process = subprocess.Popen([sys.executable, "-m", "graspcheck", *map(str, global_options), "serve", *map(str, args), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    address = re.search(r"on (http://127\.0\.0\.1:\d+)", first_line[0] if first_line else "")
    if address is None:
        process.kill()
        raise AssertionError(f"the server did not start: {first_line} {process.stderr.read()}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(address.group(1) + "/health", timeout=1).status_code == 200:
                return process, address.group(1)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not answer /health in time")


@pytest.fixture(scope="module")
def server(trained):
    """One server for the module, with small limits to test them and an API key to test that."""
    process, url = start_server(trained.best, "--api-key", API_KEY, "--max-body-mb", MAX_BODY / 1e6,
                                "--max-batch", MAX_BATCH, global_options=("--max-megapixels", MAX_PIXELS / 1e6))
    yield url, process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def client(server):
    with graspcheck.Client(server[0], api_key=API_KEY) as c:
        yield c


@pytest.fixture(scope="module")
def frames(dataset) -> list[Path]:
    """A few frames of each class."""
    return sorted((dataset / "not_success").glob("*.png"))[:4] + sorted((dataset / "success").glob("*.png"))[:4]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_verdicts_match_predict(trained, client, frames):
    expected = graspcheck.load(trained.best).predict(frames)  # what `graspcheck predict` prints
    assert [p.label for p in expected] == ["not_success"] * 4 + ["success"] * 4
    one_by_one = [client.predict(path)[0] for path in frames]
    batched = client.predict(frames)  # 8 images: two requests of the batch limit, 4
    for want, single, batch in zip(expected, one_by_one, batched):
        assert single.source == batch.source == want.source
        assert single.label == batch.label == want.label
        assert single.success_probability == pytest.approx(want.success_probability, abs=1e-5)
        assert batch.success_probability == pytest.approx(want.success_probability, abs=1e-5)
    in_memory = client.predict([Image.open(frames[0]), np.asarray(Image.open(frames[-1]).convert("RGB")), frames[1].read_bytes()])
    assert [p.label for p in in_memory] == [expected[0].label, expected[-1].label, expected[1].label]
    assert in_memory[0].source == "<image 0>"


def test_threshold_parameter(client, frames):
    low, high = client.predict(frames[0], threshold=0.0)[0], client.predict(frames[-1], threshold=1.0)[0]
    assert low.label == "success" and (high.label == "not_success" or high.success_probability == 1.0)


def test_info(server, trained):
    info = httpx.get(server[0] + "/info", headers=AUTH).json()
    assert info["sha256"] == hashlib.sha256(Path(trained.best).read_bytes()).hexdigest()
    assert info["model"] == "seednet" and info["runtime"] == "pytorch"
    assert info["classes"] == ["not_success", "success"] and info["input_size"] == [32, 32]
    assert info["graspcheck_version"] == graspcheck.__version__
    assert info["limits"]["max_batch"] == MAX_BATCH and info["limits"]["max_pixels"] == MAX_PIXELS
    single = httpx.post(server[0] + "/predict", headers=AUTH, files={"image": ("f.png", png_bytes(Image.new("RGB", (40, 30))))}).json()
    assert set(single) == {"label", "p_success", "threshold", "model", "latency_ms"} and single["threshold"] == info["threshold"]


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # noise: the data is large
    data = png_bytes(Image.fromarray(noise))
    return data[: len(data) // 2]


def multipart(count: int) -> dict:
    return {"files": [("images", (f"{i}.png", png_bytes(Image.new("RGB", (16, 16))), "image/png")) for i in range(count)]}


# name -> (path, request arguments, status, error code)
BAD_REQUESTS = {
    "not an image": ("/predict", dict(content=b"hello, not a picture", headers={"Content-Type": "image/png"}), 422, "not_an_image"),
    "truncated": ("/predict", dict(content=truncated_png(), headers={"Content-Type": "image/png"}), 422, "truncated"),
    "empty": ("/predict", dict(content=b"", headers={"Content-Type": "image/png"}), 400, "empty"),
    "too large": ("/predict", dict(content=b"\0" * (MAX_BODY + 1), headers={"Content-Type": "image/png"}), 413, "too_large"),
    "too many pixels": ("/predict", dict(content=png_bytes(Image.new("L", (2000, 1001))), headers={"Content-Type": "image/png"}), 413, "too_many_pixels"),
    "unsupported type": ("/predict", dict(content=b'{"image": 1}', headers={"Content-Type": "application/json"}), 415, "unsupported_type"),
    "threshold above 1": ("/predict?threshold=1.5", dict(content=b"x", headers={"Content-Type": "image/png"}), 422, "bad_threshold"),
    "threshold not a number": ("/predict?threshold=high", dict(content=b"x", headers={"Content-Type": "image/png"}), 422, "bad_threshold"),
    "two images to /predict": ("/predict", multipart(2), 400, "several_images"),
    "empty multipart": ("/predict", dict(content=b"--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"}), 400, "empty"),
    "batch too large": ("/predict/batch", multipart(MAX_BATCH + 1), 413, "too_many_images"),
    "batch not multipart": ("/predict/batch", dict(content=b"x", headers={"Content-Type": "image/png"}), 415, "unsupported_type"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_a_named_4xx_and_the_server_goes_on(server, case):
    path, arguments, status, code = BAD_REQUESTS[case]
    arguments.setdefault("headers", {})
    response = httpx.post(server[0] + path, **{**arguments, "headers": {**arguments["headers"], **AUTH}})
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["detail"]
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG of width x height black pixels, compressed a block of rows at a time, never held whole:
    about 1 KB of file per 8 megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # the filter byte, then the row's bits
    compressed = bytearray()
    for start in range(0, height, 1000):
        compressed += compressor.compress(row * min(1000, height - start))
    compressed += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(compressed)) + chunk(b"IEND", b"")


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")
@pytest.mark.parametrize("megapixels", [900, 100])  # 900: above Pillow's own limit; 100: only below it
def test_decompression_bomb_is_refused_without_decoding(server, megapixels):
    url, process = server
    bomb = png_bomb(30_000, megapixels * 1_000_000 // 30_000)
    assert len(bomb) < MAX_BODY
    httpx.post(url + "/predict", content=png_bytes(Image.new("RGB", (64, 64))), headers={**AUTH, "Content-Type": "image/png"})
    before = peak_memory_mb(process.pid)
    start = time.perf_counter()
    response = httpx.post(url + "/predict", content=bomb, headers={**AUTH, "Content-Type": "image/png"})
    elapsed = time.perf_counter() - start
    assert response.status_code == 413 and response.json()["error"] == "too_many_pixels", response.text
    assert elapsed < 2  # refused from the header (milliseconds on a quiet machine), never decoded
    assert peak_memory_mb(process.pid) - before < 50  # decoding would take 112 MB (1 bit) to 900 MB (8 bit)
    assert httpx.get(url + "/health").status_code == 200


def test_api_key_is_enforced_on_every_endpoint_but_health(server):
    url = server[0]
    assert httpx.get(url + "/health").status_code == 200
    image = png_bytes(Image.new("RGB", (16, 16)))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": API_KEY[:-1]}, {"Authorization": API_KEY + "x"}):
        for method, path in (("GET", "/info"), ("POST", "/predict"), ("GET", "/docs"), ("GET", "/openapi.json")):
            response = httpx.request(method, url + path, headers={**headers, "Content-Type": "image/png"}, content=image)
            assert response.status_code == 401 and response.json()["error"] == "unauthorized", (headers, path)
    assert httpx.post(url + "/predict", headers={"X-API-Key": API_KEY, "Content-Type": "image/png"}, content=image).status_code == 200
    assert httpx.get(url + "/docs", headers=AUTH).status_code == 200
    with pytest.raises(ServerError, match="API key"):
        next(graspcheck.Client(url).stream([image]))
    with pytest.raises(ServerError) as refused:
        graspcheck.Client(url, api_key="wrong").predict(image)
    assert refused.value.status == 401


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_key(host):
    check_exposure(host, None, insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "robot-pc.local"])
def test_other_addresses_need_a_key_or_insecure(host):
    with pytest.raises(GraspcheckError, match="--api-key"):
        check_exposure(host, None, insecure=False)
    check_exposure(host, "a-key", insecure=False)
    check_exposure(host, None, insecure=True)


def test_serve_on_all_interfaces_without_key_refuses_to_start(trained):
    result = run_cli("serve", trained.best, "--host", "0.0.0.0", "--port", free_port())
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "--api-key" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_taken_port_is_one_line(trained):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", trained.best, "--port", taken.getsockname()[1])
    assert result.returncode == 2 and result.stderr.startswith("error: cannot listen on 127.0.0.1"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stream_smooths_like_watch(trained, client, frames):
    sequence = [frames[0], frames[4], frames[5], frames[1], frames[6], frames[7], frames[2], frames[3]]
    verdicts = list(client.stream(sequence, smooth=3, rule="majority"))
    expected = graspcheck.load(trained.best).predict(sequence)
    smoother = Smoother(3, "majority", 0.5)
    assert [v.frame for v in verdicts] == list(range(len(sequence)))
    assert [v.label for v in verdicts] == [p.label for p in expected]
    assert [v.smoothed for v in verdicts] == ["success" if smoother.update(p.success_probability) else "not_success" for p in expected]
    assert [v.smoothed for v in verdicts][:4] == ["not_success", "not_success", "success", "success"]


def test_stream_reports_a_bad_frame_and_goes_on(server):
    from websockets.sync.client import connect

    address = server[0].replace("http", "ws") + "/stream?smooth=2"
    with connect(address, additional_headers=AUTH) as ws:
        ws.send(b"not an image")
        assert '"not_an_image"' in ws.recv(timeout=10)
        ws.send("a text message")
        assert '"not_binary"' in ws.recv(timeout=10)
        ws.send(png_bytes(Image.new("RGB", (32, 32))))
        assert '"smoothed"' in ws.recv(timeout=10)
    with connect(server[0].replace("http", "ws") + "/stream?rule=vote", additional_headers=AUTH) as ws:
        assert '"bad_parameter"' in ws.recv(timeout=10)


def test_concurrent_clients_get_their_own_answers(server, trained, frames):
    expected = {str(p.source): p for p in graspcheck.load(trained.best).predict(frames)}
    wrong: list[str] = []

    def ask(path: Path) -> None:
        with graspcheck.Client(server[0], api_key=API_KEY) as own:
            for _ in range(6):
                got = own.predict(path)[0]
                if got.label != expected[str(path)].label or abs(got.success_probability - expected[str(path)].success_probability) > 1e-5:
                    wrong.append(f"{path}: {got}")

    threads = [threading.Thread(target=ask, args=(path,)) for path in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not wrong and not any(thread.is_alive() for thread in threads)


def test_onnx_export_on_the_fly(trained, frames):
    model, source, runtime = load_for_serving(trained.best, onnx=True)
    assert runtime == "onnxruntime" and source == Path(trained.best)
    reference = graspcheck.load(trained.best).predict(frames)
    assert [p.label for p in model.predict(frames)] == [p.label for p in reference]


def test_client_without_a_server_says_so():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(GraspcheckError, match="cannot reach the graspcheck server"):
            graspcheck.Client(f"http://127.0.0.1:{port}").predict(b"x")
        assert not graspcheck.Client(f"http://127.0.0.1:{port}").health()


def test_the_client_loads_no_torch():
    code = ("import sys, graspcheck, graspcheck.client; "
            "assert graspcheck.Prediction is graspcheck.client.Prediction and graspcheck.Client is graspcheck.client.Client; "
            "assert 'torch' not in sys.modules, 'torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_client_expands_folders_and_refuses_a_missing_path_before_sending(tmp_path, frames):
    from graspcheck.client import _named

    (tmp_path / "sub").mkdir()
    Image.open(frames[0]).save(tmp_path / "sub" / "b.png")
    Image.open(frames[1]).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [source for source, _ in _named(tmp_path)] == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png")]
    with pytest.raises(GraspcheckError, match="does not exist"):
        graspcheck.Client("http://127.0.0.1:9").predict(tmp_path / "missing.png")
