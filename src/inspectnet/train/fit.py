"""``train()``: data in, one of the three approaches, a measured model bundle out.

The flow goes one way: discover -> split (written to ``split.csv``) -> decode once into a
uint8 cache -> model from the registry -> approach -> best weights -> test metrics ->
bundle + ``metrics.json`` + curves in the run folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import signal
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import ModelCard, library_versions, save_bundle
from ..config import TrainConfig
from ..data.augment import BatchAugment
from ..data.doctor import cheap_checks, check_leakage
from ..data.cache import CachedImages, build_cache, fingerprint
from ..data.sources import discover
from ..data.split import check_split, counts_table, stratified_split, write_split_csv
from ..errors import ConfigError, ModelError, TrainingInterrupted
from ..evaluate.metrics import pick_positive, threshold_for_recall
from ..evaluate.run import full_metrics, predict_probs
from ..io import atomic_write_json, atomic_write_text
from ..models import Network, create_model, model_info
from .features import extract_features, install_head, train_linear_head
from .interrupt import Interrupts, StopOnSignal, _Stop, interrupted_message, is_rank_zero

# Fine-tuning uses SGD with momentum: right after the head has converged its gradients are
# tiny and noisy, and Adam's normalised first steps (a full learning rate in the sign
# direction for every weight) wrecked the pretrained base (loss 0.001 -> 8 in one step);
# SGD steps scale with the gradient. Scratch keeps the course's Adam(W).
DEFAULT_LR = {"scratch": 1e-3, "features": 1e-3, "finetune": 1e-2}
DEFAULT_OPTIMIZER = {"scratch": "adamw", "features": "adamw", "finetune": "sgd"}


@dataclass
class TrainResult:
    """What ``train`` returns: where the run is and how good it is."""

    run_dir: Path
    metrics: dict[str, Any]
    card: ModelCard
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # per split, for the report
    is_global_zero: bool = True  # False in the other ranks of a DDP job: they write nothing


@dataclass
class _Live:
    """What ``train()`` needs to report or clean up when it is interrupted."""

    interrupts: Interrupts | None = None
    run_dir: Path | None = None
    ckpt: Path | None = None  # the checkpoint of the stage in progress
    spill: Path | None = None  # the decoded-image memmap file, removed at the end


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        from rich.console import Console

        import sys

        Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140).print(msg)


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


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where it was measured to pay off (see TrainConfig.precision)."""
    if cfg.precision != "auto":
        return cfg.precision
    if not bf16_native(device):
        return "32"
    return "bf16" if cfg.approach == "scratch" else "32"


def class_weights_for(cfg: TrainConfig, counts: list[int]) -> torch.Tensor | None:
    """Inverse-frequency weights (mean 1) when asked, or automatically at > 1.5x imbalance."""
    if cfg.class_weights == "off":
        return None
    ratio = max(counts) / max(min(counts), 1)
    if cfg.class_weights == "auto" and ratio <= 1.5:
        return None
    w = torch.tensor([1.0 / max(c, 1) for c in counts])
    return w * len(counts) / w.sum()


def _weights_arg(cfg: TrainConfig) -> bool | str:
    if cfg.weights == "auto":
        return cfg.approach != "scratch"
    if cfg.weights == "none":
        return False
    return cfg.weights  # "hub" or a file path


def _loader(c: CachedImages, batch_size: int, shuffle: bool, seed: int,
            distributed: bool = False) -> torch.utils.data.DataLoader:
    ds = torch.utils.data.TensorDataset(c.images, c.labels)
    g = torch.Generator().manual_seed(seed)
    # Drop a last batch of one: BatchNorm cannot normalise a single image in train mode.
    drop = shuffle and len(c) % batch_size == 1
    if distributed:  # Lightning swaps in a DistributedSampler, which needs the plain form
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop)
    # One gather per batch from the uint8 cache instead of 32 item reads and a collate stack
    # (17 ms of a 130 ms seed-CNN step).
    order = torch.utils.data.RandomSampler(ds, generator=g) if shuffle else torch.utils.data.SequentialSampler(ds)
    batches = torch.utils.data.BatchSampler(order, batch_size, drop_last=drop)
    return torch.utils.data.DataLoader(ds, sampler=batches, batch_size=None)


