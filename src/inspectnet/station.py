"""The inspection station: predict with an exported run on numpy, Pillow and ONNX Runtime alone.

An inspection PC runs a trained model all day; it needs neither torch nor the GPU wheels
that come with it. :class:`Station` reads the run's ``model.json`` card, decodes and resizes
with Pillow exactly as training did (:mod:`inspectnet.data.pixels`), runs ``model.onnx``
(or the adopted int8 graph) over the card's flip/rot90 views, applies its temperature and
decision rule (:mod:`inspectnet.decision`) and answers the same rows as the torch engine.
``inspectnet predict`` takes this path whenever the run has an up-to-date ONNX export and the
machine no GPU (or ``--engine onnx``): no torch import at all. Grad-CAM needs gradients, so
``--cam`` goes to the torch engine.

This module also holds what every engine shares and what needs no torch: the export's file
contract (:func:`onnx_info`, :func:`onnx_is_fresh`), the result rows and the streaming loop
(:class:`RowPredictor`).
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .card import ModelCard, model_dir, read_card
from .card import sha256_file as file_sha256  # the one hash of a file; the export records it
from .data.pixels import DecodeError, decode_resized_pil, resize_pil
from .decision import Decision, calibrate, decision_of, review_reason
from .errors import ConfigError, ModelError

ONNX_FILE = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"

#: The error of a row whose probabilities came out NaN or infinite.
NOT_FINITE = "model output is not finite (NaN or inf); the model or this image is broken"

#: One decoded input of a batch: ``(path, image, error, probabilities)``; the image and the
#: probabilities are None when the file could not be read, the error is None otherwise.
BatchItem = tuple[Path, Any, "str | None", "np.ndarray | None"]


# ------------------------------------------------------------------ the export's files ------
def onnx_info(run: str | Path) -> dict[str, Any] | None:
    """The ``onnx`` entry of ``model.json`` when the file it names exists, else None."""
    d = model_dir(run)
    try:
        raw = json.loads((d / "model.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    info = raw.get("onnx") if isinstance(raw, dict) else None
    if not isinstance(info, dict) or not (d / str(info.get("file", ONNX_FILE))).is_file():
        return None
    return info


def onnx_is_fresh(run: str | Path) -> bool:
    """True when ``model.onnx`` exists and was exported from the current weights."""
    info = onnx_info(run)
    if info is None:
        return False
    want = info.get("weights_sha256")
    return want is None or want == file_sha256(model_dir(run) / "weights.safetensors")


def default_threads() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch (its device files, or
    ``CUDA_VISIBLE_DEVICES`` naming none)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def onnx_session(path: Path, device: str = "cpu", threads: int | None = None, spin: bool = True) -> Any:
    """An ONNX Runtime session tuned as every engine here uses it (see :class:`Station`)."""
    import onnxruntime as ort

    providers = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
    provider = providers.get(device.split(":")[0])
    if provider is None or provider not in ort.get_available_providers():
        raise ModelError(f"onnx engine on device {device!r}: onnxruntime offers {ort.get_available_providers()}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    # One graph, run node after node: parallelism comes from inside each conv (intra-op);
    # inter-op threads would only compete for the same cores.
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A memory pattern is planned and kept per input shape: with the ragged batches of a
    # server (1..32 images) that is one more arena block per size seen. Off, with the
    # batches run in slices of CHUNK_PIXELS (run_graph), a 2-worker Lite0 224 server holds
    # 213 MB once warm instead of 847 MB (the arena stays on: off, glibc's fragmentation
    # held more, 291 MB).
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=[provider])


#: Images per engine call in a lane (:meth:`RowPredictor._lane_batches`): small, so that the
#: lanes start at once and finish together; measured on 2 cores, 4 and 8 gave the same.
LANE_BATCH = 8

#: Pixels of input per graph call on the CPU: batches run in slices of this many (2 images at
#: 224 px). Activation memory grows with the slice (about 8 MB per 224 px image for Lite0,
#: held per concurrent call) while images/s hardly does: measured on 2 cores, Lite0 224 gave
#: the same throughput within noise at slices of 1 to 32 images. (A GPU wants whole batches:
#: callers on CUDA pass ``pixels=None``.)
CHUNK_PIXELS = 2 * 224 * 224


def run_graph(session: Any, input_name: str, x: np.ndarray, pixels: int | None = CHUNK_PIXELS) -> np.ndarray:
    """Logits of the graph for float32 ``(B, 3, S, S)``, run in slices of ``pixels`` of input
    (None: in one call)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    step = len(x) if pixels is None else max(1, pixels // max(1, x.shape[-1] * x.shape[-2]))
    if len(x) <= step:
        return session.run([OUTPUT_NAME], {input_name: x})[0]
    return np.concatenate([session.run([OUTPUT_NAME], {input_name: x[i : i + step]})[0]
                           for i in range(0, len(x), step)])


def export_file(run: str | Path, file: str | None = None) -> Path:
    """The graph to run: ``file``, else the one ``model.json`` names; checked fresh.

    Raises:
        ModelError: no export, one from other weights, or the named file is missing.
    """
    info = onnx_info(run)
    d = model_dir(run)
    if info is None:
        raise ModelError(f"{d / ONNX_FILE} is missing; run `inspectnet export {run} --format onnx` first")
    if not onnx_is_fresh(run):
        raise ModelError(f"{d / ONNX_FILE} was exported from other weights than {d / 'weights.safetensors'}; "
                         f"re-run `inspectnet export {run} --format onnx`")
    path = d / (file or str(info.get("file", ONNX_FILE)))
    if not path.is_file():
        raise ModelError(f"{path} is missing; re-run `inspectnet export {run} --format onnx`")
    return path


# ------------------------------------------------------------------ rows and streaming ------
class RowPredictor:
    """What every engine shares: the card, the decision, the result rows and the streaming loop.

    Subclasses set ``engine`` and ``card``, implement :meth:`predict_batch`, and say how a
    file becomes an input (:meth:`_load`) and inputs a batch (:meth:`_stack`).
    """

    engine = "base"
    card: ModelCard
    #: ``review`` when an image is this close to the decision boundary (``serve --review-margin``).
    review_margin: float = 0.1
    #: Decode-then-infer pipelines that :meth:`predict_batches` runs side by side (1: decoding
    #: runs ahead of one engine). See :class:`Station`.
    lanes: int = 1

    @property
    def img_size(self) -> int:
        return self.card.img_size

    @property
    def can_explain(self) -> bool:
        """Whether :meth:`cams` works with this engine (Grad-CAM needs gradients: torch)."""
        return False

    def predict_batch(self, images: Any) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def cams(self, images: Any, target_class: int | None = None) -> np.ndarray:
        """Heatmaps ``(B, S, S)`` in [0, 1] for uint8 images ``(B, 3, S, S)``.

        Raises:
            ModelError: this engine cannot compute gradients (ONNX Runtime).
        """
        raise ModelError(f"Grad-CAM needs the torch engine; this predictor uses {self.engine} "
                         "(use --engine torch, or drop --cam)")

    @property
    def decision(self) -> Decision:
        """The run's decision rule (``model.json``)."""
        return decision_of(self.card)

    def result(self, path: str, probs: np.ndarray) -> dict[str, Any]:
        """The result row of one image: one decision (``verdict``; ``class`` is the same
        label, kept for scripts that read it), its probability, and ``review`` with the reason
        when the run's operating point decided otherwise than the most probable class, or the
        image lies within :attr:`review_margin` of the decision boundary. An
        error row when the network's output is not finite (NaN or inf never reaches a CSV or
        JSON row)."""
        c = self.card
        rule = self.decision
        if not np.isfinite(probs).all():
            return {**self.error_row(path, NOT_FINITE), f"p_{c.positive_class}": None, "probabilities": None,
                    "threshold": rule.threshold if rule.rule == "threshold" else None}
        decided = int(rule.decide(probs)[0])
        reason = review_reason(rule, probs, decided, c.classes, self.review_margin)
        return {
            "path": path,
            "verdict": c.classes[decided],
            "class": c.classes[decided],
            "probability": float(probs[decided]),
            f"p_{c.positive_class}": float(probs[c.positive_index]),
            "probabilities": {k: float(v) for k, v in zip(c.classes, probs)},
            "threshold": rule.threshold if rule.rule == "threshold" else None,
            "review": reason is not None,
            "review_reason": reason,
            **self._anomaly_score(probs),
            "error": None,
        }

    def _anomaly_score(self, probs: np.ndarray) -> dict[str, float]:
        """``anomaly_score`` for an anomaly detector's row (nothing for a classifier).

        Its positive logit is ``(score - center) / scale`` and calibration divides logits by
        the temperature, so the score is ``center + scale * T * logit(p)``; beyond
        p = 1 - 1e-7 (far past the threshold) float32 probabilities saturate and so does it.
        """
        c = self.card
        if c.anomaly_center is None or c.anomaly_scale is None:
            return {}
        p = min(max(float(probs[c.positive_index]), 1e-7), 1 - 1e-7)
        z = math.log(p / (1 - p)) * float(c.temperature)
        return {"anomaly_score": c.anomaly_center + c.anomaly_scale * z}

    @staticmethod
    def error_row(path: str, reason: str) -> dict[str, Any]:
        return {"path": path, "verdict": None, "class": None, "probability": None, "review": None,
                "review_reason": None, "error": reason}

    def _load(self, path: Path) -> Any:  # pragma: no cover
        raise NotImplementedError

    def resize(self, chw: np.ndarray, size: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _stack(self, images: list[Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def predict_batches(self, paths: list[Path], batch_size: int = 32, workers: int = 2,
                        ) -> Iterator[list[BatchItem]]:
        """Decoded batches with their probabilities: ``[(path, image, error, probs), ...]``.

        The lower-level form of :meth:`predict_paths` for callers that need the decoded
        image as well (Grad-CAM overlays). Decoding of the next batch overlaps with
        inference of this one. An image whose probabilities are not finite comes with the
        error :data:`NOT_FINITE` (and its probabilities, for callers that look).

        Raises:
            ConfigError: ``batch_size`` or ``workers`` below 1.
        """
        for name, v in (("batch_size", batch_size), ("workers", workers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer of at least 1", key=name)

        def load(p: Path) -> tuple[Path, Any, str | None]:
            try:
                return p, self._load(p), None
            except DecodeError as e:
                return p, None, str(e)

        if self.lanes > 1:
            yield from self._lane_batches(paths, min(batch_size, LANE_BATCH), load)
            return
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # Submit the next batch's files before running this one: decoding (I/O and
            # Pillow, which release the GIL) overlaps with inference.
            ahead = [pool.submit(load, p) for p in chunks[0]] if chunks else []
            for k in range(len(chunks)):
                current = ahead
                ahead = [pool.submit(load, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                yield self._infer([f.result() for f in current])

    def _infer(self, chunk: list[tuple[Path, Any, str | None]]) -> list[BatchItem]:
        """The batch items of decoded ``(path, image, error)`` triples."""
        good = [t for _, t, _ in chunk if t is not None]
        probs = iter(self.predict_batch(self._stack(good)) if good else ())
        items = [(p, t, e, next(probs) if t is not None else None) for p, t, e in chunk]
        return [(p, t, NOT_FINITE if q is not None and not np.isfinite(q).all() else e, q) for p, t, e, q in items]

    def _lane_batches(self, paths: list[Path], size: int, load: Callable[[Path], tuple[Path, Any, str | None]]
                      ) -> Iterator[list[BatchItem]]:
        """``lanes`` threads, each decoding a small batch and then running it, in input order.

        On few cores this beats decoding ahead of one multi-threaded engine: decode threads
        preempt the engine's intra-op threads, and each parallel op then waits for its
        descheduled thread. One single-threaded engine call per lane never waits for another.
        """
        def lane(chunk: list[Path]) -> list[BatchItem]:
            return self._infer([load(p) for p in chunk])

        chunks = iter([paths[i : i + size] for i in range(0, len(paths), size)])
        with ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="inspectnet-lane") as pool:
            pending = deque(pool.submit(lane, c) for c in islice(chunks, 2 * self.lanes))
            while pending:
                done = pending.popleft().result()
                pending.extend(pool.submit(lane, c) for c in islice(chunks, 1))
                yield done

    def predict_paths(self, paths: list[Path], batch_size: int = 32,
                      workers: int = 2) -> Iterator[dict[str, Any]]:
        """Stream results in input order; decoding overlaps with inference."""
        for batch in self.predict_batches(paths, batch_size=batch_size, workers=workers):
            for p, _, err, probs in batch:
                yield self.error_row(str(p), err) if probs is None else self.result(str(p), probs)


# ------------------------------------------------------------------ the station -------------
def dihedral_np(x: np.ndarray, n: int) -> list[np.ndarray]:
    """The first ``n`` of the 8 flip/rot90 views of ``(B, C, H, W)``, in the order of
    :func:`inspectnet.data.augment.dihedral_views` (the order the card's views mean)."""
    views = [x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]]
    views += [v.swapaxes(-1, -2) for v in views]
    return views[:n]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)  # stable
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Station(RowPredictor):
    """A run's exported model on numpy, Pillow and ONNX Runtime: no torch.

    Args:
        run: Run folder (or its ``model/``) with an up-to-date ONNX export.
        threads: Intra-op threads (default: all usable cores).
        spin: ONNX Runtime's busy-waiting threads (off for a server: see ``OnnxPredictor``).
        file: Another graph of the same weights in the model folder.
        lanes: Decode-then-infer pipelines for files (:meth:`predict_paths`), each with its
            share of the ``threads`` (default: the cores split among them). ``predict``
            runs one per core: on 2 cores that reached 79-91% of the engine's own
            images/s on 512 px PNGs, against 63-66% for decoding ahead of a 2-thread engine.

    Raises:
        ModelError: no export, a stale one, or a bad card.
    """

    engine = "onnx"

    def __init__(self, run: str | Path, threads: int | None = None, spin: bool = True,
                 file: str | None = None, lanes: int = 1) -> None:
        self.card = read_card(run)
        self.path = export_file(run, file)
        self.device = "cpu"
        self.lanes = max(1, int(lanes))
        self.threads = threads or max(1, default_threads() // self.lanes)
        self.session = onnx_session(self.path, "cpu", self.threads, spin)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits for float32 ``(B, 3, S, S)`` in [0, 1] (the graph's own contract)."""
        return run_graph(self.session, self.input_name, x)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities ``(B, C)`` of uint8 ``(B, 3, S, S)``, averaged over
        the card's views, as :meth:`inspectnet.predict.BasePredictor.predict_batch`."""
        x = np.asarray(images)
        views = int(getattr(self.card, "tta_views", 1) or 1)
        p = sum(softmax(self.logits(v.astype(np.float32) * np.float32(1 / 255))) for v in dihedral_np(x, views))
        return calibrate(p / views, float(self.card.temperature))

    def _load(self, path: Path) -> np.ndarray:
        return decode_resized_pil(path, self.img_size)

    def resize(self, chw: np.ndarray, size: int) -> np.ndarray:
        """A decoded upload ``(3, H, W)`` uint8 resized as :meth:`_load` resizes files."""
        return resize_pil(np.ascontiguousarray(chw.transpose(1, 2, 0)), size)

    def _stack(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack(images)
