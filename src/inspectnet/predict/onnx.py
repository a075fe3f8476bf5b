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

from pathlib import Path

import numpy as np
import torch

from ..card import read_card
from ..station import (  # noqa: F401 - the export's file contract lives in station.py (torch-free)
    INPUT_NAME, ONNX_FILE, OUTPUT_NAME, default_threads, export_file, file_sha256, onnx_info, onnx_is_fresh,
    onnx_session, run_graph)
from .base import BasePredictor


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
        # ``file``: another graph of the same weights (the int8 export compares it with fp32).
        self.path = export_file(run, file)
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        self.device = device
        self.threads = threads or default_threads()
        self.session = onnx_session(self.path, device, self.threads, spin)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits for float32 ``(B, 3, S, S)`` in [0, 1] (the graph's own contract)."""
        return run_graph(self.session, self.input_name, x, **({"pixels": None} if self.device != "cpu" else {}))

    def _probs(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``, one view."""
        a = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        z = self.logits(a.astype(np.float32) * np.float32(1 / 255))
        z = z - z.max(axis=1, keepdims=True)  # stable softmax
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