def _lightning_fit(network: Network, cfg: TrainConfig, cache: dict[str, CachedImages], *, lr: float,
                   base_lr_mult: float, epochs: int, augment: BatchAugment, freeze_bn: bool,
                   class_weights: torch.Tensor | None, device: torch.device, run_dir: Path, stage: str,
                   quiet: bool, resume: bool = False,
                   live: _Live | None = None) -> tuple[list[dict[str, Any]], int, float]:
    """One Lightning training stage; restores the best epoch's weights (lowest val loss).

    Returns (history rows, best epoch, best validation loss).
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from .callbacks import History, KeepBest
    from .module import ClassifierModule

    # We print our own one-line device summary; Lightning's banners and tips are noise here.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    module = ClassifierModule(network, lr=lr, base_lr_mult=base_lr_mult, weight_decay=cfg.weight_decay,
                              optimizer=cfg.optimizer, class_weights=class_weights, augment=augment,
                              freeze_bn=freeze_bn, warmup_epochs=1 if stage == "finetune" else 0)
    history, best = History(stage, echo=not quiet), KeepBest("val_loss")
    callbacks: list[Any] = [history, best]
    has_val = "val" in cache
    if cfg.patience > 0 and has_val:
        callbacks.append(EarlyStopping("val_loss", patience=cfg.patience, mode="min"))
    ckpt_dir = run_dir / "checkpoints"
    ckpt = ckpt_dir / f"{stage}-last.ckpt"
    interrupts = live.interrupts if live is not None else None
    if live is not None:
        live.ckpt = ckpt
    if interrupts is not None:
        callbacks.append(StopOnSignal(interrupts, ckpt))
    # last.ckpt exists for --resume only; the deliverable is the safetensors bundle. No
    # version counter: a stale file must be overwritten, never joined by "-v1" beside it.
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename=f"{stage}-last", save_last=False,
                                     save_top_k=1, monitor=None, every_n_epochs=1, enable_version_counter=False))
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        max_epochs=epochs,
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        logger=False,
        callbacks=callbacks,
        enable_model_summary=False,
        enable_progress_bar=not quiet,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        # A checkpoint taken at Ctrl-C is mid-epoch; the resumed epoch draws a fresh shuffle
        # for its remaining batches, which is what we want.
        warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")
        # Validation metrics are all-gathered in the module: identical on every rank already.
        warnings.filterwarnings("ignore", ".*sync_dist=True.*")
        try:
            # Signals are only recorded while Lightning runs; StopOnSignal acts on them at the
            # next batch end, after saving the checkpoint.
            with interrupts.deferred() if interrupts is not None else contextlib.nullcontext():
                trainer.fit(
                    module,
                    train_dataloaders=_loader(cache["train"], cfg.batch_size, True, cfg.seed, cfg.distributed),
                    val_dataloaders=(_loader(cache["val"], cfg.batch_size * 2, False, cfg.seed, cfg.distributed)
                                     if has_val else None),
                    ckpt_path=str(ckpt) if resume and ckpt.is_file() else None,
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
    network.to(device)
    return history.rows, best.best_epoch, best.best_score


def _log_loss(p: np.ndarray, labels: torch.Tensor) -> float:
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels.numpy()], 1e-7, 1)).mean())


def _val_loss(network: Network, c: CachedImages | None, device: torch.device, views: int = 1) -> float:
    if c is None:
        return float("nan")
    return _log_loss(predict_probs(network, c.images, device=device, views=views), c.labels)


def _cached_features(network: Network, cache: dict[str, CachedImages], cfg: TrainConfig, device: torch.device,
                     quiet: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``network``'s pooled features, extracted once: ``(N, views, C)`` per view for train
    and val (``None`` without a val split)."""
    network.to(device).to(memory_format=torch.channels_last)
    f_tr = extract_features(network, cache["train"].images, views=cfg.tta_views, device=device,
                            desc="features train", progress=not quiet, keep_views=True)
    f_va = (extract_features(network, cache["val"].images, views=cfg.tta_views, device=device,
                             desc="features val", progress=not quiet, keep_views=True) if "val" in cache else None)
    return f_tr, f_va


