"""One Lightning training stage, and the small rules every stage shares: device, precision,
class weights, batches from the decoded-image cache."""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.augment import BatchAugment
from ..data.cache import CachedImages
from ..errors import ConfigError
from ..evaluate.run import predict_probs
from ..models import Network

if TYPE_CHECKING:
    from .approach import Context


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def bf16_native(device: torch.device) -> bool:
    """Does this device compute in bfloat16 natively (not by emulation)?"""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def class_weights_for(mode: str, counts: list[int]) -> torch.Tensor | None:
    """Inverse-frequency weights (mean 1) when asked, or automatically at > 1.5x imbalance."""
    if mode == "off":
        return None
    ratio = max(counts) / max(min(counts), 1)
    if mode == "auto" and ratio <= 1.5:
        return None
    w = torch.tensor([1.0 / max(c, 1) for c in counts])
    return w * len(counts) / w.sum()


def log_loss(p: np.ndarray, labels: torch.Tensor) -> float:
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels.numpy()], 1e-7, 1)).mean())


def val_loss(network: Network, c: CachedImages | None, device: torch.device, views: int = 1) -> float:
    if c is None:
        return float("nan")
    return log_loss(predict_probs(network, c.images, device=device, views=views), c.labels)


def loader(c: CachedImages, batch_size: int, shuffle: bool, seed: int,
           distributed: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``c``; shuffled ones in an order fixed by ``(seed, epoch)`` (see ``EpochBatches``)."""
    from .callbacks import EpochBatches

    ds = torch.utils.data.TensorDataset(c.images, c.labels)
    # Drop a last batch of one: BatchNorm cannot normalise a single image in train mode.
    drop = shuffle and len(c) % batch_size == 1
    if distributed:  # Lightning swaps in a DistributedSampler, which needs the plain form
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop)
    # One gather per batch from the uint8 cache instead of 32 item reads and a collate stack
    # (17 ms of a 130 ms seed-CNN step).
    if shuffle:
        batches: torch.utils.data.Sampler = EpochBatches(len(c), batch_size, drop, seed)
    else:
        batches = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(ds), batch_size, drop_last=False)
    return torch.utils.data.DataLoader(ds, sampler=batches, batch_size=None)


@dataclass
class Stage:
    """What differs between the Lightning stages: scratch's one, finetune's joint one."""

    name: str  # "scratch" | "finetune": names the checkpoint and the history rows
    lr: float
    base_lr_mult: float
    epochs: int
    augment: BatchAugment
    freeze_bn: bool
    warmup_epochs: int = 0
    max_seconds: float | None = None  # stop the stage at this wall-clock time (the best epoch stays)


@dataclass
class StageResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float


# Lightning's chatter that says nothing to our users (we print our own one-line summaries).
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*is deprecated.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    # A checkpoint taken at Ctrl-C is mid-epoch; EpochBatches resumes the epoch's own order
    # at the next batch (ExactResume), which Lightning cannot see.
    ".*resuming from a checkpoint that ended before the epoch ended.*",
    # Validation metrics are all-gathered in the module: identical on every rank already.
    ".*sync_dist=True.*",
)


def lightning_fit(ctx: Context, network: Network, stage: Stage) -> StageResult:
    """Run one Lightning stage on ``ctx.cache`` and restore its best epoch (lowest val loss)."""
    from .callbacks import EpochBatches, ExactResume, History, KeepBest
    from .interrupt import _Stop
    from .module import ClassifierModule

    cfg = ctx.cfg
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    module = ClassifierModule(network, lr=stage.lr, base_lr_mult=stage.base_lr_mult, weight_decay=cfg.weight_decay,
                              optimizer=cfg.optimizer, class_weights=ctx.class_weights, augment=stage.augment,
                              freeze_bn=stage.freeze_bn, warmup_epochs=stage.warmup_epochs)
    history, best = History(stage.name, echo=not ctx.quiet), KeepBest("val_loss")
    train_dl = loader(ctx.cache["train"], cfg.batch_size, True, cfg.seed, cfg.distributed)
    order = train_dl.sampler if isinstance(train_dl.sampler, EpochBatches) else None
    trainer, ckpt = _trainer(ctx, stage, [ExactResume(cfg.seed, stage.name, order), history, best])
    has_val = "val" in ctx.cache
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        interrupts = ctx.live.interrupts
        try:
            # Signals are only recorded while Lightning runs; StopOnSignal acts on them at the
            # next batch end, after saving the checkpoint.
            with interrupts.deferred() if interrupts is not None else contextlib.nullcontext():
                trainer.fit(
                    module,
                    train_dataloaders=train_dl,
                    val_dataloaders=(loader(ctx.cache["val"], cfg.batch_size * 2, False, cfg.seed, cfg.distributed)
                                     if has_val else None),
                    ckpt_path=str(ckpt) if ctx.resume and ckpt.is_file() else None,
                )
        except _Stop:
            raise KeyboardInterrupt from None
        except SystemExit:
            # Lightning answers KeyboardInterrupt (a second Ctrl-C) with sys.exit(1) and SIGTERM
            # with SIGTERMException; both mean "stop" here, with the last checkpoint kept.
            if interrupts is not None and interrupts.requested:
                raise KeyboardInterrupt from None
            raise
    best.restore(network)
    # Lightning's teardown moves a GPU-trained module back to the CPU; evaluation, the report
    # and the next stage run on ``device`` (found by bench/cuda_check.py on an H200).
    network.to(ctx.device)
    return StageResult(history.rows, best.best_epoch, best.best_score)


def _trainer(ctx: Context, stage: Stage, callbacks: list[Any]) -> tuple[Any, Any]:
    """The Lightning Trainer of a stage, with early stopping, signals and the resume checkpoint."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from .interrupt import AtomicCheckpointIO, StopOnSignal
    from .loggers import make_logger

    cfg = ctx.cfg
    if cfg.patience and "val" in ctx.cache:
        callbacks.append(EarlyStopping("val_loss", patience=cfg.patience, mode="min"))
    ckpt_dir = ctx.run_dir / "checkpoints"
    ckpt = ckpt_dir / f"{stage.name}-last.ckpt"
    ctx.live.ckpt = ckpt
    if ctx.rank0:  # what a SIGKILL in mid-save left behind (AtomicCheckpointIO's temporary files)
        for stale in ckpt_dir.glob(f".{ckpt.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    if ctx.live.interrupts is not None:
        callbacks.append(StopOnSignal(ctx.live.interrupts, ckpt))
    # last.ckpt exists for --resume only; the deliverable is the safetensors bundle. No
    # version counter: a stale file must be overwritten, never joined by "-v1" beside it.
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename=f"{stage.name}-last", save_last=False,
                                     save_top_k=1, monitor=None, every_n_epochs=1, enable_version_counter=False))
    trainer = L.Trainer(
        accelerator="gpu" if ctx.device.type == "cuda" else "cpu", devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, max_epochs=stage.epochs,
        max_time=None if stage.max_seconds is None else timedelta(seconds=max(stage.max_seconds, 1.0)),
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        logger=make_logger(cfg.logger, ctx.run_dir, stage.name), callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        enable_progress_bar=not ctx.quiet,
        num_sanity_val_steps=0, log_every_n_steps=1, deterministic=False,
    )
    return trainer, ckpt
