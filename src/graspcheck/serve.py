"""``graspcheck serve``: verdicts over HTTP and a WebSocket, for a robot's control process on this machine or
another. FastAPI on uvicorn; the model's own preprocessing (GraspModel) turns each decoded image into a verdict.

Every request is bounded before it costs memory: the body by its size, an image by the pixel count in its
header (read before any pixel is decoded), a batch by its image count, the work by a pool of inference
threads that keeps the event loop free. A bad request gets a 4xx JSON ``{"error": CODE, "detail": MESSAGE}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import ipaddress
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from . import __version__
from .console import GraspcheckError
from .predict import GraspModel, find_checkpoint
from .transforms import DEFAULT_MAX_PIXELS
from .watch import FrameRate, Smoother, smoothing_problem

# Bodies that are one image whatever their declared type; anything else but multipart is refused.
RAW_TYPES = ("image/", "application/octet-stream")
API_KEY_ENV = "GRASPCHECK_API_KEY"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 10_000_000  # one request, or one /stream frame
    max_pixels: int = DEFAULT_MAX_PIXELS  # one image, from its header: a camera frame is far below, a decompression bomb far above
    max_batch: int = 32  # images of one /predict/batch request
    # Inferences at once; more requests wait their turn. One inference already spreads over several cores
    # (ONNX Runtime's half, PyTorch's all), so two keep the cores busy while the next image decodes.
    max_concurrent: int = 2


class ApiError(Exception):
    """A request the server refuses; becomes a JSON response with this status, code and message."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def error_body(code: str, detail: str) -> dict:
    return {"error": code, "detail": detail}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to any interface
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback without an API key, unless the user said --insecure."""
    if api_key is not None and not api_key.strip():
        raise GraspcheckError("--api-key is empty; pass a secret of your own (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    if not is_loopback(host) and api_key is None and not insecure:
        raise GraspcheckError(f"--host {host} lets other machines ask for verdicts; pass --api-key KEY (or set "
                              f"{API_KEY_ENV}), or --insecure on a network you trust")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Encoded bytes -> a decoded PIL image, or an ApiError naming what is wrong. The pixel count comes from
    the header, which Image.open reads alone; pixels are decoded only below the limit."""
    if not data:
        raise ApiError(400, "empty", f"{name} is empty; send the bytes of an image file")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own check, far above any sensible limit
        raise ApiError(413, "too_many_pixels", f"{name} has over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, above the limit of "
                                               f"{max_pixels / 1e6:g}; send a smaller image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(422, "not_an_image", f"{name} is not an image in a format graspcheck reads (PNG, JPEG, WebP, BMP, TIFF, GIF)") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ApiError(413, "too_many_pixels", f"{name} is {image.width}x{image.height} ({pixels / 1e6:.1f} megapixels), "
                                               f"above the limit of {max_pixels / 1e6:g}; send a smaller image")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        if "truncat" in str(error).lower():
            raise ApiError(422, "truncated", f"{name} is truncated: its data ends before the image does") from None
        raise ApiError(422, "corrupt_image", f"{name} is damaged: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    return image


def split_multipart(body: bytes, content_type: str, max_parts: int) -> list[tuple[str, bytes]]:
    """The parts of a multipart/form-data body as (file name or field name, bytes), in memory: the body is
    already bounded by the size limit, so no part is spooled to disk."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "the multipart Content-Type has no boundary")
    parts: list[tuple[str, bytes]] = []
    header_field, header_value = bytearray(), bytearray()
    disposition = b""
    data = bytearray()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        header_field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if header_field.lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        nonlocal disposition
        if len(parts) == max_parts:
            raise ApiError(413, "too_many_images", f"the request holds more than {max_parts} images; send at most {max_parts}")
        _, options = parse_options_header(disposition)
        name = (options.get(b"filename") or options.get(b"name") or f"<image {len(parts)}>".encode()).decode("utf-8", "replace")
        parts.append((name, bytes(data)))
        data.clear()
        disposition = b""

    parser = MultipartParser(boundary, {"on_header_field": on_header_field, "on_header_value": on_header_value,
                                        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {error}") from None
    return parts


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0 <= threshold <= 1:
        raise ApiError(422, "bad_threshold", f"threshold must be between 0 and 1, got {threshold:g}")


class ApiKeyCheck:
    """ASGI middleware: every request but /health carries the key as ``Authorization: Bearer KEY`` or
    ``X-API-Key: KEY``. Keys are compared as SHA-256 digests in constant time, so neither the key's
    content nor its length shows in the response time."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key_digest = hashlib.sha256(api_key.encode()).digest()

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        candidates = [value.removeprefix(b"Bearer ").strip() if name == b"authorization" else value.strip()
                      for name, value in headers if name in (b"authorization", b"x-api-key")]
        # Every candidate is compared, so the time does not tell which header matched.
        matches = [hmac.compare_digest(hashlib.sha256(c).digest(), self.key_digest) for c in candidates]
        return any(matches)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] != "/health" and not self.authorized(scope["headers"]):
            if scope["type"] == "http":
                detail = "this server needs an API key: send the header 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                response = JSONResponse(error_body("unauthorized", detail), 401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake gets HTTP 403
            return
        await self.app(scope, receive, send)