def _head_on_features(network: Network, feats: tuple[torch.Tensor, torch.Tensor | None],
                      cache: dict[str, CachedImages], n_classes: int, class_weights: torch.Tensor | None,
                      device: torch.device) -> dict[str, float]:
    """Freeze ``network``'s base, fit the linear head on cached features and install it.

    With ``tta_views`` > 1 every view of a training image is a training sample of its own
    (augmentation at the price of one extraction), while the L2 strength is chosen on the
    validation images' view-averaged features, as they are scored. On the demo split this
    lowered the validation loss from 0.251 (head on view-averaged features) to 0.238.

    Returns ``train_linear_head``'s info plus ``val_loss_views``: the validation log loss of
    the probabilities averaged over the views, as ``predict_probs`` scores the model.
    """
    # Everything frozen; finetune's step 4 then unfreezes exactly its top blocks and the head.
    for p in network.parameters():
        p.requires_grad_(False)
    f_tr, f_va = feats
    y_va = cache["val"].labels if f_va is not None else None
    y_tr = cache["train"].labels.repeat_interleave(f_tr.shape[1])
    head, info = train_linear_head(f_tr.flatten(0, 1), y_tr, f_va.mean(1) if f_va is not None else None, y_va,
                                   n_classes, class_weights)
    install_head(network, head.to(device))
    if f_va is not None and y_va is not None and len(y_va):
        with torch.no_grad():
            p = head(f_va.float()).softmax(-1).mean(1)
            p_true = p[torch.arange(len(y_va)), y_va].clamp(1e-7, 1)
            info["val_loss_views"] = float(-p_true.log().mean())
    return info


def _features_candidate(cfg: TrainConfig, n_classes: int) -> Network | None:
    """The ``features`` approach's model (its default pool) for finetune to measure itself
    against, or None where that is finetune's own head: a backbone without a richer pool, or
    the seed CNN (its pooled features come after its Dense(128), not out of a pool)."""
    if model_info(cfg.model).name == "seed-cnn":
        return None
    for pool in ("catavgmax-mid", "catavgmax"):
        try:
            return create_model(cfg.model, n_classes, pretrained=_weights_arg(cfg), img_size=cfg.img_size, pool=pool)
        except ModelError:
            continue
    return None


def train(data: str | Path | None = None, *, config: TrainConfig | None = None, out: str | Path | None = None,
          quiet: bool = False, resume: bool = False, **overrides: Any) -> TrainResult:
    """Train one approach end to end and write the run folder.

    Ctrl-C or SIGTERM while training saves ``RUN/checkpoints/<stage>-last.ckpt`` and raises
    :class:`TrainingInterrupted`; ``resume=True`` (``inspectnet train --resume RUN``) then
    continues to the configured number of epochs. With ``devices``/``num_nodes``/``strategy``
    set for DDP every rank runs this function; only rank 0 writes the run folder.

    Args:
        data: Folder of class folders, pre-split folder, or CSV manifest.
        config: A base config (e.g. ``TrainConfig.load("config.yaml")``); keyword overrides win.
        out: Run folder (default ``runs/<approach>-<model>``).
        quiet: No progress bars or messages.
        resume: Continue the Lightning stage from ``out/checkpoints`` when present.
        **overrides: Any ``TrainConfig`` field, e.g. ``approach="finetune", epochs=8``.

    Returns:
        TrainResult with the run folder, test metrics (validation when there is no test
        split) and the model card (on DDP ranks other than 0: ``is_global_zero=False`` and
        no metrics).

    Raises:
        DataError / ConfigError / ModelError with a one-line reason.
        TrainingInterrupted: on SIGINT/SIGTERM, naming the checkpoint and the resume command.
    """
    live = _Live()
    with Interrupts() as interrupts:
        live.interrupts = interrupts
        try:
            return _train(data, config=config, out=out, quiet=quiet, resume=resume, live=live, **overrides)
        except KeyboardInterrupt:
            signum = interrupts.signum or int(signal.SIGINT)
            run_dir = live.run_dir or Path(out or ".")
            raise TrainingInterrupted(interrupted_message(signum, run_dir, live.ckpt), signum, str(run_dir)) from None
        finally:
            if live.spill is not None:
                # The decoded-image file is a cache of this process, not a result.
                with contextlib.suppress(OSError):
                    live.spill.unlink(missing_ok=True)
                    live.spill.parent.rmdir()


