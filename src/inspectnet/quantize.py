"""``inspectnet export RUN --format onnx --int8``: static int8 quantization, with its parity report.

ONNX Runtime's static quantization (QDQ format, int8 weights per output channel, uint8
activations whose ranges are calibrated on about 200 of the run's training images) turns
``model.onnx`` into ``model.int8.onnx``. Before the run adopts it, the two models answer the
run's test split (its validation split when it has none) side by side:

- the share of images on which they *decide* the same class (the run's decision rule, views
  and calibration, exactly what ``predict`` answers);
- each one's accuracy, and the difference;
- each one's images/s at batch 32 (one view, after a warm-up), on this machine.

The report goes to ``RUN/model/int8_report.json``. When int8 loses more than
:data:`MAX_DROP` of accuracy the export refuses, saying so, and the run keeps its fp32
model; ``--force`` adopts it anyway. Adopted, ``model.json``'s ``onnx`` entry names the int8
file, so ``predict`` and ``serve`` take it like any other (a later fp32 ``export`` points
it back).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .io import atomic_write, atomic_write_json

INT8_FILE = "model.int8.onnx"
REPORT_FILE = "int8_report.json"
MAX_DROP = 0.005  # accuracy (a fraction) that int8 may lose before the export refuses
CALIB_IMAGES = 200
_BATCH = 32


def export_int8(run: str | Path, calib_images: int = CALIB_IMAGES, force: bool = False, seed: int = 0,
                progress: bool = False) -> dict[str, Any]:
    """Quantize the run's ONNX model to int8, compare it with fp32, and adopt it when it holds.

    Args:
        run: Run folder; its fp32 ``model.onnx`` is exported first when missing or stale.
        calib_images: Training images (a seeded sample) that calibrate the activation ranges.
        force: Adopt the int8 model even when it loses more than :data:`MAX_DROP` of accuracy.
        seed: Seed of the calibration sample.
        progress: Decoding progress bars.

    Returns:
        The parity report (also written to ``RUN/model/int8_report.json``), with ``adopted``.

    Raises:
        ModelError: quantization fails, or int8 loses too much accuracy without ``force``
            (the report is written first, the fp32 model stays in use).
        DataError: the run's images cannot be read (calibration and the comparison need them).
    """
    from .bundle import model_dir, read_card
    from .evaluate.eval_set import load_eval_set
    from .export import export_onnx
    from .predict.onnx import ONNX_FILE, OUTPUT_NAME, onnx_info, onnx_is_fresh

    d = model_dir(run)
    info = onnx_info(run)
    if info is None or info.get("file", ONNX_FILE) != ONNX_FILE or not onnx_is_fresh(run):
        export_onnx(run)  # the fp32 graph of the current weights is what gets quantized
    card = read_card(run)
    calib = load_eval_set(run, card, split="train", progress=progress).images
    pick = np.random.default_rng(seed).permutation(len(calib))[:calib_images]
    batches = [calib[pick[s : s + 16]].numpy().astype(np.float32) / 255 for s in range(0, len(pick), 16)]

    def write(tmp: Path) -> None:
        quantize_onnx(d / ONNX_FILE, tmp, batches)

    try:
        atomic_write(d / INT8_FILE, write)
    except Exception as e:  # noqa: BLE001 - the quantizer raises many types; say which model failed
        raise ModelError(f"int8 quantization of {d / ONNX_FILE} failed: {type(e).__name__}: {e}") from None
    report = _compare(run, card, d, OUTPUT_NAME, progress)
    report.update(calibration_images=len(pick), format="QDQ, int8 weights per channel, uint8 activations (MinMax)",
                  max_drop=MAX_DROP, forced=bool(force))
    too_much = report["accuracy_drop"] > MAX_DROP
    report["adopted"] = bool(force or not too_much)
    atomic_write_json(d / REPORT_FILE, report)
    if not report["adopted"]:
        raise ModelError(
            f"int8 loses {100 * report['accuracy_drop']:.2f} points of accuracy on the {report['split']} split "
            f"({100 * report['accuracy_fp32']:.2f}% -> {100 * report['accuracy_int8']:.2f}%, over the "
            f"{100 * MAX_DROP:.1f} allowed); keeping the fp32 model. Report: {d / REPORT_FILE}; "
            "--force adopts int8 anyway")
    raw = json.loads((d / "model.json").read_text())
    raw["onnx"] = {**raw["onnx"], "file": INT8_FILE, "fp32_file": ONNX_FILE, "quantized": "int8",
                   "int8_report": REPORT_FILE}
    atomic_write_json(d / "model.json", raw)
    return report


def quantize_onnx(src: Path, dst: Path, batches: list[np.ndarray]) -> None:
    """Static QDQ int8 quantization of ``src`` into ``dst``: int8 weights per output channel,
    uint8 activations whose ranges come from ``batches`` (float32 ``(B, 3, S, S)`` in [0, 1])."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.it, None)
            return None if b is None else {"image": b}

    # Shapes inferred and BatchNorm folded into the convolutions first, as ORT advises.
    pre = Path(dst).with_name(Path(dst).name + ".pre.onnx")
    logging.disable(logging.WARNING)  # the quantizer logs advice to the root logger on every call
    try:
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
        pre.unlink(missing_ok=True)


def _compare(run: str | Path, card: Any, d: Path, output: str, progress: bool) -> dict[str, Any]:
    """fp32 vs int8 on the run's test split (validation without one): decisions and speed."""
    from .decision import decision_of
    from .errors import DataError
    from .evaluate.eval_set import load_eval_set
    from .predict.onnx import ONNX_FILE, OnnxPredictor

    try:
        es = load_eval_set(run, card, split="test", progress=progress)
    except DataError:
        es = load_eval_set(run, card, split="val", progress=progress)
    rule = decision_of(card)
    out: dict[str, Any] = {"split": es.split, "n": len(es.labels)}
    decided = {}
    for name, file in (("fp32", ONNX_FILE), ("int8", INT8_FILE)):
        pred = OnnxPredictor(run, file=file)
        probs = np.concatenate([pred.predict_batch(es.images[s : s + _BATCH])
                                for s in range(0, len(es.images), _BATCH)])
        if not np.isfinite(probs).all():
            raise ModelError(f"{d / file} gives non-finite probabilities on the {es.split} split")
        decided[name] = rule.decide(probs)
        out[f"accuracy_{name}"] = float((decided[name] == es.labels).mean())
        out[f"images_per_s_{name}"] = _speed(pred, es.images, output)
    out["agreement"] = float((decided["fp32"] == decided["int8"]).mean())
    out["accuracy_drop"] = out["accuracy_fp32"] - out["accuracy_int8"]
    out["speedup"] = out["images_per_s_int8"] / out["images_per_s_fp32"]
    return out


def _speed(pred: Any, images: Any, output: str, rounds: int = 3) -> float:
    """Images/s of the bare session at batch 32, one view: the best of ``rounds`` passes."""
    x = images[:_BATCH].numpy().astype(np.float32) / 255
    if len(x) < _BATCH:
        x = np.concatenate([x] * (-(-_BATCH // len(x))))[:_BATCH]
    pred.logits(x)  # warm-up: the first run allocates
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        pred.logits(x)
        best = min(best, time.perf_counter() - t)
    return round(_BATCH / best, 1)