class Verdicts:
    """The model behind the endpoints: decoding and inference on a bounded thread pool, off the event loop."""

    def __init__(self, model: GraspModel, limits: Limits):
        self.model, self.limits = model, limits
        self.pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="graspcheck-inference")

    async def run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    def classify(self, images: list[tuple[str, bytes]], threshold: float | None) -> list[dict]:
        decoded = [decode_image(data, name, self.limits.max_pixels) for name, data in images]
        predictions = self.model.predict(decoded, threshold=threshold)
        return [{"source": name, "label": p.label, "p_success": p.success_probability} for (name, _), p in zip(images, predictions)]

    def classify_body(self, body: bytes, content_type: str, threshold: float | None, batch: bool) -> list[dict]:
        """The verdicts for a raw image body or a multipart body."""
        if content_type.startswith("multipart/form-data"):
            images = split_multipart(body, content_type, self.limits.max_batch)
            if not images:
                raise ApiError(400, "empty", "the multipart body holds no image; send each image as a file part")
            if not batch and len(images) > 1:
                raise ApiError(400, "several_images", f"/predict takes one image, got {len(images)}; send several to /predict/batch")
        elif not content_type or content_type.startswith(RAW_TYPES):
            images = [("the request body", body)]
        else:
            raise ApiError(415, "unsupported_type", f"Content-Type {content_type} is not accepted; send an image type "
                                                    "(image/png, image/jpeg, ...), application/octet-stream or multipart/form-data")
        return self.classify(images, threshold)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to pass limit (from Content-Length, or while it streams)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body is {int(declared) / 1e6:.1f} MB, above the limit of {limit / 1e6:g} MB")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the body is above the limit of {limit / 1e6:g} MB")
    return bytes(body)


def milliseconds_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}},
}}}
_BATCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
_THRESHOLD = Query(None, description="Decision threshold on p_success, between 0 and 1 (default: the model's).")


