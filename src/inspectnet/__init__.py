"""inspectnet: labelled photos of parts in, a trained, measured, explainable classifier out.

The Python API mirrors the CLI::

    from inspectnet import train, evaluate, predict, load_model, create_model
    result = train("data/inserts", approach="finetune", model="efficientnet_lite0", out="runs/ft")
    print(result.metrics["accuracy"])
"""

__version__ = "0.1.0"

from .bundle import load_model  # noqa: E402
from .models import create_model, list_models  # noqa: E402


def __getattr__(name: str):  # lazy: importing inspectnet should not import Lightning
    if name in ("train", "TrainResult"):
        from .train import fit

        return getattr(fit, name)
    if name == "evaluate":
        from .evaluate.run import evaluate

        return evaluate
    if name in ("predict", "Predictor"):
        from . import predict as _p

        return getattr(_p, name if name == "Predictor" else "predict_paths")
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    raise AttributeError(name)


__all__ = ["__version__", "train", "evaluate", "predict", "Predictor", "load_model", "create_model",
           "list_models", "TrainConfig"]
