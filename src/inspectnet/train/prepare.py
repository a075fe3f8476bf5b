"""The stages before an approach runs: config, split and checks, decoded images, network."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import existing_run, refuse_existing_run, set_aside_previous_run
from ..config import TrainConfig
from ..data.cache import build_cache
from ..data.doctor import cheap_checks, check_for_training
from ..data.sources import discover
from ..data.split import check_split, counts_table, stratified_split, write_split_csv
from ..decision import cost_matrix_problems
from ..errors import ConfigError, ModelError
from ..evaluate.metrics import pick_positive
from ..io import atomic_write_text, make_dir
from ..data.sources import Sample
from ..models import ModelInfo, Network, create_model, model_info
from . import loop
from .approach import Context, Live, get_approach

# ``pool=auto`` falls back along this chain where a backbone lacks what a pool needs (a block
# list to tap, a pooling module: a transformer pools its own tokens).
POOL_CHAIN = ("catavgmax-mid", "catavgmax", "avg")


def resolve_config(config: TrainConfig | None, data: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    cfg = (config or TrainConfig()).override(data=str(data) if data is not None else None, **overrides).validate()
    if not cfg.data:
        raise ConfigError("no data given; pass a folder of class folders or a CSV manifest")
    return cfg


def apply_defaults(cfg: TrainConfig, defaults: dict[str, Any]) -> None:
    """Fill the options the user left unset (``None`` or ``auto``) with the approach's values."""
    for key, value in defaults.items():
        if getattr(cfg, key) in (None, "auto"):
            setattr(cfg, key, value)