def _train(data: str | Path | None = None, *, config: TrainConfig | None = None, out: str | Path | None = None,
           quiet: bool = False, resume: bool = False, live: _Live | None = None, **overrides: Any) -> TrainResult:
    """The body of :func:`train` (same arguments), run inside its signal handling."""
    from ..runtime import tune_allocator

    tune_allocator()
    cfg = (config or TrainConfig()).override(data=str(data) if data is not None else None, **overrides).validate()
    if not cfg.data:
        raise ConfigError("no data given; pass a folder of class folders or a CSV manifest")
    run_dir = Path(out or f"runs/{cfg.approach}-{cfg.model}")
    run_dir.mkdir(parents=True, exist_ok=True)
    live = live or _Live()
    live.run_dir = run_dir
    # Every rank of a DDP job runs this function from the start (Lightning's launcher re-runs
    # the command); only rank 0 writes files and talks.
    rank0 = is_rank_zero()
    quiet = quiet or not rank0
    t_start = time.perf_counter()

    samples = stratified_split(discover(cfg.data), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    check_split(samples)
    # Leakage makes every later number dishonest, so it stops the run before any work.
    check_leakage(samples, allow=cfg.allow_leakage)
    for msg in cheap_checks(samples):
        _say(f"[yellow]  data: {msg}[/]", quiet)
    classes = sorted({s.label for s in samples})
    train_counts = Counter(s.label for s in samples if s.split == "train")
    positive = pick_positive(classes, dict(train_counts), cfg.positive)
    info = model_info(cfg.model)
    cfg.img_size = cfg.img_size or info.default_img_size
    cfg.positive = positive
    if cfg.lr is None:
        cfg.lr = DEFAULT_LR[cfg.approach]
    if cfg.optimizer is None:
        cfg.optimizer = DEFAULT_OPTIMIZER[cfg.approach]
    if cfg.patience is None:
        # From scratch the validation loss sat flat for 16 epochs on the demo set before it fell.
        cfg.patience = 15 if cfg.approach == "scratch" else 5
    # Resolve every default now, so config.yaml records what actually ran.
    scratch = cfg.approach == "scratch"
    if cfg.augment_rot90 is None:
        cfg.augment_rot90 = not scratch
    if cfg.augment_rotation is None:
        cfg.augment_rotation = 36.0 if scratch else 0.0
    if cfg.augment_zoom is None:
        cfg.augment_zoom = 0.1 if scratch else 0.0
    device = resolve_device(cfg.device)
    cfg.precision = resolve_precision(cfg, device)
    pool_auto = cfg.pool == "auto"
    if pool_auto:
        # Features only: with the max-pooled half the joint stage of finetune never beat its own
        # head on validation (hard set, 3 seeds, 5 epochs), so finetune keeps the ImageNet head.
        # The seed CNN from scratch: global average + max pooling instead of Flatten (validation
        # loss 0.634 -> 0.578 and 0.572 -> 0.468 on two 1200-image medium sets, 40 epochs).
        if cfg.approach == "features" and info.name != "seed-cnn":
            cfg.pool = "catavgmax-mid"
        elif cfg.approach == "scratch" and info.name == "seed-cnn":
            cfg.pool = "catavgmax"
        else:
            cfg.pool = "avg"
    if rank0:
        write_split_csv(samples, run_dir / "split.csv")
        cfg.save(run_dir / "config.yaml")
    counts = counts_table(samples)
    _say(f"[bold]inspectnet train[/] {cfg.approach} · {info.name} · {cfg.img_size}px · device {device}"
         f"{' (bf16 autocast)' if cfg.precision == 'bf16' else ''} · "
         f"classes {', '.join(classes)} (positive: {positive})", quiet)
    _say("  images per split: " + "; ".join(f"{k} " + ", ".join(f"{c}={n}" for c, n in v.items())
                                            for k, v in counts.items()), quiet)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    # Beyond cache_mb the decoded images go to a memmap file, one per process.
    live.spill = run_dir / "cache" / ("images.u8" if rank0 else f"images.{os.getpid()}.u8")
    cache, bad = build_cache(samples, classes, cfg.img_size, skip_bad=cfg.skip_bad, progress=not quiet,
                             spill_path=live.spill, cache_mb=cfg.cache_mb)
    spilled = next((c.spill_path for c in cache.values() if c.spill_path is not None), None)
    if spilled is not None:
        n_img = sum(len(c) for c in cache.values())
        _say(f"  decoded images ({n_img * 3 * cfg.img_size ** 2 / 2**20:.0f} MiB) exceed the in-memory budget; "
             f"reading them from {spilled} (removed at the end)", quiet)
    if bad and rank0:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "reason"])
        w.writerows([[str(b.path), b.reason] for b in bad])
        atomic_write_text(run_dir / "skipped.csv", buf.getvalue())
        _say(f"[yellow]skipped {len(bad)} unreadable image(s); listed in {run_dir / 'skipped.csv'}[/]", quiet)
    if "train" not in cache:
        raise ConfigError("no readable training images are left")

    n_classes = len(classes)
    cw = class_weights_for(cfg, [int((cache["train"].labels == i).sum()) for i in range(n_classes)])
    if cw is not None:
        _say(f"  class-weighted loss: {dict(zip(classes, [round(float(v), 3) for v in cw]))}", quiet)
    # "auto" falls back along the chain where a backbone lacks what a pool needs (a block list
    # to tap, a pooling module: a transformer pools its own tokens).
    chain = ["catavgmax-mid", "catavgmax", "avg"] if pool_auto else [cfg.pool]
    for pool in chain[chain.index(cfg.pool):]:
        try:
            network = create_model(cfg.model, n_classes, pretrained=_weights_arg(cfg), img_size=cfg.img_size,
                                   pool=pool)
            break
        except ModelError:
            if pool == chain[-1]:
                raise
    if pool != cfg.pool:
        cfg.pool = pool
        if rank0:
            cfg.save(run_dir / "config.yaml")
    network.to(device).to(memory_format=torch.channels_last)
    history: list[dict[str, Any]] = []
    notes: list[str] = []
    augment = BatchAugment(cfg.augment_flip, cfg.augment_rotation, cfg.augment_zoom, cfg.augment_rot90)

    t_train = time.perf_counter()
    features_kept = False  # finetune ended on the features approach's model
    fallback: str | None = None  # what finetune kept instead of its fine-tuned weights, and why
    val_probs: np.ndarray | None = None  # the final model's validation probabilities, when known
    if cfg.approach == "scratch":
        _say(f"  from scratch: random init, augmentation flip={cfg.augment_flip} rotation=±{cfg.augment_rotation}° "
             f"zoom=±{cfg.augment_zoom:.0%} rot90={cfg.augment_rot90}, {cfg.optimizer} lr={cfg.lr}, up to {cfg.epochs} epochs", quiet)
        rows, best_epoch, _ = _lightning_fit(network, cfg, cache, lr=cfg.lr, base_lr_mult=1.0, epochs=cfg.epochs,
                                             augment=augment, freeze_bn=False, class_weights=cw, device=device,
                                             run_dir=run_dir, stage="scratch", quiet=quiet, resume=resume,
                                             live=live)
        history += rows
        notes.append(f"best epoch {best_epoch} (lowest validation loss)")
    elif cfg.approach == "features":
        _say(f"  feature extraction: frozen {info.name} base (BatchNorm frozen), logistic-regression head on "
             f"cached pooled features ({cfg.tta_views} view(s)), L2 chosen on validation", quiet)
        hinfo = _head_on_features(network, _cached_features(network, cache, cfg, device, quiet), cache, n_classes,
                                  cw, device)
        history.append({"stage": "head", "epoch": 1, "val_loss": hinfo["val_loss"],
                        "val_balanced_accuracy": hinfo["val_balanced_accuracy"], "l2": hinfo["l2"]})
        notes.append(f"head L2={hinfo['l2']:g} chosen on validation")
    else:
        if cfg.unfreeze is None:
            cfg.unfreeze = auto_unfreeze(network)
            if rank0:
                cfg.save(run_dir / "config.yaml")  # record what "auto" chose
        blocks = _unfreeze_top(network, cfg.unfreeze, dry_run=True)
        _say(f"  fine-tuning in five steps: (1) new {n_classes}-class head, (2) freeze the base, (3) train the head "
             f"on cached features, (4) unfreeze {blocks}, (5) train jointly {cfg.epochs} epochs, head lr {cfg.lr:g}, "
             f"base lr {cfg.lr * cfg.base_lr_mult:g} ({cfg.optimizer}), cosine decay, BatchNorm statistics frozen", quiet)
        # The features approach's model, from the same extraction: its pooled features hold
        # finetune's (the last map's average pool) as their first columns. Finetune must never
        # end worse than it, and validation is how it knows.
        candidate = _features_candidate(cfg, n_classes) if pool_auto and "val" in cache else None
        feats = _cached_features(candidate or network, cache, cfg, device, quiet)
        cinfo: dict[str, float] = {}
        if candidate is not None:
            cinfo = _head_on_features(candidate, feats, cache, n_classes, cw, device)
            cols = candidate.avg_columns()
            feats = (feats[0][..., cols], feats[1][..., cols] if feats[1] is not None else None)
        hinfo = _head_on_features(network, feats, cache, n_classes, cw, device)
        del feats
        head_state = {k: v.clone() for k, v in network.state_dict().items()}
        head_val = _val_loss(network, cache.get("val"), device)
        history.append({"stage": "head", "epoch": 0, "val_loss": head_val,
                        "val_balanced_accuracy": hinfo["val_balanced_accuracy"]})
        for p in network.get_classifier().parameters():
            p.requires_grad_(True)
        _unfreeze_top(network, cfg.unfreeze)
        # The head was fitted without dropout; switching it on now would add noise to a
        # converged classifier and make the loss jump at unfreezing.
        if hasattr(network.backbone, "drop_rate"):
            network.backbone.drop_rate = 0.0
        rows, best_epoch, best_val = _lightning_fit(
            network, cfg, cache, lr=cfg.lr, base_lr_mult=cfg.base_lr_mult, epochs=cfg.epochs,
            augment=augment, freeze_bn=True, class_weights=cw, device=device, run_dir=run_dir,
            stage="finetune", quiet=quiet, resume=resume, live=live)
        history += rows
        kept_head = "val" in cache and not best_val < head_val
        if kept_head:
            # Validation says the joint stage did not help: back to the head on the frozen base.
            network.load_state_dict(head_state)
            msg = (f"joint fine-tuning did not beat the head-only model on validation "
                   f"(val loss {best_val:.4f} vs {head_val:.4f}); keeping the head-only weights")
            notes.append(msg)
            fallback = msg
            _say(f"[yellow]  {msg}[/]", quiet)
        else:
            notes.append(f"best joint epoch {best_epoch}: val loss {best_val:.4f} (head only: {head_val:.4f})")
        if candidate is not None and "val_loss_views" in cinfo:
            # Scored as the final model is, over the tta views (kept for the threshold below).
            if not kept_head:
                val_probs = predict_probs(network, cache["val"].images, device=device, views=cfg.tta_views)
            own = hinfo["val_loss_views"] if kept_head else _log_loss(val_probs, cache["val"].labels)
            if cinfo["val_loss_views"] < own:
                val_probs = None
                network, features_kept = candidate.to(device), True
                cfg.pool = candidate.pool
                if rank0:
                    cfg.save(run_dir / "config.yaml")
                msg = (f"the features approach's model ({candidate.pool} head on the frozen base) beat fine-tuning "
                       f"on validation (val loss {cinfo['val_loss_views']:.4f} vs {own:.4f} over "
                       f"{cfg.tta_views} view(s)); keeping it, so finetune never ends worse than features")
                notes.append(msg)
                fallback = msg
                _say(f"[yellow]  {msg}[/]", quiet)
            else:
                notes.append(f"fine-tuned model beat the features approach's model on validation "
                             f"(val loss {own:.4f} vs {cinfo['val_loss_views']:.4f} over {cfg.tta_views} view(s))")
            del candidate
    train_seconds = time.perf_counter() - t_train
    for p in network.parameters():
        p.requires_grad_(True)
    if not rank0:
        # A DDP rank other than 0: the weights equal rank 0's, which evaluates and writes.
        return TrainResult(run_dir, {}, None, cfg, history, train_seconds,  # type: ignore[arg-type]
                           ["not rank 0 of the DDP job: rank 0 writes the run folder"], is_global_zero=False)

    # Operating threshold on validation; every number of the test split comes after this.
    eval_views = cfg.tta_views
    pos_idx = classes.index(positive)
    threshold = 0.5
    val_metrics = None
    if "val" in cache:
        pv = val_probs if val_probs is not None else predict_probs(network, cache["val"].images, device=device,
                                                                   views=eval_views)
        yv = cache["val"].labels.numpy()
        threshold = threshold_for_recall(yv, pv[:, pos_idx], pos_idx, cfg.target_recall)
        val_metrics = full_metrics(yv, pv, classes, positive, threshold, "val")
    final_split = "test" if "test" in cache else "val"
    split_probs: dict[str, np.ndarray] = {}
    if final_split in cache:
        c = cache[final_split]
        probs = predict_probs(network, c.images, device=device, views=eval_views)
        split_probs[final_split] = probs
        metrics = full_metrics(c.labels.numpy(), probs, classes, positive, threshold, final_split)
    else:
        metrics = {"split": None, "n": 0}
    total_params = sum(p.numel() for p in network.parameters())
    trainable = _count_trainable(network, cfg, features_kept)
    metrics.update({
        "approach": cfg.approach, "model": info.name, "img_size": cfg.img_size,
        "train_seconds": round(train_seconds, 2), "total_seconds": round(time.perf_counter() - t_start, 2),
        "params_total": total_params, "params_trainable": trainable,
        "epochs_run": max([r.get("epoch", 0) for r in history if r.get("stage") != "head"], default=0),
        "threshold": threshold, "target_recall": cfg.target_recall, "notes": notes, "fallback": fallback,
        "validation": val_metrics, "counts": counts,
    })
    card = ModelCard(
        architecture=info.name, classes=classes, positive_class=positive, img_size=cfg.img_size,
        mean=network.mean.flatten().tolist(), std=network.std.flatten().tolist(), threshold=threshold,
        tta_views=eval_views, pool=cfg.pool,
        approach=cfg.approach,
        metrics={k: metrics.get(k) for k in ("split", "n", "accuracy", "balanced_accuracy", "f1_positive",
                                              "recall_positive", "roc_auc")},
        versions=library_versions(), data_fingerprint=fingerprint(samples),
    )
    # Each file is atomic; deferring signals keeps the bundle's two files and metrics.json
    # together (a Ctrl-C here stops right after them).
    with live.interrupts.deferred() if live.interrupts is not None else contextlib.nullcontext():
        save_bundle(run_dir, network.cpu(), card)
        network.to(device)
        atomic_write_json(run_dir / "metrics.json", metrics)
    _write_history(run_dir, history)
    result = TrainResult(run_dir, metrics, card, cfg, history, train_seconds, notes, split_probs)
    _after_training(result, cache, network, device, quiet)
    return result


