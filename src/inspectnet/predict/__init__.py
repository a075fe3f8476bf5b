"""Predict with a trained run: files, folders and globs in, one result per image out.

- :mod:`.inputs`: :func:`expand_inputs`, the files a list of paths and globs names;
- :mod:`.base`: :class:`BasePredictor`, what every engine shares (rows, batch streaming);
- :mod:`.torch_predictor`: :class:`Predictor`, the torch engine (the one that can explain);
- :mod:`.onnx`: :class:`OnnxPredictor`, ONNX Runtime, and the contract of ``model.onnx``;
- :mod:`.factory`: :func:`make_predictor`, which engine a run gets, and :func:`predict_paths`;
- :mod:`.stream`: large folders, written as results arrive, resumable, in shards.

``inspectnet.export`` writes what :mod:`.onnx` reads and imports from here; nothing here
imports it. Called, this package is :func:`predict_paths` (``from inspectnet import predict``).
"""

from .._api import callable_package
from .base import BasePredictor, verdict
from .factory import ENGINES, make_predictor, predict_paths, resolve_engine
from .inputs import expand_inputs
from .onnx import OnnxPredictor, default_threads, onnx_info, onnx_is_fresh
from .stream import (
    OUTPUT_FORMATS,
    ResultWriter,
    cam_filename,
    csv_header,
    csv_row,
    output_format,
    parse_shard,
    run_predictions,
    shard_paths,
)
from .torch_predictor import Predictor

callable_package(__name__, f"{__name__}.factory", "predict_paths")

__all__ = [
    "ENGINES",
    "OUTPUT_FORMATS",
    "BasePredictor",
    "OnnxPredictor",
    "Predictor",
    "ResultWriter",
    "cam_filename",
    "csv_header",
    "csv_row",
    "default_threads",
    "expand_inputs",
    "make_predictor",
    "onnx_info",
    "onnx_is_fresh",
    "output_format",
    "parse_shard",
    "predict_paths",
    "resolve_engine",
    "run_predictions",
    "shard_paths",
    "verdict",
]
