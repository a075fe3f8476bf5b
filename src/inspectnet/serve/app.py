"""The inspection station's REST service and web page (FastAPI).

Endpoints:

- ``POST /v1/predict``: multipart upload, one or many images under the field ``files``;
  a JSON result per image (class, probabilities, verdict, review flag, threshold,
  timings); ``?cam=true`` adds a base64 PNG LayerCAM heatmap of the positive class;
- ``GET /v1/model``: the model card plus the service limits; ``GET /v1/stats``: the
  batcher's counters (batches, images, mean batch, drain rate, expected wait);
- ``GET /healthz`` (process alive), ``GET /readyz`` (model loaded, warm-up image answered
  with finite outputs; 503 with the reason otherwise);
- ``GET /docs`` (OpenAPI UI), ``GET /`` (the web page, ``static/``).

Robustness rules, each with a test:

- every bad input is a 4xx with ``{"detail": reason}``, and the process stays up; a model
  output that is not finite for an image is that request's 422, never NaN in the JSON;
- the body is limited twice: by ``Content-Length`` before reading, and by counting bytes
  while reading (a chunked or lying client cannot push more);
- uploads are decoded from memory, per request, on a thread pool; no path is ever built
  from a client's file name;
- inference never runs on the event loop: decoded images go to the dynamic batcher
  (``batcher.py``), which runs the images of requests arriving within ``batch_wait_ms``
  of each other as one batch of at most ``max_batch``;
- admission by expected wait (load shedding): a request is admitted when the images ahead
  of it, at the measured drain rate, would be done within ``max_wait_ms``; otherwise it
  gets 503 at once, with ``Retry-After`` the seconds the backlog needs to drain;
- with ``token``, ``/v1/*`` needs ``Authorization: Bearer <token>`` (401 otherwise);
  health probes and the page itself stay open so that the page can ask for the token;
- SIGTERM (:func:`run_server`): stop accepting, answer every admitted request, drain the
  batcher, exit 0 within ``grace`` seconds.

Heatmaps with the ONNX engine: ONNX Runtime has no gradients, so for ``cam=true`` the
service loads the torch network of the same run once, lazily, and computes the map with
it (on a thread of its own, after the batch); the probabilities still come from the main
engine, through the batcher.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import io
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .._version import __version__
from ..card import read_card
from ..data.pixels import MAX_PIXELS, _to_rgb_array, upright
from ..errors import ConfigError, DataError
from ..station import RowPredictor, Station, default_threads, gpu_present, onnx_is_fresh
from .batcher import BatchResult, Batcher, Ticket

# Without torch (the station install: `pip install 'inspectnet[serve]'`) the service runs the
# exported model on ONNX Runtime; torch is imported only for the torch engine and heatmaps.
BasePredictor = RowPredictor  # the interface a service's predictor has (kept for callers)
CAM_NEEDS_TORCH = ("heatmaps (?cam=true) need Grad-CAM's gradients, i.e. the full install with torch "
                   "(pip install 'inspectnet[train]'); this service runs the exported model without it")

STATIC = Path(__file__).parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
WARMING = "warming up: the model has not answered its warm-up image yet"


class UploadError(DataError):
    """A client file (or body) that cannot be used: carries the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyTooLarge(Exception):
    pass


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode uploaded bytes to a ``(3, H, W)`` uint8 array, from memory.

    Mirrors ``inspectnet.data.decode.decode_image`` (same colour handling) with HTTP
    statuses attached to each way it can fail.

    Raises:
        UploadError: 422 empty or truncated/corrupt, 415 not an image, 413 too many pixels.
    """
    if not data:
        raise UploadError(422, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size  # read from the header: nothing is decoded yet
                if w * h > max_pixels:
                    raise UploadError(413, f"image is {w}x{h} = {w * h / 1e6:.1f} MP, over the "
                                           f"{max_pixels / 1e6:.1f} MP limit")
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()
                arr = _to_rgb_array(upright(img))
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(413, f"image is over the {max_pixels / 1e6:.1f} MP limit (decompression-bomb guard): {e}") from None
    except UnidentifiedImageError:
        raise UploadError(415, "not an image file (no decoder recognises its content)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(422, f"corrupt or truncated image: {e}") from None
    # HWC -> CHW by numpy (one plain copy: Pillow's arrays are read-only views). A torch copy
    # would start an OpenMP parallel region on this decode thread, whose idle workers then
    # spin: measured 2x the CPU per request.
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _label(i: int, n: int, name: str) -> str:
    return f"file {i + 1} of {n} ({name!r})" if n > 1 else f"{name!r}"


class HeapTrimmer:
    """Hand the heap that a burst of uploads left free back to the system, when idle.

    Uploads in flight are held in memory (50 clients' PNGs: about 60 MB here); once answered
    their memory is free but glibc keeps it, so a server that once saw a burst would hold its
    peak for good (274 MB after 50 clients, 221 MB before). ``malloc_trim`` returns the free
    pages, at most once per ``interval`` seconds and only when no request is in the system,
    on a thread of its own. Where the C library is not glibc it does nothing.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last = -interval
        self.pending = False  # a timer is set (only the event loop thread sets it)
        self._trim = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                self._trim = None

    def trim_soon(self) -> None:
        """Trim now, or once ``interval`` has passed since the last trim (so that the end of
        a burst is always trimmed); one pending trim at a time."""
        if self._trim is None or self.pending:
            return
        self.pending = True
        timer = threading.Timer(max(0.0, self.interval - (time.monotonic() - self.last)), self._run)
        timer.daemon = True
        timer.name = "inspectnet-trim"
        timer.start()

    def _run(self) -> None:
        self.last = time.monotonic()
        self.pending = False
        self._trim(0)


def check_limits(max_upload_mb: float, max_batch: int, workers: int, batch_wait_ms: float, max_wait_ms: float,
                 queue_size: int | None = None, grace: float = 10.0, port: int = 8000) -> None:
    """The service options' allowed ranges (the CLI checks the same before anything loads).

    Raises:
        ConfigError: naming the flag, the value and what is allowed.
    """
    rules = [("--max-upload-mb", max_upload_mb, max_upload_mb > 0, "> 0"),
             ("--max-batch", max_batch, max_batch >= 1, ">= 1"), ("--workers", workers, workers >= 1, ">= 1"),
             ("--batch-wait-ms", batch_wait_ms, batch_wait_ms >= 0, ">= 0"),
             ("--max-wait-ms", max_wait_ms, max_wait_ms > 0, "> 0"), ("--grace", grace, grace >= 0, ">= 0"),
             ("--port", port, 1 <= port <= 65535, "in 1..65535"),
             ("--queue-size", queue_size, queue_size is None or queue_size >= 0, ">= 0")]
    for flag, value, ok, allowed in rules:
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{flag} must be {allowed}, got {value}")


class InferenceService:
    """The predictor, the batcher in front of it, the decode threads and the readiness."""

    def __init__(self, run: str | Path, predictor: BasePredictor, workers: int, max_batch: int,
                 batch_wait_ms: float, max_wait_ms: float, queue_size: int | None, max_pixels: int,
                 review_margin: float) -> None:
        self.run = run
        self.predictor = predictor
        self.workers = workers
        self.max_wait = max_wait_ms / 1e3
        # An optional hard cap on requests in the system, on top of the wait rule.
        self.capacity = None if queue_size is None else workers + queue_size
        self.max_pixels = max_pixels
        self.review_margin = review_margin
        predictor.review_margin = review_margin  # one review rule for REST, the page and predict
        self.batcher = Batcher(predictor.predict_batch, max_batch, batch_wait_ms / 1e3, workers)
        self.decoder = ThreadPoolExecutor(max_workers=max(default_threads(), 2), thread_name_prefix="inspectnet-decode")
        self.cam_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspectnet-cam")
        self.in_system = 0  # touched only on the event loop thread: no lock needed
        self.heap = HeapTrimmer()
        self.ready = threading.Event()
        self.failed = False  # the warm-up showed the model unusable: stays unready
        self.reason = WARMING
        self._cam_pred: BasePredictor | None = None
        self._cam_lock = threading.Lock()
        self.served = 0  # images answered
        self.shed = 0  # requests refused with 503 (busy)
        self.admitted = 0  # requests admitted, and of those answered (2xx or 4xx)
        self.answered = 0

    def cam_predictor(self) -> BasePredictor:
        """The torch engine for heatmaps, made on first use: loaded from the run when the
        main engine is ONNX, else a copy of the main one. Never the batcher's own network:
        LayerCAM hooks into the modules it runs, and a batch passing through them meanwhile
        would be caught by those hooks."""
        with self._cam_lock:
            if self._cam_pred is None:
                if self.predictor.can_explain:
                    self._cam_pred = copy.deepcopy(self.predictor)
                else:
                    try:
                        from ..predict.torch_predictor import Predictor
                    except ImportError:
                        raise UploadError(501, CAM_NEEDS_TORCH) from None
                    self._cam_pred = Predictor(self.run, device="cpu")
            return self._cam_pred

    def warm_up(self) -> None:
        """Run the warm-up image and check its outputs: ready only when they are finite.
        Then a full batch on every worker at once, twice: the engine allocates its peak
        memory now rather than under the first load, and the second round is the first
        measure of the drain rate."""
        s, n, w = self.predictor.img_size, self.batcher.max_batch, self.workers
        try:
            probs = np.asarray(self.predictor.predict_batch(np.zeros((1, 3, s, s), np.uint8)), dtype=np.float64)
            full, dt = np.zeros((n, 3, s, s), np.uint8), 0.0
            with ThreadPoolExecutor(max_workers=w) as pool:
                for _ in range(2 if np.isfinite(probs).all() else 0):  # the first round allocates
                    t = time.perf_counter()
                    list(pool.map(self.predictor.predict_batch, [full] * w))
                    dt = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - reported by /readyz, not a crash
            self.failed, self.reason = True, f"warm-up failed: {type(e).__name__}: {e}"
            return
        if not np.isfinite(probs).all():
            self.failed = True
            self.reason = (f"the model gives non-finite outputs ({_nonfinite(probs)}) for the warm-up image; "
                           "not serving (check the run's weights)")
            return
        self.batcher.measure(n, dt)
        self.reason = ""
        self.ready.set()

    def decode(self, blobs: list[bytes], names: list[str]) -> tuple[np.ndarray, list[tuple[int, int]], list[float]]:
        """Decode and resize one request's images (on a decode thread)."""
        s = self.predictor.img_size
        imgs, sizes, decode_ms = [], [], []
        for i, (data, name) in enumerate(zip(blobs, names)):
            t = time.perf_counter()
            try:
                img = decode_upload(data, self.max_pixels)
            except UploadError as e:
                raise UploadError(e.status, f"{_label(i, len(blobs), name)}: {e.reason}") from None
            sizes.append((int(img.shape[2]), int(img.shape[1])))
            imgs.append(self.predictor.resize(img, s))  # as the engine resizes files: same pixels
            decode_ms.append((time.perf_counter() - t) * 1e3)
        return (imgs[0][None] if len(imgs) == 1 else np.stack(imgs)), sizes, decode_ms

    def admit(self) -> JSONResponse | Ticket:
        """The 503 for a request that cannot be admitted now, else its ticket (which the
        caller must :meth:`~Batcher.submit` or :meth:`~Batcher.release`)."""
        if not self.ready.is_set():
            return _json_error(503, f"not ready: {self.reason}", None if self.failed else {"Retry-After": "1"})
        if self.capacity is not None and self.in_system >= self.capacity:
            self.shed += 1
            retry = max(1, math.ceil(self.batcher.expected_wait()))
            return _json_error(503, f"busy: {self.in_system} requests in progress or queued "
                                    f"(capacity {self.capacity}); retry later", {"Retry-After": str(retry)})
        ticket = self.batcher.admit(self.max_wait)
        if not isinstance(ticket, Ticket):
            self.shed += 1
            return _json_error(503, f"busy: the expected wait is {self.batcher.expected_wait() * 1e3:.0f} ms, over the "
                                    f"{self.max_wait * 1e3:g} ms limit; retry later", {"Retry-After": str(ticket)})
        return ticket

    def _decode_and_submit(self, blobs: list[bytes], names: list[str], ticket: Ticket) -> tuple[Any, ...]:
        """On a decode thread: decode, then queue for the batcher from here (one thread
        hand-off less on the way than going back through the event loop)."""
        t = time.perf_counter()
        try:
            x, sizes, decode_ms = self.decode(blobs, names)
        except BaseException:
            self.batcher.release(ticket)
            raise
        return x, sizes, decode_ms, time.perf_counter() - t, self.batcher.submit(ticket, x)

    async def infer(self, blobs: list[bytes], names: list[str], want_cam: bool, t_admit: float,
                    ticket: Ticket) -> dict[str, Any]:
        """Decode (thread pool), classify (batcher) and explain (cam thread) one admitted
        request; its ticket is submitted or released on the way."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        x, sizes, decode_ms, decode_s, fut = await loop.run_in_executor(
            self.decoder, self._decode_and_submit, blobs, names, ticket)
        if fut is None:  # released meanwhile: the request is being cancelled
            raise asyncio.CancelledError
        res: BatchResult = await asyncio.wrap_future(fut)
        t2 = time.perf_counter()
        for i, p in enumerate(res.probs):
            if not np.isfinite(p).all():
                raise UploadError(422, f"{_label(i, len(names), names[i])}: the model gave non-finite outputs "
                                       f"({_nonfinite(p)}) for this image")
        cams = await loop.run_in_executor(self.cam_executor, self._cams, x) if want_cam else None
        t3 = time.perf_counter()
        results = [self._item(names[i], p, sizes[i], decode_ms[i], res) for i, p in enumerate(res.probs)]
        if cams is not None:
            from ..explain.overlay import heatmap_png_bytes

            for item, cam in zip(results, cams):
                item["heatmap_png"] = base64.b64encode(heatmap_png_bytes(cam)).decode("ascii")
                item["timings_ms"]["cam"] = round((t3 - t2) * 1e3 / len(results), 3)
        self.served += len(results)
        return {
            "results": results,
            "engine": self.predictor.engine,
            "model": self.predictor.card.architecture,
            "batch_size": res.batch_size,
            "timings_ms": {"admit": round((t0 - t_admit) * 1e3, 3), "decode": round(decode_s * 1e3, 3),
                           "queue": round(res.queue_ms, 3), "infer": round(res.infer_ms, 3),
                           "cam": round((t3 - t2) * 1e3, 3)},
        }

    def _cams(self, x: np.ndarray) -> np.ndarray:
        pred = self.cam_predictor()  # 501 without torch
        import torch

        return pred.cams(torch.from_numpy(np.ascontiguousarray(x)))

    def _item(self, name: str, p: np.ndarray, size: tuple[int, int], decode_ms: float,
              res: BatchResult) -> dict[str, Any]:
        card = self.predictor.card
        r = self.predictor.result(name, p)
        p_pos = float(p[card.positive_index])
        return {
            "name": name,
            "class": r["class"],
            "verdict": r["verdict"],
            "review": r["review"],
            "review_reason": r["review_reason"],
            "probability": r["probability"],
            "positive_class": card.positive_class,
            "p_positive": p_pos,
            "probabilities": r["probabilities"],
            **({"anomaly_score": r["anomaly_score"]} if "anomaly_score" in r else {}),
            "threshold": r["threshold"],
            "decision": self.predictor.decision.describe(card.classes),
            "width": size[0],
            "height": size[1],
            "timings_ms": {"decode": round(decode_ms, 3), "infer_batch": round(res.infer_ms, 3)},
        }

    def status(self) -> dict[str, Any]:
        body = {"ready": self.ready.is_set(), "engine": self.predictor.engine, "in_flight": self.in_system,
                "capacity": self.capacity, "served": self.served, "shed": self.shed,
                "admitted": self.admitted, "answered": self.answered,
                "max_wait_ms": self.max_wait * 1e3, "batcher": self.batcher.stats()}
        if not self.ready.is_set():
            body["reason"] = self.reason
        return body


def _nonfinite(a: np.ndarray) -> str:
    a = np.asarray(a)
    return f"{int(np.isnan(a).sum())} NaN, {int(np.isinf(a).sum())} inf of {a.size} values"


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                     "description": "One or more images (PNG, JPEG, BMP, TIFF, WebP...)."}},
        }}},
    }
}
PREDICT_RESPONSES = {413: {"description": "body, batch or image too large"},
                     415: {"description": "not multipart, or a file that is not an image"},
                     422: {"description": "empty, truncated or missing file; or a non-finite model output"},
                     503: {"description": "expected wait over the limit, warming up or unready; see Retry-After"}}


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _check_headers(request: Request, max_bytes: int, max_upload_mb: float) -> JSONResponse | None:
    """A 4xx for a request that its headers already rule out, else None."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        return _json_error(415, f"send multipart/form-data with the images under the field 'files' "
                                f"(got content-type {ctype or 'none'!r})")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            return _json_error(400, f"bad Content-Length header {length!r}")
        if n > max_bytes:
            return _json_error(413, f"request body is {n / 1e6:.1f} MB, over the {max_upload_mb:g} MB limit")
    return None