def input_size(samples: list[Sample], info: ModelInfo, pretrained: bool, probe: int = 64) -> int:
    """The default input size: the model's, or for a pretrained base the photos' own size where
    that is larger (their median short side, down to a multiple of 32, at most 1.5x the model's).

    Pretrained features see a defect as it was photographed rather than shrunk away; on the
    real development set 288 px beat 224 px for 300 px photos (bench/real_accuracy.py). The cap
    keeps a camera's 4000 px frames from costing 300x the compute.
    """
    size = info.default_img_size
    if not pretrained:
        return size
    from PIL import Image

    sides = []
    for s in samples[:: max(1, len(samples) // probe)][:probe]:
        try:
            with Image.open(s.path) as im:  # the header only
                sides.append(min(im.size))
        except (OSError, ValueError):
            continue  # unreadable files are reported by the decoder, with their reasons
    if not sides:
        return size
    own = int(np.median(sides)) // 32 * 32
    return int(min(max(size, own), size * 3 // 2 // 32 * 32))


def context(cfg: TrainConfig, out: str | Path | None, quiet: bool, resume: bool, live: Live) -> Context:
    """Split and check the data, resolve every default, write ``split.csv`` and ``config.yaml``."""
    from .interrupt import is_rank_zero

    run_dir = Path(out or f"runs/{cfg.approach}-{cfg.model}")
    refuse_existing_run(run_dir, overwrite=cfg.overwrite or resume)  # a finished run is not replaced unasked
    # Every rank of a DDP job runs this from the start (Lightning's launcher re-runs the
    # command); only rank 0 writes files and talks.
    rank0 = is_rank_zero()
    if cfg.overwrite and not resume and rank0 and existing_run(run_dir) is not None:
        set_aside_previous_run(run_dir)  # kept until the new run is complete: nothing is lost on a crash
    make_dir(run_dir)
    live.run_dir = run_dir
    every = get_approach(cfg.approach).needs_all_classes  # anomaly: intact training images suffice
    samples = stratified_split(discover(cfg.data, min_classes=2 if every else 1), cfg.val_fraction,
                               cfg.test_fraction, cfg.seed)
    check_split(samples, every_class=every)
    # Label conflicts, leakage and classes missing from a split make every later number
    # dishonest, so they stop the run before any work; repeated rows are dropped.
    samples, warnings = check_for_training(samples, cfg, every_class=every)
    classes = get_approach(cfg.approach).classes(samples, cfg)
    if cfg.cost_matrix is not None:
        for problem in cost_matrix_problems(cfg.cost_matrix, classes):
            raise ConfigError(problem, key="cost_matrix")
    train_counts = Counter(s.label for s in samples if s.split == "train")
    info = model_info(cfg.model)
    cfg.positive = pick_positive(classes, dict(train_counts), cfg.positive)
    approach = get_approach(cfg.approach)
    auto_pool = cfg.pool == "auto"
    apply_defaults(cfg, approach.defaults(cfg, info))
    pretrained = cfg.weights not in ("none", "auto") or (cfg.weights == "auto" and bool(info.pretrained_source))
    cfg.img_size = cfg.img_size or input_size(samples, info, pretrained)
    ctx = Context(cfg, run_dir, samples, classes, cfg.positive, info, loop.resolve_device(cfg.device), approach,
                  live, auto_pool=auto_pool, quiet=quiet or not rank0, resume=resume, rank0=rank0)
    for msg in warnings + cheap_checks(samples):
        ctx.say(f"[yellow]  data: {msg}[/]")
    if rank0:
        write_split_csv(samples, run_dir / "split.csv")
    ctx.save_config()
    ctx.say(f"[bold]inspectnet train[/] {cfg.approach} · {info.name} · {cfg.img_size}px · device {ctx.device}"
            f"{' (bf16 autocast)' if cfg.precision == 'bf16' else ''} · "
            f"classes {', '.join(classes)} (positive: {cfg.positive})")
    ctx.say("  images per split: " + "; ".join(f"{k} " + ", ".join(f"{c}={n}" for c, n in v.items())
                                               for k, v in counts_table(samples).items()))
    return ctx


def decode(ctx: Context) -> None:
    """Decode every image once into the uint8 cache; list the unreadable ones."""
    cfg = ctx.cfg
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    # Beyond cache_mb the decoded images go to a memmap file, one per process.
    ctx.live.spill = ctx.run_dir / "cache" / ("images.u8" if ctx.rank0 else f"images.{os.getpid()}.u8")
    ctx.cache, bad = build_cache(ctx.samples, ctx.classes, cfg.img_size, skip_bad=cfg.skip_bad,
                                 progress=not ctx.quiet, spill_path=ctx.live.spill, cache_mb=cfg.cache_mb)
    spilled = next((c.spill_path for c in ctx.cache.values() if c.spill_path is not None), None)
    if spilled is not None:
        n_img = sum(len(c) for c in ctx.cache.values())
        ctx.say(f"  decoded images ({n_img * 3 * cfg.img_size ** 2 / 2**20:.0f} MiB) exceed the in-memory budget; "
                f"reading them from {spilled} (removed at the end)")
    if bad and ctx.rank0:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "reason"])
        w.writerows([[str(b.path), b.reason] for b in bad])
        atomic_write_text(ctx.run_dir / "skipped.csv", buf.getvalue())
        ctx.say(f"[yellow]skipped {len(bad)} unreadable image(s); listed in {ctx.run_dir / 'skipped.csv'}[/]")
    if "train" not in ctx.cache:
        raise ConfigError("no readable training images are left")
    counts = [int((ctx.cache["train"].labels == i).sum()) for i in range(ctx.n_classes)]
    ctx.class_weights = loop.class_weights_for(cfg.class_weights, counts)
    if ctx.class_weights is not None:
        ctx.say(f"  class-weighted loss: {dict(zip(ctx.classes, [round(float(v), 3) for v in ctx.class_weights]))}")


def network(ctx: Context) -> Network:
    """A fresh network from the registry, with the pool the config asks for (or the next one
    along the chain that the backbone supports, recorded in ``config.yaml``)."""
    cfg = ctx.cfg
    chain = POOL_CHAIN[POOL_CHAIN.index(cfg.pool):] if ctx.auto_pool and cfg.pool in POOL_CHAIN else (cfg.pool,)
    for pool in chain:
        try:
            net = create_model(cfg.model, ctx.n_classes, pretrained=cfg.weights_arg, img_size=cfg.img_size, pool=pool)
            break
        except ModelError:
            if pool == chain[-1]:
                raise
    if pool != cfg.pool:
        cfg.pool = pool
        ctx.save_config()
    return net.to(ctx.device).to(memory_format=torch.channels_last)