def create_app(model: GraspModel, model_file: Path, runtime: str, limits: Limits = Limits(), api_key: str | None = None) -> FastAPI:
    """The FastAPI application serving model; model_file is the file it came from (named and hashed in /info)."""
    verdicts = Verdicts(model, limits)
    threshold_default = model.info.threshold
    info = {
        "model": model.info.model,
        "runtime": runtime,
        "file": model_file.name,
        "sha256": sha256_of(model_file),
        "classes": list(model.class_names),
        "positive_class": model.class_names[1],
        "input_size": list(model.info.preprocess.size),
        "threshold": threshold_default,
        "graspcheck_version": __version__,
        "limits": {"max_body_bytes": limits.max_body_bytes, "max_pixels": limits.max_pixels,
                   "max_batch": limits.max_batch, "max_concurrent": limits.max_concurrent},
    }
    app = FastAPI(title="graspcheck", version=__version__,
                  description="Did the grasp succeed? Verdicts on camera images from a graspcheck model.")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.code, error.detail), error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0]
        where = problem.get("loc", ("", ""))[-1]
        code = "bad_threshold" if where == "threshold" else "bad_request"
        return JSONResponse(error_body(code, f"{where}: {problem.get('msg', 'invalid')}, got {problem.get('input')!r}"), 422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def model_info() -> dict:
        return info

    @app.post("/predict", openapi_extra=_IMAGE_BODY)
    async def predict(request: Request, threshold: float | None = _THRESHOLD) -> JSONResponse:
        """One image: a raw body with an image Content-Type, or multipart with one file part."""
        start = time.perf_counter()
        check_threshold(threshold)
        body = await read_body(request, limits.max_body_bytes)
        result = await verdicts.run(verdicts.classify_body, body, request.headers.get("content-type", ""), threshold, False)
        return JSONResponse({"label": result[0]["label"], "p_success": result[0]["p_success"],
                             "threshold": threshold_default if threshold is None else threshold,
                             "model": model.info.model, "latency_ms": milliseconds_since(start)})

    @app.post("/predict/batch", openapi_extra=_BATCH_BODY)
    async def predict_batch(request: Request, threshold: float | None = _THRESHOLD) -> JSONResponse:
        """Several images as file parts of one multipart body, up to the batch limit; verdicts in their order."""
        start = time.perf_counter()
        check_threshold(threshold)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_type", f"/predict/batch takes multipart/form-data with one file part per image, not {content_type or 'no Content-Type'}")
        body = await read_body(request, limits.max_body_bytes)
        result = await verdicts.run(verdicts.classify_body, body, content_type, threshold, True)
        return JSONResponse({"predictions": result, "threshold": threshold_default if threshold is None else threshold,
                             "model": model.info.model, "latency_ms": milliseconds_since(start)})

    @app.websocket("/stream")
    async def stream(websocket: WebSocket, smooth: int = 5, rule: str = "majority", threshold: float | None = None) -> None:
        """Send encoded frames as binary messages; each is answered with its verdict and the decision smoothed
        over the last `smooth` frames (rule: majority, mean or consecutive), or with an error for that frame."""
        await websocket.accept()
        problem = smoothing_problem(smooth, rule)
        if problem is None and threshold is not None and not 0 <= threshold <= 1:
            problem = f"threshold must be between 0 and 1, got {threshold:g}"
        if problem is not None:
            await websocket.send_json(error_body("bad_parameter", problem))
            await websocket.close(1008)
            return
        cut = threshold_default if threshold is None else threshold
        smoother = Smoother(smooth, rule, cut)
        rate = FrameRate()
        negative, positive = model.class_names
        frame = 0
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                start = time.perf_counter()
                data = message.get("bytes")
                try:
                    if data is None:
                        raise ApiError(400, "not_binary", "send each frame as a binary message holding an encoded image")
                    result = (await verdicts.run(verdicts.classify, [(f"frame {frame}", data)], cut))[0]
                except ApiError as error:
                    await websocket.send_json({"frame": frame, **error_body(error.code, error.detail)})
                else:
                    smoothed = positive if smoother.update(result["p_success"]) else negative
                    await websocket.send_json({"frame": frame, "label": result["label"], "p_success": result["p_success"],
                                               "smoothed": smoothed, "fps": round(rate.tick(), 2), "latency_ms": milliseconds_since(start)})
                frame += 1
        except WebSocketDisconnect:
            return

    if api_key is not None:
        app.add_middleware(ApiKeyCheck, api_key=api_key)
    return app


def load_for_serving(path: str | Path, onnx: bool = False, device: str = "auto") -> tuple[GraspModel, Path, str]:
    """The model, the file it came from and its runtime; onnx exports a checkpoint to ONNX first (into a
    temporary folder, removed once ONNX Runtime has read it)."""
    source = find_checkpoint(path)
    if not source.is_file():
        raise GraspcheckError(f"{source} does not exist; pass a checkpoint, a run folder or an exported .onnx file")
    if onnx and source.suffix != ".onnx":
        from .export import export

        with tempfile.TemporaryDirectory(prefix="graspcheck-serve-") as folder:
            return GraspModel.load(export(source, "onnx", Path(folder) / "model.onnx")), source, "onnxruntime"
    model = GraspModel.load(source, device)
    return model, source, "onnxruntime" if source.suffix == ".onnx" else "pytorch"


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host and port (0: a free port), so that a taken port is reported before the model loads."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted server need not wait for TIME_WAIT
        listener.bind(address)
    except OSError as error:
        raise GraspcheckError(f"cannot listen on {host} port {port}: {error.strerror or error}; choose another --port or --host") from None
    return listener


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, insecure: bool = False,
          onnx: bool = False, limits: Limits = Limits(), device: str = "auto", access_log: bool = False) -> None:
    """Serve verdicts until Ctrl-C (see the module's description and docs/serve.md); port 0 takes a free port."""
    import uvicorn

    check_exposure(host, api_key, insecure)
    listener = listen(host, port)
    model, model_file, runtime = load_for_serving(model_path, onnx, device)
    app = create_app(model, model_file, runtime, limits, api_key)
    bound_port = listener.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {model.info.model} ({runtime}) from {model_file} on http://{shown_host}:{bound_port}  (API docs: /docs)", flush=True)
    config = uvicorn.Config(app, host=host, port=bound_port, access_log=access_log, log_level="info" if access_log else "warning",
                            ws_max_size=limits.max_body_bytes, server_header=False)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again for its caller: a clean end here
        print("stopped", flush=True)