def _count_trainable(network: Network, cfg: TrainConfig, features_kept: bool = False) -> int:
    if cfg.approach == "features" or features_kept:
        return sum(p.numel() for p in network.get_classifier().parameters())
    if cfg.approach == "finetune" and cfg.unfreeze is not None and cfg.unfreeze >= 0:
        return sum(p.numel() for p in _top_block_params(network, cfg.unfreeze))
    return sum(p.numel() for p in network.parameters())


def _named_blocks(network: Network) -> list[tuple[str, torch.nn.Module]]:
    """The base's blocks in order, named as in ``backbone.named_modules()``."""
    bb = network.backbone
    for attr in ("blocks", "features"):
        if hasattr(bb, attr):
            return [(f"{attr}.{i}", m) for i, m in enumerate(getattr(bb, attr))]
    return list(bb.named_children())


def _blocks(network: Network) -> list[torch.nn.Module]:
    return [m for _, m in _named_blocks(network)]


def _top_block_params(network: Network, k: int) -> list[torch.nn.Parameter]:
    blocks = _blocks(network)
    chosen = blocks[-k:] if k > 0 else []
    params = [p for b in chosen for p in b.parameters()]
    # Layers after the blocks (final conv, head norm) belong to the "top" too.
    bb = network.backbone
    for name in ("conv_head", "bn2", "fc1"):
        if hasattr(bb, name):
            params += list(getattr(bb, name).parameters())
    params += list(network.get_classifier().parameters())
    return params


