"""Choosing and building a predictor for a run: torch or ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .base import BasePredictor
from .inputs import expand_inputs
from .onnx import OnnxPredictor, onnx_is_fresh
from .torch_predictor import Predictor

ENGINES = ("auto", "torch", "onnx")


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


def predict_paths(run: str | Path, inputs: Iterable[str | Path], batch_size: int = 32,
                  device: str = "cpu", engine: str = "auto") -> list[dict[str, Any]]:
    """Python API: classify files/folders/globs with a trained run; a list of result dicts.

    ``engine`` is ``auto`` (ONNX Runtime when the run has an up-to-date ``model.onnx`` and
    the device is the CPU, else torch), ``torch`` or ``onnx``.
    """
    pred = make_predictor(run, engine=engine, device=device)
    return list(pred.predict_paths(expand_inputs(inputs), batch_size=batch_size))
