"""The Python side of ``graspcheck serve``: verdicts from a server on this machine or another, as the same
Prediction objects that GraspModel.predict returns.

    client = graspcheck.Client("http://robot-pc:8000", api_key="...")
    client.predict("frame.png")                     # [Prediction(source='frame.png', label='success', ...)]
    for verdict in client.stream(camera_frames):    # WebSocket: one FrameVerdict per frame, smoothed
        ...
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Iterator, Union

import httpx
import numpy as np
from PIL import Image

from .console import GraspcheckError
from .images import expand_paths
from .verdict import Prediction
from .watch import FrameRate, FrameVerdict

ClientImage = Union[str, Path, Image.Image, np.ndarray, bytes]


class ServerError(GraspcheckError):
    """The server refused a request; status is the HTTP status, code the server's error code."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"the server refused the request ({status} {code}): {detail}")
        self.status, self.code, self.detail = status, code, detail


def encode(image: ClientImage) -> bytes:
    """The bytes to send for an image: a file's own bytes (the server decodes exactly what `graspcheck predict`
    would), bytes as they are, an in-memory image as a lossless PNG (compression level 1: a few ms, not tens)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    raise TypeError(f"an image is a path, PIL image, RGB uint8 array or encoded bytes, not {type(image).__name__}")


def _named(images: ClientImage | Iterable[ClientImage]) -> list[tuple[str, ClientImage]]:
    """(source, image) for each input, named as GraspModel.predict names them; folders expand to their images,
    and a missing path is an error, as GraspModel.predict's are."""
    if isinstance(images, (str, Path, Image.Image, np.ndarray, bytes, bytearray, memoryview)):
        images = [images]
    named: list[tuple[str, ClientImage]] = []
    for position, item in enumerate(images):
        if isinstance(item, (str, Path)):
            named.extend((str(path), path) for path in expand_paths([item]))
        else:
            named.append((f"<image {position}>", item))
    return named


def _raise_for_error(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.is_success:
        return body
    raise ServerError(response.status_code, body.get("error", "http_error"), body.get("detail", response.text[:200]))


class Client:
    """A connection to a ``graspcheck serve`` server; one keep-alive connection per thread that uses it."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)
        self._max_batch: int | None = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs) -> dict:
        try:
            return _raise_for_error(self.http.request(method, path, **kwargs))
        except httpx.TransportError as error:
            raise GraspcheckError(f"cannot reach the graspcheck server at {self.url}: {error}") from None

    def health(self) -> bool:
        """True when the server answers /health."""
        try:
            return self._request("GET", "/health").get("status") == "ok"
        except GraspcheckError:
            return False

    def info(self) -> dict:
        """The server's model: name, runtime, classes, input size, threshold, sha256 of its file, limits."""
        return self._request("GET", "/info")

    def predict(self, images: ClientImage | Iterable[ClientImage], threshold: float | None = None) -> list[Prediction]:
        """Verdicts for image files, folders, PIL images, RGB uint8 arrays or encoded bytes, in input order.

        One image goes to /predict; several go to /predict/batch, in batches of the server's limit. A bad
        image raises ServerError naming it."""
        named = _named(images)
        if not named:
            return []
        params = {"threshold": threshold} if threshold is not None else None
        if len(named) == 1:
            source, image = named[0]
            body = self._request("POST", "/predict", content=encode(image), params=params,
                                 headers={"Content-Type": "application/octet-stream"})
            return [Prediction(source, body["label"], body["p_success"])]
        if self._max_batch is None:
            self._max_batch = int(self.info()["limits"]["max_batch"])
        predictions = []
        for start in range(0, len(named), self._max_batch):
            chunk = named[start : start + self._max_batch]
            files = [("images", (source, encode(image), "application/octet-stream")) for source, image in chunk]
            body = self._request("POST", "/predict/batch", files=files, params=params)
            predictions.extend(Prediction(source, p["label"], p["p_success"]) for (source, _), p in zip(chunk, body["predictions"]))
        return predictions

    def stream(self, frames: Iterable[ClientImage], smooth: int = 5, rule: str = "majority",
               threshold: float | None = None) -> Iterator[FrameVerdict]:
        """Send frames over the /stream WebSocket, one at a time as the iterable gives them (a camera's
        frames, say), and yield each one's verdict with the decision smoothed over the last `smooth` frames."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        query = f"smooth={smooth}&rule={rule}" + (f"&threshold={threshold}" if threshold is not None else "")
        address = "ws" + self.url.removeprefix("http") + "/stream?" + query
        try:
            socket = connect(address, additional_headers=self.headers, open_timeout=self.timeout, max_size=None)
        except InvalidStatus as error:
            status = error.response.status_code
            hint = "; is the API key right?" if status == 403 else ""
            raise ServerError(status, "refused", f"the server refused the WebSocket{hint}") from None
        except (OSError, WebSocketException) as error:
            raise GraspcheckError(f"cannot reach the graspcheck server at {self.url}: {error}") from None
        rate = FrameRate()
        with socket:
            for index, frame in enumerate(frames):
                socket.send(encode(frame))
                reply = json.loads(socket.recv(timeout=self.timeout))
                if "error" in reply:
                    raise ServerError(400, reply["error"], reply["detail"])
                source = str(frame) if isinstance(frame, (str, Path)) else str(index)
                yield FrameVerdict(index, source, reply["label"], reply["p_success"], reply["smoothed"], rate.tick())