def auto_unfreeze(network: Network) -> int:
    """How many top blocks fine-tuning trains by default: all but the stem and the stages at
    stride 2 and 4 (timm's ``feature_info``), or the whole base when the model does not
    describe its stages.

    Edges and textures at full and half resolution transfer from ImageNet as they are; the
    stages after them are where a new domain differs. Keeping the early stages frozen also
    spares their backward pass, the most expensive one on a CPU, and their activations (peak
    RSS at batch 32, 224 px: +1.6 GB instead of +3.3 GB). On the demo split it halved the
    best validation loss (0.139 -> 0.070) against training the whole base.
    """
    names = [n for n, _ in _named_blocks(network)]
    try:
        early = [str(f["module"]) for f in network.backbone.feature_info if int(f["reduction"]) <= 4]
    except (AttributeError, TypeError, KeyError, ValueError):
        return -1
    idx = [names.index(m) for m in early if m in names]
    if not idx or max(idx) + 1 >= len(names):
        return -1
    return len(names) - (max(idx) + 1)


def _unfreeze_top(network: Network, k: int, dry_run: bool = False) -> str:
    """Unfreeze the top ``k`` blocks (``-1`` = the whole base); returns a description."""
    n = len(_blocks(network))
    if dry_run:
        return "the whole base" if k < 0 or k >= n else f"the top {k} of {n} blocks"
    if k < 0 or k >= n:
        for p in network.parameters():
            p.requires_grad_(True)
    else:
        for p in _top_block_params(network, k):
            p.requires_grad_(True)
    return ""


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())
    try:
        from ..evaluate.plots import plot_history

        plot_history(history, run_dir / "curves.png")
    except ImportError:
        pass


def _after_training(result: TrainResult, cache: dict[str, CachedImages], network: Network,
                    device: torch.device, quiet: bool) -> None:
    """Hook for the HTML report (written when the report module is present)."""
    try:
        from ..evaluate.report import write_report_for_training
    except ImportError:
        return
    write_report_for_training(result, cache, network, device, quiet=quiet)