async def _read_files(request: Request, max_bytes: int, max_upload_mb: float, max_batch: int,
                      forms: list[Any]) -> tuple[list[bytes], list[str]]:
    """The uploaded files' bytes and names (labels only, never paths). The parsed form is
    appended to ``forms`` for the caller to close.

    Raises:
        UploadError: 413 body or file count over the limit, 422 malformed or no files.
    """
    seen = 0

    async def limited() -> AsyncIterator[bytes]:
        # Counts what actually arrives: Content-Length may be absent (chunked) or lie.
        nonlocal seen
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > max_bytes:
                raise BodyTooLarge
            yield chunk

    try:
        form = await MultiPartParser(request.headers, limited(), max_files=max_batch, max_fields=16).parse()
    except BodyTooLarge:
        raise UploadError(413, f"request body is over the {max_upload_mb:g} MB limit") from None
    except MultiPartException as e:
        if "files" in e.message.lower() and "maximum" in e.message.lower():
            raise UploadError(413, f"more than {max_batch} files in one request (the limit); split the batch") from None
        raise UploadError(422, f"malformed multipart body: {e.message}") from None
    forms.append(form)
    uploads = form.getlist("files")
    if not uploads:
        raise UploadError(422, "no files: send the images under the multipart field 'files'")
    if any(not isinstance(u, UploadFile) for u in uploads):
        raise UploadError(422, "the field 'files' must hold files, not text values")
    blobs = [await u.read() for u in uploads]
    names = [(u.filename or f"file{i + 1}")[:255] for i, u in enumerate(uploads)]
    return blobs, names


