"""Callbacks: per-epoch history for curves, and the best weights kept in memory."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import torch


class History(L.Callback):
    """Collects one row of logged metrics per epoch (written to ``history.csv``)."""

    def __init__(self, stage: str = "", echo: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.stage = stage
        self.echo = echo
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import time

        self._t0 = time.perf_counter()

    # A run resumed mid-epoch gets no on_train_epoch_start for that epoch.
    on_train_start = on_train_epoch_start

    # on_validation_end, not on_validation_epoch_end: Lightning calls the callbacks' epoch-end
    # hooks before the module's, so only here are this epoch's metrics already logged.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k != "train_loss"}
        self.rows.append({"stage": self.stage, "epoch": trainer.current_epoch + 1, **m})
        if self.echo and trainer.is_global_zero:
            # One line per epoch, Keras-style: visible in logs too, where live bars are not.
            import sys
            import time

            r = self.rows[-1]
            parts = [f"{k.replace('_epoch', '')} {r[k]:.4f}" for k in ("train_loss_epoch", "train_acc", "val_loss", "val_acc")
                     if k in r]
            print(f"  {self.stage} epoch {r['epoch']}/{trainer.max_epochs}: " + ", ".join(parts)
                  + f" ({time.perf_counter() - self._t0:.0f} s)", file=sys.stderr, flush=True)


    def state_dict(self) -> dict[str, Any]:
        # In the resume checkpoint, so that history.csv of a resumed run has every epoch.
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class KeepBest(L.Callback):
    """Keep a copy of the network weights of the epoch with the lowest validation loss.

    Ties are broken by validation balanced accuracy. In memory, not a pickle on disk: the
    bundle is written from it as safetensors.
    """

    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor = monitor
        self.best_score = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if score < self.best_score - 1e-6:
            self.best_score = score
            self.best_epoch = trainer.current_epoch + 1
            net = pl_module.network  # type: ignore[attr-defined]
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        # The best weights go into the resume checkpoint too, so an interrupted run that
        # resumes still ends on its best epoch, not merely its last.
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score", math.inf)
        self.best_epoch = state_dict.get("best_epoch", 0)
        self.best_state = state_dict.get("best_state")

    def restore(self, network: torch.nn.Module) -> None:
        if self.best_state is not None:
            network.load_state_dict(copy.deepcopy(self.best_state))
