"""``--logger csv|tensorboard|mlflow|none``: the training curves where people already look.

``history.csv`` and ``curves.png`` are written whatever is chosen; a logger adds the same
epoch metrics (and the per-step training loss) in its own format, one run per stage:

- ``csv`` (default): Lightning's ``CSVLogger``, ``RUN/logs/<stage>/version_<k>/metrics.csv``;
- ``tensorboard``: ``RUN/logs/<stage>/version_<k>/events.out.tfevents.*`` for ``tensorboard --logdir
  RUN/logs`` (needs ``pip install 'inspectnet[tensorboard]'``: tensorboardX or tensorboard);
- ``mlflow``: a local file store ``RUN/mlruns`` (``mlflow ui --backend-store-uri
  RUN/mlruns``), experiment ``inspectnet``, one MLflow run per stage (needs
  ``pip install 'inspectnet[mlflow]'``); nothing leaves the machine;
- ``none``: no logger.

Each start of a stage writes a new ``version_<k>``: a ``--resume`` adds ``version_1`` beside
the interrupted ``version_0`` instead of deleting it (Lightning's CSV logger clears a
version folder it reuses).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..config import LOGGERS
from ..errors import ConfigError


def make_logger(kind: str, run_dir: Path, stage: str) -> Any:
    """The Lightning logger for one training stage, or False for ``none``.

    Raises:
        ConfigError: an unknown kind, or its package is not installed (naming the extra).
    """
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir / "logs"), name=stage)
    if kind == "tensorboard":
        if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
            raise ConfigError("--logger tensorboard needs TensorBoard's writer: "
                              "pip install 'inspectnet[tensorboard]' (or tensorboardX)", key="logger")
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(run_dir / "logs"), name=stage, default_hp_metric=False)
    if kind == "mlflow":
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("--logger mlflow needs MLflow: pip install 'inspectnet[mlflow]'", key="logger")
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name="inspectnet", run_name=f"{run_dir.name}/{stage}",
                            tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    raise ConfigError(f"logger={kind!r} is not allowed; choose one of {', '.join(LOGGERS)}", key="logger")