async def _answer(request: Request, svc: InferenceService, ticket: Ticket, cam: bool, max_bytes: int,
                  max_upload_mb: float, max_batch: int) -> JSONResponse:
    """An admitted request, read, decoded, batched and answered (a 4xx for a bad upload)."""
    t_admit = time.perf_counter()
    forms: list[Any] = []
    try:
        blobs, names = await _read_files(request, max_bytes, max_upload_mb, max_batch, forms)
        out = await svc.infer(blobs, names, cam, t_admit, ticket)
        out["timings_ms"]["total"] = round((time.perf_counter() - t_admit) * 1e3, 3)
        return JSONResponse(out)
    except UploadError as e:
        return _json_error(e.status, e.reason)
    finally:
        svc.batcher.release(ticket)  # a no-op once it was queued
        for form in forms:
            await form.close()


def _build_predictor(run: str | Path, engine: str, device: str, workers: int) -> RowPredictor:
    read_card(run)  # a clear error for a wrong folder before anything heavy loads
    threads = max(default_threads() // workers, 1)
    cpu = device == "cpu" or (device == "auto" and not gpu_present())
    if cpu and (engine == "onnx" or (engine == "auto" and onnx_is_fresh(run))):
        # The station: ONNX Runtime without torch. No spinning: idle ORT threads would
        # busy-wait on the cores the event loop needs.
        return Station(run, threads=threads, spin=False)
    import torch

    from ..predict import make_predictor, resolve_engine

    if device == "auto":  # resolved here, so that the CPU's thread share below applies to it
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = resolve_engine(run, engine, device)
    predictor = make_predictor(run, engine=chosen, device=device, threads=threads, spin=False)
    if device == "cpu":
        # torch's pool is process-wide: give the workers a share each, not all cores each.
        # With ONNX Runtime too: torch still decodes and resizes the uploads, one request
        # per thread, and idle OpenMP workers of a bigger pool spin on the cores.
        torch.set_num_threads(threads)
    return predictor


def create_app(run: str | Path, engine: str = "auto", token: str | None = None, max_upload_mb: float = 20,
               max_batch: int = 32, queue_size: int | None = None, workers: int | None = None, device: str = "cpu",
               review_margin: float = 0.1, max_pixels: int = MAX_PIXELS, predictor: BasePredictor | None = None,
               batch_wait_ms: float = 3.0, max_wait_ms: float = 1000.0) -> FastAPI:
    """Build the service for a run folder.

    Args:
        run: Run folder (or its ``model/`` folder).
        engine: ``auto`` | ``torch`` | ``onnx`` (auto: ONNX Runtime when exported).
        token: When set, ``/v1/*`` requires ``Authorization: Bearer <token>``.
        max_upload_mb: Largest request body in MB (10^6 bytes); more is 413.
        max_batch: Most images in one inference batch, and so most files per request
            (more is 413).
        queue_size: Optional hard cap: with it, more than ``workers + queue_size``
            requests in the system get 503 whatever the expected wait. Default: no cap,
            admission by ``max_wait_ms`` alone.
        workers: Inference threads taking batches (default: one per core), each with an
            equal share of the cores: while one runs a batch the next gathers its own, and
            on 2 cores 2 single-threaded workers answered more than 1 two-threaded one.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees a GPU).
        review_margin: A result within this of the decision boundary (``|p_positive - threshold|``,
            or half the gap between the two most probable classes) is marked for human review;
            so is one where the run's operating point overrides the most probable class.
        max_pixels: Largest image (width x height) accepted; more is 413.
        predictor: A ready predictor to use instead of building one (tests, embedding).
        batch_wait_ms: How long a batch may wait for more images after its first, while
            admitted requests are still being read or decoded.
        max_wait_ms: Admit a request only when its expected wait (images ahead / drain
            rate) is below this; else 503 with ``Retry-After``.

    Returns:
        The FastAPI application (run it with :func:`run_server` or uvicorn).

    Raises:
        ConfigError / ModelError: bad limits, an unknown engine, or an unusable run folder.
    """
    workers = default_threads() if workers is None else workers
    check_limits(max_upload_mb, max_batch, workers, batch_wait_ms, max_wait_ms, queue_size)
    if predictor is None:
        predictor = _build_predictor(run, engine, device, workers)
    svc = InferenceService(run, predictor, workers, max_batch, batch_wait_ms, max_wait_ms, queue_size,
                           max_pixels, review_margin)
    card = predictor.card

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Warm up off the loop: /healthz answers meanwhile, /readyz only after.
        svc.batcher.start()
        threading.Thread(target=svc.warm_up, name="inspectnet-warmup", daemon=True).start()
        try:
            yield
        finally:
            # uvicorn calls this after every connection is answered (or the grace ran
            # out): what is still queued is answered before the workers stop.
            await asyncio.to_thread(svc.batcher.close, 5.0)
            svc.decoder.shutdown(wait=False, cancel_futures=True)
            svc.cam_executor.shutdown(wait=False, cancel_futures=True)

    # docs_url=None: FastAPI's default /docs loads Swagger UI from a CDN, a blank page on a
    # factory network. We serve the same UI from the swagger-ui-bundle package instead.
    app = FastAPI(title="inspectnet", version=__version__, lifespan=lifespan, docs_url=None,
                  description=f"Inspection service for `{card.architecture}` "
                              f"({', '.join(card.classes)}; positive class `{card.positive_class}`).")
    app.state.service = svc
    limits = {"max_upload_mb": max_upload_mb, "max_batch": max_batch, "max_pixels": max_pixels,
              "workers": workers, "queue_size": queue_size, "batch_wait_ms": batch_wait_ms,
              "max_wait_ms": max_wait_ms}
    _add_routes(app, svc, _auth_dependency(token), limits)
    _mount_offline_docs(app)
    return app


def _auth_dependency(token: str | None):  # noqa: ANN202 - a FastAPI dependency
    async def auth(request: Request) -> None:
        if token is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            reason = "missing Authorization header" if not got else "wrong token"
            raise HTTPException(401, f"{reason}: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    return auth


def _add_routes(app: FastAPI, svc: InferenceService, auth: Any, limits: dict[str, Any]) -> None:
    card = svc.predictor.card
    max_upload_mb, max_batch = limits["max_upload_mb"], limits["max_batch"]
    max_bytes = int(max_upload_mb * 1_000_000)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug must cost one request, not the station: answer JSON and keep serving.
        return _json_error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and answered its warm-up image with finite
        outputs (503 with the reason otherwise); the batcher's counters."""
        ready = svc.ready.is_set()
        return JSONResponse(svc.status(), status_code=200 if ready else 503,
                            headers=None if ready or svc.failed else {"Retry-After": "1"})

    @app.get("/v1/stats", tags=["ops"], dependencies=[Depends(auth)])
    async def stats() -> dict[str, Any]:
        """Service counters: requests served and shed, the batcher's batches, images,
        mean batch, drain rate and the expected wait of a new request."""
        return svc.status()

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(auth)])
    async def model_card() -> dict[str, Any]:
        """The model card (classes, threshold, input size, metrics...) and the service limits."""
        return {
            "card": asdict(card),
            "decision": svc.predictor.decision.describe(card.classes),
            "engine": svc.predictor.engine,
            "cam_available": svc.predictor.can_explain or _torch_weights_present(svc.run),
            "review_margin": svc.review_margin,
            "limits": limits,
        }

    @app.post("/v1/predict", tags=["model"], dependencies=[Depends(auth)], openapi_extra=PREDICT_BODY,
              responses=PREDICT_RESPONSES)
    async def predict(request: Request, cam: bool = Query(False, description="Add a LayerCAM heatmap of the positive class (base64 PNG).")
                      ) -> JSONResponse:
        """Classify one or more uploaded images (multipart field ``files``)."""
        ticket = _check_headers(request, max_bytes, max_upload_mb) or svc.admit()
        if not isinstance(ticket, Ticket):
            return ticket
        svc.in_system += 1
        svc.admitted += 1
        try:
            response = await _answer(request, svc, ticket, cam, max_bytes, max_upload_mb, max_batch)
            svc.answered += 1
            return response
        finally:
            svc.in_system -= 1
            if svc.in_system == 0:
                svc.heap.trim_soon()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                            "X-Content-Type-Options": "nosniff",
                                                            "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, grace: float = 10.0) -> int:
    """Serve ``app`` with uvicorn until SIGINT or SIGTERM; the process's exit status.

    On SIGTERM uvicorn stops accepting connections, closes the idle ones, lets every
    admitted request finish (at most ``grace`` seconds), then the app's shutdown drains
    the batcher. uvicorn would then raise the signal again (the process "dies by
    SIGTERM", status -15); a drained stop is a clean one, so this returns 0 instead.

    Returns:
        0 after a stop on a signal; 3 when the server could not start (port in use...).
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and isinstance(captured, list):
                captured[:] = [s for s in captured if s != signal.SIGTERM]

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=grace)
    server = DrainingServer(config)
    server.run()
    svc = getattr(app.state, "service", None)
    if server.started and isinstance(svc, InferenceService):
        print(f"inspectnet serve: stopped; answered {svc.answered} of {svc.admitted} admitted requests",
              file=sys.stderr, flush=True)
    return 0 if server.started else 3


def _torch_weights_present(run: str | Path) -> bool:
    """Whether a torch engine could be made for heatmaps: torch installed, weights there."""
    import importlib.util

    from ..card import model_dir

    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked torch counts as none
        has_torch = False
    return has_torch and (model_dir(run) / "weights.safetensors").is_file()


def _mount_offline_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI served from the installed swagger-ui-bundle (no CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the page is optional; /openapi.json always works
        return
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="inspectnet API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")
