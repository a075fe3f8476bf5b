"""inspectnet: labelled photos of parts in, a trained, measured, explainable classifier out.

The Python API mirrors the CLI::

    from inspectnet import train, evaluate, predict, load_model, create_model
    result = train("data/inserts", approach="finetune", model="efficientnet_lite0", out="runs/ft")
    print(result.metrics["accuracy"])
"""

from ._version import __version__
from .bundle import load_model
from .models import create_model, list_models


# The facade, imported on first use: importing inspectnet should not import Lightning.
_LAZY = {
    "train": ("inspectnet.train.run", "train"),
    "TrainResult": ("inspectnet.train.finish", "TrainResult"),
    "evaluate": ("inspectnet.evaluate.run", "evaluate"),
    "predict": ("inspectnet.predict", "predict_paths"),
    "Predictor": ("inspectnet.predict", "Predictor"),
    "TrainConfig": ("inspectnet.config", "TrainConfig"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'inspectnet' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)


__all__ = ["__version__", "train", "evaluate", "predict", "Predictor", "load_model", "create_model",
           "list_models", "TrainConfig"]
