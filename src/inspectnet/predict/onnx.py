"""The ONNX Runtime engine, with the torch predictor's interface, and the export's contract.

The graph that ``inspectnet export`` writes takes exactly what ``Network`` takes: float32
RGB in [0, 1], NCHW, with the normalisation baked in, under the input name ``image``; it
returns ``logits`` (softmax is left to the caller, as in torch). ``model.json`` records the
export (file, input, opset and the SHA-256 of the weights it came from), so a predictor can
tell a stale ``model.onnx`` from a fresh one after the run is retrained in place.

Grad-CAM needs gradients, which ONNX Runtime does not give: :class:`OnnxPredictor` raises
``ModelError`` from :meth:`~OnnxPredictor.cams`; use the torch engine for heatmaps.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import model_dir, read_card
from ..errors import ModelError
from .base import BasePredictor

ONNX_FILE = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (weights can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_info(run: str | Path) -> dict[str, Any] | None:
    """The ``onnx`` entry of ``model.json`` when the file it names exists, else None."""
    d = model_dir(run)
    try:
        raw = json.loads((d / "model.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    info = raw.get("onnx")
    if not info or not (d / info.get("file", ONNX_FILE)).is_file():
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


class OnnxPredictor(BasePredictor):
    """ONNX Runtime engine with :class:`~inspectnet.predict.Predictor`'s interface.

    Args:
        run: Run folder (or its ``model/`` folder) holding an exported ``model.onnx``.
        device: ``cpu`` (CPUExecutionProvider) or ``cuda`` (CUDAExecutionProvider, when the
            installed onnxruntime has it).
        threads: Intra-op threads; default all usable cores. When several predictors share
            the machine (server workers), give each a share instead of oversubscribing.
        spin: Let idle intra-op threads busy-wait for the next op. Best for one stream of
            batches (``predict``); a server must turn it off, or the spinning threads
            starve the event loop and the other workers (measured: 3x fewer requests/s).
        file: A graph file in the model folder other than the one ``model.json`` names.

    Raises:
        ModelError: no ``model.onnx``, one exported from other weights, or a provider that
            this onnxruntime lacks.
    """

    engine = "onnx"

    def __init__(self, run: str | Path, device: str = "cpu", threads: int | None = None,
                 spin: bool = True, file: str | None = None) -> None:
        import onnxruntime as ort

        self.card = read_card(run)
        info = onnx_info(run)
        d = model_dir(run)
        if info is None:
            raise ModelError(f"{d / ONNX_FILE} is missing; "
                             f"run `inspectnet export {run} --format onnx` first")
        if not onnx_is_fresh(run):
            raise ModelError(f"{d / ONNX_FILE} was exported from other weights than "
                             f"{d / 'weights.safetensors'}; "
                             f"re-run `inspectnet export {run} --format onnx`")
        # ``file``: another graph of the same weights (the int8 export compares it with fp32).
        self.path = d / (file or info.get("file", ONNX_FILE))
        if not self.path.is_file():
            raise ModelError(f"{self.path} is missing; re-run `inspectnet export {run} --format onnx`")
        spec = info.get("input")
        self.input_name = spec.get("name", INPUT_NAME) if isinstance(spec, dict) else INPUT_NAME
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        providers = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
        provider = providers.get(device.split(":")[0])
        if provider is None or provider not in ort.get_available_providers():
            raise ModelError(f"onnx engine on device {device!r}: "
                             f"onnxruntime offers {ort.get_available_providers()}")
        self.device = device
        self.threads = threads or default_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        # One graph, run node after node: parallelism comes from inside each conv (intra-op);
        # inter-op threads would only compete for the same cores.
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=[provider])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits for float32 ``(B, 3, S, S)`` in [0, 1] (the graph's own contract)."""
        feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        return self.session.run([OUTPUT_NAME], feed)[0]

    def _probs(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``, one view."""
        a = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        z = self.logits(a.astype(np.float32) * np.float32(1 / 255))
        z = z - z.max(axis=1, keepdims=True)  # stable softmax
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
