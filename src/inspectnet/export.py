"""ONNX export of a run's network and an ONNX Runtime predictor with the torch one's interface.

The exported graph takes exactly what ``Network`` takes: float32 RGB in [0, 1], NCHW, with
the normalisation baked in, under the input name ``image``; it returns ``logits`` (softmax
is left to the caller, as in torch). The batch axis is dynamic, the spatial size is the
card's ``img_size``.

``model.json`` records the export (file, input, opset and the SHA-256 of the weights it
came from), so a predictor can tell a stale ``model.onnx`` from a fresh one after the run
is retrained in place.

Grad-CAM needs gradients, which ONNX Runtime does not give: :class:`OnnxPredictor` raises
``ModelError`` from :meth:`~OnnxPredictor.cams`; use the torch engine for heatmaps.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bundle import load_model, model_dir, read_card
from .errors import ConfigError, ModelError
from .io import atomic_write, atomic_write_json
from .predict import BasePredictor, Predictor

ONNX_FILE = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
ENGINES = ("auto", "torch", "onnx")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx(run: str | Path, opset: int = DEFAULT_OPSET, check: bool = True) -> Path:
    """Export a run's network to ``RUN/model/model.onnx`` and record it in ``model.json``.

    Uses the classic TorchScript-based exporter (``dynamo=False``): on these models it is
    about 5x faster than the dynamo exporter and needs nothing from the network.

    Args:
        run: Run folder or its ``model/`` folder.
        opset: ONNX opset version (13 or newer).
        check: Compare ONNX Runtime's logits with torch's on a random batch and raise when
            they differ by more than 1e-3 (a broken export never lands silently).

    Returns:
        Path of the written ``model.onnx``.

    Raises:
        ModelError: the run cannot be loaded, the export fails or does not match torch.
        ConfigError: an opset older than 13.
    """
    if opset < 13:
        raise ConfigError(f"--opset {opset} is too old; use 13 or newer (default {DEFAULT_OPSET})")
    loaded = load_model(run, device="cpu")
    net, card, d = loaded.network.eval(), loaded.card, loaded.path
    s = card.img_size
    example = torch.rand(2, card.channels, s, s)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # The classic exporter announces its deprecation and TracerWarnings on every
            # call; they are about the exporter, not about this model.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True, dynamo=False,
            )
        if check:
            _check_parity(net, tmp, s)

    path = d / ONNX_FILE
    try:
        atomic_write(path, write)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; say which model failed
        raise ModelError(f"ONNX export of {card.architecture} failed: {type(e).__name__}: {e}") from None

    raw = json.loads((d / "model.json").read_text())
    raw["onnx"] = {
        "file": ONNX_FILE,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", card.channels, s, s],
                  "range": [0.0, 1.0], "layout": "NCHW", "normalised_inside": True},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(card.classes)], "softmax": False},
        "opset": opset,
        "weights_sha256": _sha256(d / "weights.safetensors"),
        "torch": torch.__version__,
    }
    atomic_write_json(d / "model.json", raw)
    return path


def _check_parity(net: torch.nn.Module, onnx_path: Path, size: int) -> None:
    import onnxruntime as ort

    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        ref = net(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if not np.isfinite(diff) or diff > 1e-3:
        raise ModelError(f"the exported graph disagrees with torch: max |logit difference| = {diff:.2e} "
                         "(allowed 1e-3); not writing model.onnx")


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
    return want is None or want == _sha256(model_dir(run) / "weights.safetensors")


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

    Raises:
        ModelError: no ``model.onnx``, one exported from other weights, or a provider that
            this onnxruntime lacks.
    """

    engine = "onnx"

    def __init__(self, run: str | Path, device: str = "cpu", threads: int | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        self.card = read_card(run)
        info = onnx_info(run)
        d = model_dir(run)
        if info is None:
            raise ModelError(f"{d / ONNX_FILE} is missing; run `inspectnet export {run} --format onnx` first")
        if not onnx_is_fresh(run):
            raise ModelError(f"{d / ONNX_FILE} was exported from other weights than {d / 'weights.safetensors'}; "
                             f"re-run `inspectnet export {run} --format onnx`")
        self.path = d / info.get("file", ONNX_FILE)
        spec = info.get("input")
        self.input_name = spec.get("name", INPUT_NAME) if isinstance(spec, dict) else INPUT_NAME
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(device.split(":")[0])
        if provider is None or provider not in ort.get_available_providers():
            raise ModelError(f"onnx engine on device {device!r}: onnxruntime offers {ort.get_available_providers()}")
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
        return self.session.run([OUTPUT_NAME], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def _probs(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``, one view."""
        a = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        z = self.logits(a.astype(np.float32) * np.float32(1 / 255))
        z = z - z.max(axis=1, keepdims=True)  # stable softmax
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def resolve_engine(run: str | Path, engine: str = "auto", device: str = "cpu") -> str:
    """The engine ``make_predictor`` would use: ``torch`` or ``onnx``.

    ``auto`` picks ONNX Runtime on the CPU when the run has an up-to-date ``model.onnx``
    (several times faster than eager torch there), torch otherwise (no export, or a GPU).
    """
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "onnx" if device == "cpu" and onnx_is_fresh(run) else "torch"


def make_predictor(run: str | Path, engine: str = "auto", device: str = "cpu",
                   threads: int | None = None, spin: bool = True) -> BasePredictor:
    """Build the predictor for a run folder.

    Args:
        run: Run folder or its ``model/`` folder.
        engine: ``auto`` | ``torch`` | ``onnx`` (see :func:`resolve_engine`).
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: Intra-op threads for ONNX Runtime (default: all usable cores).
        spin: ONNX Runtime's busy-waiting threads (see :class:`OnnxPredictor`).

    Returns:
        A :class:`~inspectnet.predict.Predictor` or an :class:`OnnxPredictor`; both have
        ``predict_batch``, ``result``, ``predict_paths``, ``card``, ``img_size``, ``engine``.
    """
    chosen = resolve_engine(run, engine, device)
    if chosen == "onnx":
        return OnnxPredictor(run, device=device, threads=threads, spin=spin)
    return Predictor(run, device=device)
