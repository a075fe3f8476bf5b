"""Predict with a trained run: files, folders and globs in, one result per image out.

- :mod:`.inputs`: :func:`expand_inputs`, the files a list of paths and globs names;
- :mod:`.base`: :class:`BasePredictor`, what every engine shares (rows, batch streaming);
- :mod:`.torch_predictor`: :class:`Predictor`, the torch engine (the one that can explain);
- :mod:`.onnx`: :class:`OnnxPredictor`, ONNX Runtime, and the contract of ``model.onnx``;
- :mod:`.factory`: :func:`make_predictor`, which engine a run gets, and :func:`predict_paths`;
- :mod:`.stream`: large folders, written as results arrive, resumable, in shards;
- :mod:`.ray_engine`: :class:`RayStation`, the station on a Ray cluster (``--engine ray``).

``inspectnet.export`` writes what :mod:`.onnx` reads and imports from here; nothing here
imports it. Called, this package is :func:`predict_paths` (``from inspectnet import predict``).
"""

from .._api import callable_package

# Imported on first use, so that the torch-free parts (inputs, stream) load without torch:
# the inspection station's `predict` imports them and never the torch engines.
_LAZY = {
    "BasePredictor": "base", "verdict": "base",
    "ENGINES": "factory", "make_predictor": "factory", "predict_paths": "factory", "resolve_engine": "factory",
    "expand_inputs": "inputs",
    "OnnxPredictor": "onnx", "default_threads": "onnx", "onnx_info": "onnx", "onnx_is_fresh": "onnx",
    "OUTPUT_FORMATS": "stream", "ResultWriter": "stream", "cam_filename": "stream", "csv_header": "stream",
    "csv_row": "stream", "output_format": "stream", "parse_shard": "stream", "run_predictions": "stream",
    "shard_paths": "stream",
    "Predictor": "torch_predictor",
    "RayStation": "ray_engine",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


callable_package(__name__, f"{__name__}.factory", "predict_paths")

__all__ = [
    "ENGINES",
    "OUTPUT_FORMATS",
    "BasePredictor",
    "OnnxPredictor",
    "Predictor",
    "RayStation",
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
