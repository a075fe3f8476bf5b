"""Callbacks: per-epoch history for curves, the best weights kept in memory, and the
seeded batch order and randomness that make ``--resume`` end on the same weights."""

from __future__ import annotations

import copy
import math
import random
import zlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
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


# Purposes of the derived seeds: one stream for each epoch's order, one for each batch's draws.
_ORDER, _BATCH = 0, 1


def stream_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed that is a pure function of ``seed`` and ``keys`` (well mixed, unlike seed + k)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


class EpochBatches(torch.utils.data.Sampler):
    """Index batches of a shuffled epoch whose order is a function of ``(seed, epoch)`` alone.

    A ``RandomSampler`` with one generator for the whole stage draws epoch e's order from the
    state left by epochs 0..e-1, so a resumed run (a fresh generator) shuffled differently. Here
    nothing needs replaying: Lightning's ``set_epoch`` picks the order, and :meth:`resume_at`
    starts one epoch part-way, skipping the batches a mid-epoch checkpoint already trained on.
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, seed: int) -> None:
        self.n, self.batch_size, self.drop_last, self.seed = n, batch_size, drop_last, seed
        self.epoch = 0
        self._start: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        # Lightning creates (and prefetches from) the resumed epoch's iterator before its
        # set_epoch call, so the position must be in place beforehand.
        self._start = (epoch + 1, 0) if batches_done >= len(self) else (epoch, batches_done)
        self.epoch = self._start[0]

    def __iter__(self) -> Iterator[list[int]]:
        (epoch, skip), self._start = self._start or (self.epoch, 0), None
        g = torch.Generator().manual_seed(stream_seed(self.seed, _ORDER, epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        for b in range(skip, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def rng_states() -> dict[str, Any]:
    """torch's, numpy's and Python's global generator states, in types ``torch.load`` accepts
    with ``weights_only`` (no numpy arrays)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                              "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Make a resumed stage train exactly as an uninterrupted one (CPU: the same weights, bit for bit).

    Every training batch starts from global generators seeded by ``(seed, stage, epoch, batch)``,
    so augmentation and dropout depend neither on what ran before the stage (``heads.py``
    reseeds torch while fitting finetune's head) nor on where a run was interrupted. The
    checkpoint carries the batch position (for :class:`EpochBatches`), the generators' states
    (for what follows the last batch) and ``should_stop``: Lightning does not save it, and a run
    stopped early and resumed from its last checkpoint would train one epoch more.
    """

    def __init__(self, seed: int, stage: str, batches: EpochBatches | None) -> None:
        self.seed, self.stage_key, self.batches = seed, zlib.crc32(stage.encode()), batches
        self._stop = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # batch_idx counts from the epoch's start after a mid-epoch resume too (Lightning's progress).
        s = stream_seed(self.seed, _BATCH, self.stage_key, trainer.current_epoch, batch_idx)
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # ``processed``: batches whose optimiser step is done, at a batch end or an epoch end alike.
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        checkpoint["exact_resume"] = {"epoch": trainer.current_epoch, "batches_done": done,
                                      "should_stop": bool(trainer.should_stop), "rng": rng_states()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("exact_resume")
        if state is None:  # a checkpoint from before exact resume: it continues, not exactly
            return
        if self.batches is not None:
            self.batches.resume_at(state["epoch"], state["batches_done"])
        set_rng_states(state["rng"])
        self._stop = state["should_stop"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop:
            trainer.should_stop = True
