"""The inspection station's REST service and web page (FastAPI).

Endpoints:

- ``POST /v1/predict``: multipart upload, one or many images under the field ``files``;
  a JSON result per image (class, probabilities, verdict, review flag, threshold,
  timings); ``?cam=true`` adds a base64 PNG LayerCAM heatmap of the positive class;
- ``GET /v1/model``: the model card plus the service limits;
- ``GET /healthz`` (process alive), ``GET /readyz`` (model loaded and warmed up);
- ``GET /docs`` (OpenAPI UI), ``GET /`` (the web page, ``static/``).

Robustness rules, each with a test:

- every bad input is a 4xx with ``{"detail": reason}``, and the process stays up;
- the body is limited twice: by ``Content-Length`` before reading, and by counting bytes
  while reading (a chunked or lying client cannot push more);
- uploads are decoded from memory; no path is ever built from a client's file name;
- inference runs on worker threads, never on the event loop, behind a bounded queue: when
  ``workers + queue_size`` requests are already admitted, the next gets 503 with
  ``Retry-After`` at once instead of waiting unboundedly (load shedding);
- with ``token``, ``/v1/*`` needs ``Authorization: Bearer <token>`` (401 otherwise);
  health probes and the page itself stay open so that the page can ask for the token.

Heatmaps with the ONNX engine: ONNX Runtime has no gradients, so for ``cam=true`` the
service loads the torch network of the same run once, lazily, and computes the map with
it; the probabilities still come from the main engine.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
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
import torch
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .._version import __version__
from ..bundle import read_card
from ..data.decode import MAX_PIXELS, _to_rgb_array, resize_uint8
from ..errors import ConfigError
from ..explain.overlay import heatmap_png_bytes
from ..predict import BasePredictor, Predictor, default_threads, make_predictor, resolve_engine

STATIC = Path(__file__).parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class UploadError(Exception):
    """A client file that cannot be used: carries the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyTooLarge(Exception):
    pass


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode uploaded bytes to a ``(3, H, W)`` uint8 tensor, from memory.

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
                arr = _to_rgb_array(img)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(413, f"image is over the {max_pixels / 1e6:.1f} MP limit (decompression-bomb guard): {e}") from None
    except UnidentifiedImageError:
        raise UploadError(415, "not an image file (no decoder recognises its content)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(422, f"corrupt or truncated image: {e}") from None
    # Pillow's arrays are read-only views; torch wants memory it may own.
    return torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(2, 0, 1).contiguous()


class InferenceService:
    """The predictor, its worker threads and the admission counter of the bounded queue."""

    def __init__(self, run: str | Path, predictor: BasePredictor, workers: int, queue_size: int,
                 max_pixels: int) -> None:
        self.run = run
        self.predictor = predictor
        self.workers = workers
        self.capacity = workers + queue_size
        self.max_pixels = max_pixels
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inspectnet-infer")
        self.in_system = 0  # touched only on the event loop thread: no lock needed
        self.ready = threading.Event()
        self._cam_pred: BasePredictor | None = predictor if predictor.can_explain else None
        self._cam_lock = threading.Lock()
        self.served = 0

    def cam_predictor(self) -> BasePredictor:
        """The torch engine for heatmaps, loaded on first use when the main engine is ONNX."""
        with self._cam_lock:
            if self._cam_pred is None:
                self._cam_pred = Predictor(self.run, device="cpu")
            return self._cam_pred

    def warm_up(self) -> None:
        s = self.predictor.img_size
        self.predictor.predict_batch(torch.zeros(1, 3, s, s, dtype=torch.uint8))
        self.ready.set()

    def infer(self, blobs: list[bytes], names: list[str], want_cam: bool, t_admit: float,
              review_margin: float) -> dict[str, Any]:
        """Decode, classify and (optionally) explain one request's images; runs on a worker."""
        t0 = time.perf_counter()
        s = self.predictor.img_size
        imgs, sizes, decode_ms = [], [], []
        for i, (data, name) in enumerate(zip(blobs, names)):
            t = time.perf_counter()
            try:
                img = decode_upload(data, self.max_pixels)
            except UploadError as e:
                label = f"file {i + 1} of {len(blobs)} ({name!r})" if len(blobs) > 1 else f"{name!r}"
                raise UploadError(e.status, f"{label}: {e.reason}") from None
            sizes.append((int(img.shape[2]), int(img.shape[1])))
            imgs.append(resize_uint8(img, s))
            decode_ms.append((time.perf_counter() - t) * 1e3)
        x = torch.stack(imgs)
        t1 = time.perf_counter()
        probs = self.predictor.predict_batch(x)
        t2 = time.perf_counter()
        cams = self.cam_predictor().cams(x) if want_cam else None
        t3 = time.perf_counter()

        card = self.predictor.card
        pos = card.positive_index
        results = []
        for i, p in enumerate(probs):
            r = self.predictor.result(names[i], p)
            p_pos = float(p[pos])
            item: dict[str, Any] = {
                "name": names[i],
                "class": r["class"],
                "verdict": r["verdict"],
                "review": abs(p_pos - card.threshold) < review_margin,
                "probability": r["probability"],
                "positive_class": card.positive_class,
                "p_positive": p_pos,
                "probabilities": r["probabilities"],
                "threshold": card.threshold,
                "width": sizes[i][0],
                "height": sizes[i][1],
                "timings_ms": {"decode": round(decode_ms[i], 3), "infer_batch": round((t2 - t1) * 1e3, 3)},
            }
            if cams is not None:
                item["heatmap_png"] = base64.b64encode(heatmap_png_bytes(cams[i])).decode("ascii")
                item["timings_ms"]["cam"] = round((t3 - t2) * 1e3 / len(probs), 3)
            results.append(item)
        self.served += len(results)
        return {
            "results": results,
            "engine": self.predictor.engine,
            "model": card.architecture,
            "timings_ms": {"queue": round((t0 - t_admit) * 1e3, 3), "decode": round((t1 - t0) * 1e3, 3),
                           "infer": round((t2 - t1) * 1e3, 3), "cam": round((t3 - t2) * 1e3, 3)},
        }


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


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(run: str | Path, engine: str = "auto", token: str | None = None, max_upload_mb: float = 20,
               max_batch: int = 32, queue_size: int = 16, workers: int | None = None, device: str = "cpu",
               review_margin: float = 0.1, max_pixels: int = MAX_PIXELS,
               predictor: BasePredictor | None = None) -> FastAPI:
    """Build the service for a run folder.

    Args:
        run: Run folder (or its ``model/`` folder).
        engine: ``auto`` | ``torch`` | ``onnx`` (auto: ONNX Runtime when exported).
        token: When set, ``/v1/*`` requires ``Authorization: Bearer <token>``.
        max_upload_mb: Largest request body in MB (10^6 bytes); more is 413.
        max_batch: Most files per request; more is 413.
        queue_size: Requests admitted beyond the ``workers`` being served; more get 503.
        workers: Inference threads (default: one per core), each with an equal share of the
            cores. On 2 cores, 2 single-threaded ONNX Runtime sessions served 2.4x the
            requests/s of 1 two-threaded one (bench/serve_load.py): batch-1 convs do not
            split well across threads, whole requests do.
        device: ``cpu`` or ``cuda``.
        review_margin: ``|p_positive - threshold| < margin`` marks a result for human review.
        max_pixels: Largest image (width x height) accepted; more is 413.
        predictor: A ready predictor to use instead of building one (tests, embedding).

    Returns:
        The FastAPI application (run it with uvicorn).

    Raises:
        ConfigError / ModelError: bad limits, an unknown engine, or an unusable run folder.
    """
    workers = workers or default_threads()
    for name, v in (("max_upload_mb", max_upload_mb), ("max_batch", max_batch), ("workers", workers)):
        if v <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if queue_size < 0:
        raise ConfigError(f"--queue-size must be 0 or more, got {queue_size}")
    if predictor is None:
        read_card(run)  # a clear error for a wrong folder before anything heavy loads
        chosen = resolve_engine(run, engine, device)
        threads = max(default_threads() // workers, 1)
        # No spinning: idle ORT threads would busy-wait on the cores the event loop needs.
        predictor = make_predictor(run, engine=chosen, device=device, threads=threads, spin=False)
        if chosen == "torch" and device == "cpu":
            # torch's pool is process-wide: give the workers a share each, not all cores each.
            torch.set_num_threads(threads)
    svc = InferenceService(run, predictor, workers, queue_size, max_pixels)
    max_bytes = int(max_upload_mb * 1_000_000)
    card = predictor.card

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Warm up off the loop: /healthz answers meanwhile, /readyz only after.
        task = asyncio.get_running_loop().run_in_executor(svc.executor, svc.warm_up)
        try:
            yield
        finally:
            task.cancel()
            svc.executor.shutdown(wait=False, cancel_futures=True)

    # docs_url=None: FastAPI's default /docs loads Swagger UI from a CDN, a blank page on a
    # factory network. We serve the same UI from the swagger-ui-bundle package instead.
    app = FastAPI(title="inspectnet", version=__version__, lifespan=lifespan, docs_url=None,
                  description=f"Inspection service for `{card.architecture}` "
                              f"({', '.join(card.classes)}; positive class `{card.positive_class}`).")
    app.state.service = svc

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug must cost one request, not the station: answer JSON and keep serving.
        return _json_error(500, f"internal error: {type(exc).__name__}: {exc}")

    async def auth(request: Request) -> None:
        if token is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            reason = "missing Authorization header" if not got else "wrong token"
            raise HTTPException(401, f"{reason}: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and warmed up (503 before)."""
        body = {"ready": svc.ready.is_set(), "engine": svc.predictor.engine, "in_flight": svc.in_system,
                "capacity": svc.capacity, "served": svc.served}
        return JSONResponse(body, status_code=200 if svc.ready.is_set() else 503,
                            headers=None if svc.ready.is_set() else {"Retry-After": "1"})

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(auth)])
    async def model_card() -> dict[str, Any]:
        """The model card (classes, threshold, input size, metrics...) and the service limits."""
        return {
            "card": asdict(card),
            "engine": svc.predictor.engine,
            "cam_available": svc.predictor.can_explain or _torch_weights_present(run),
            "review_margin": review_margin,
            "limits": {"max_upload_mb": max_upload_mb, "max_batch": max_batch, "max_pixels": max_pixels,
                       "workers": workers, "queue_size": queue_size},
        }

    @app.post("/v1/predict", tags=["model"], dependencies=[Depends(auth)], openapi_extra=PREDICT_BODY,
              responses={413: {"description": "body, batch or image too large"},
                         415: {"description": "not multipart, or a file that is not an image"},
                         422: {"description": "empty, truncated or missing file"},
                         503: {"description": "queue full or warming up; see Retry-After"}})
    async def predict(request: Request, cam: bool = Query(False, description="Add a LayerCAM heatmap of the positive class (base64 PNG).")
                      ) -> JSONResponse:
        """Classify one or more uploaded images (multipart field ``files``)."""
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
        if not svc.ready.is_set():
            return _json_error(503, "model is warming up; retry shortly", {"Retry-After": "1"})
        if svc.in_system >= svc.capacity:
            return _json_error(503, f"busy: {svc.in_system} requests in progress or queued "
                                    f"(capacity {svc.capacity}); retry later", {"Retry-After": "1"})
        svc.in_system += 1
        t_admit = time.perf_counter()
        form = None
        try:
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
                form = await MultiPartParser(request.headers, limited(), max_files=max_batch,
                                             max_fields=16).parse()
            except BodyTooLarge:
                return _json_error(413, f"request body is over the {max_upload_mb:g} MB limit")
            except MultiPartException as e:
                if "files" in e.message.lower() and "maximum" in e.message.lower():
                    return _json_error(413, f"more than {max_batch} files in one request (the limit); "
                                            "split the batch")
                return _json_error(422, f"malformed multipart body: {e.message}")
            uploads = form.getlist("files")
            if not uploads:
                return _json_error(422, "no files: send the images under the multipart field 'files'")
            if any(not isinstance(u, UploadFile) for u in uploads):
                return _json_error(422, "the field 'files' must hold files, not text values")
            blobs = [await u.read() for u in uploads]
            # Names are echoed back as labels only; they never touch the file system.
            names = [(u.filename or f"file{i + 1}")[:255] for i, u in enumerate(uploads)]
            loop = asyncio.get_running_loop()
            try:
                out = await loop.run_in_executor(svc.executor, svc.infer, blobs, names, cam, t_admit, review_margin)
            except UploadError as e:
                return _json_error(e.status, e.reason)
            out["timings_ms"]["total"] = round((time.perf_counter() - t_admit) * 1e3, 3)
            return JSONResponse(out)
        finally:
            svc.in_system -= 1
            if form is not None:
                await form.close()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                            "X-Content-Type-Options": "nosniff",
                                                            "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _mount_offline_docs(app)
    return app


def _torch_weights_present(run: str | Path) -> bool:
    from ..bundle import model_dir

    return (model_dir(run) / "weights.safetensors").is_file()


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
