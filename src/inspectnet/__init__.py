"""inspectnet: labelled photos of parts in, a trained, measured, explainable classifier out.

The Python API mirrors the CLI::

    from inspectnet import train, evaluate, predict, load_model, create_model
    result = train("data/inserts", approach="finetune", model="efficientnet_lite0", out="runs/ft")
    print(result.metrics["accuracy"])
"""

from ._version import __version__

# The facade, imported on first use: importing inspectnet (and so every CLI command, --help
# included) should not import torch, timm or Lightning before a command needs them.
_LAZY = {
    "load_model": ("inspectnet.bundle", "load_model"),
    "create_model": ("inspectnet.models", "create_model"),
    "list_models": ("inspectnet.models", "list_models"),
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
