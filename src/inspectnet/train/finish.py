"""The stages after an approach: the operating threshold on validation, test metrics, and
the run folder's deliverables (bundle, ``metrics.json``, history, curves, report)."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import ModelCard, library_versions, save_bundle
from ..config import TrainConfig
from ..data.cache import fingerprint
from ..data.split import counts_table
from ..evaluate.metrics import threshold_for_recall
from ..evaluate.run import full_metrics, predict_probs
from ..io import atomic_write_json, atomic_write_text
from .approach import Context, Fitted


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
class Scored:
    """The final model's numbers: the operating threshold and the metrics it was set for."""

    metrics: dict[str, Any]  # the test split's (validation's when there is no test split)
    threshold: float
    validation: dict[str, Any] | None
    probs: dict[str, np.ndarray]  # the final split's probabilities, for the report


def score(ctx: Context, fitted: Fitted) -> Scored:
    """The threshold on validation, then every number of the test split."""
    cfg, net, cache = ctx.cfg, fitted.network, ctx.cache
    pos = ctx.classes.index(ctx.positive)
    threshold, val_metrics = 0.5, None
    if fitted.val_labels is not None and fitted.val_probs is not None:
        pv, yv = fitted.val_probs, fitted.val_labels
    elif "val" in cache:
        pv = fitted.val_probs
        if pv is None:
            pv = predict_probs(net, cache["val"].images, device=ctx.device, views=cfg.tta_views)
        yv = cache["val"].labels.numpy()
    if "val" in cache or fitted.val_labels is not None:
        threshold = threshold_for_recall(yv, pv[:, pos], pos, cfg.target_recall)
        val_metrics = full_metrics(yv, pv, ctx.classes, ctx.positive, threshold, fitted.val_name)
    final = "test" if "test" in cache else "val"
    if final not in cache:
        return Scored({"split": None, "n": 0}, threshold, val_metrics, {})
    probs = predict_probs(net, cache[final].images, device=ctx.device, views=cfg.tta_views)
    metrics = full_metrics(cache[final].labels.numpy(), probs, ctx.classes, ctx.positive, threshold, final)
    return Scored(metrics, threshold, val_metrics, {final: probs})


def describe(ctx: Context, fitted: Fitted, scored: Scored, train_seconds: float, t_start: float) -> dict[str, Any]:
    """``metrics.json``: the numbers, then how the run went."""
    return {**scored.metrics,
            "approach": ctx.cfg.approach, "model": ctx.info.name, "img_size": ctx.cfg.img_size,
            "train_seconds": round(train_seconds, 2), "total_seconds": round(time.perf_counter() - t_start, 2),
            "params_total": sum(p.numel() for p in fitted.network.parameters()),
            "params_trainable": fitted.params_trainable,
            "epochs_run": max([r.get("epoch", 0) for r in fitted.history if r.get("stage") != "head"], default=0),
            "threshold": scored.threshold, "target_recall": ctx.cfg.target_recall, "notes": fitted.notes,
            "fallback": fitted.fallback, "validation": scored.validation, "counts": counts_table(ctx.samples)}


def write_outputs(ctx: Context, fitted: Fitted, metrics: dict[str, Any], scored: Scored,
                  train_seconds: float) -> TrainResult:
    """Bundle, ``metrics.json``, history and curves, then the report."""
    cfg, network = ctx.cfg, fitted.network
    card = ModelCard(
        architecture=ctx.info.name, classes=ctx.classes, positive_class=ctx.positive, img_size=cfg.img_size,
        mean=network.mean.flatten().tolist(), std=network.std.flatten().tolist(), threshold=scored.threshold,
        tta_views=cfg.tta_views, pool=cfg.pool, approach=cfg.approach,
        metrics={k: metrics.get(k) for k in ("split", "n", "accuracy", "balanced_accuracy", "f1_positive",
                                              "recall_positive", "roc_auc")},
        versions=library_versions(), data_fingerprint=fingerprint(ctx.samples),
    )
    # Each file is atomic; deferring signals keeps the bundle's two files and metrics.json
    # together (a Ctrl-C here stops right after them).
    interrupts = ctx.live.interrupts
    with interrupts.deferred() if interrupts is not None else contextlib.nullcontext():
        save_bundle(ctx.run_dir, network.cpu(), card)
        network.to(ctx.device)
        atomic_write_json(ctx.run_dir / "metrics.json", metrics)
    write_history(ctx.run_dir, fitted.history)
    result = TrainResult(ctx.run_dir, metrics, card, cfg, fitted.history, train_seconds, fitted.notes, scored.probs)
    from ..evaluate.report import write_report_for_training

    write_report_for_training(result, ctx.cache, network, ctx.device, quiet=ctx.quiet)
    return result


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
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
    from ..evaluate.plots import plot_history

    plot_history(history, run_dir / "curves.png")
