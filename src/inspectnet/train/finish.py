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

from ..bundle import ModelCard, drop_previous_run, library_versions, save_bundle
from ..config import TrainConfig
from ..data.cache import fingerprint
from ..data.split import counts_table
from ..decision import Decision, calibrate, choose_decision, ece, fit_temperature
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
    """The final model's numbers: the calibration, the decision rule and the metrics."""

    metrics: dict[str, Any]  # the test split's (validation's when there is no test split)
    threshold: float  # the inspection operating point (target recall) on validation
    validation: dict[str, Any] | None
    probs: dict[str, np.ndarray]  # the final split's calibrated probabilities, for the report
    temperature: float = 1.0
    decision: Decision | None = None


def _validation(ctx: Context, fitted: Fitted) -> tuple[np.ndarray, np.ndarray] | None:
    """Validation probabilities and labels: the approach's own (out-of-fold for CV heads),
    else the network's on the validation split; None without either."""
    if fitted.val_labels is not None and fitted.val_probs is not None:
        return fitted.val_probs, fitted.val_labels
    if "val" not in ctx.cache:
        return None
    pv = fitted.val_probs
    if pv is None:
        pv = predict_probs(fitted.network, ctx.cache["val"].images, device=ctx.device, views=ctx.cfg.tta_views)
    return pv, ctx.cache["val"].labels.numpy()


def _decide_on_validation(ctx: Context, fitted: Fitted) -> tuple[float, float, Decision, dict[str, Any] | None]:
    """Temperature, recall threshold and decision rule, all fitted on validation."""
    cfg, pos = ctx.cfg, ctx.classes.index(ctx.positive)
    val = _validation(ctx, fitted)
    train_counts = np.bincount(ctx.cache["train"].labels.numpy(), minlength=ctx.n_classes) \
        if "train" in ctx.cache else None
    if val is None:
        return 1.0, 0.5, choose_decision(cfg.objective, np.zeros((0, ctx.n_classes)), np.zeros(0), pos, 0.5,
                                         train_counts, cfg.cost_matrix), None
    pv, yv = val
    temperature = fit_temperature(pv, yv) if cfg.calibrate else 1.0
    pv = calibrate(pv, temperature)
    threshold = threshold_for_recall(yv, pv[:, pos], pos, cfg.target_recall)
    decision = choose_decision(cfg.objective, pv, yv, pos, threshold, train_counts, cfg.cost_matrix)
    return temperature, threshold, decision, full_metrics(yv, pv, ctx.classes, ctx.positive, threshold,
                                                          fitted.val_name, decision)


def score(ctx: Context, fitted: Fitted) -> Scored:
    """Calibration, threshold and decision rule on validation, then every number of the test split."""
    temperature, threshold, decision, val_metrics = _decide_on_validation(ctx, fitted)
    final = "test" if "test" in ctx.cache else "val"
    if final not in ctx.cache:
        return Scored({"split": None, "n": 0}, threshold, val_metrics, {}, temperature, decision)
    raw = predict_probs(fitted.network, ctx.cache[final].images, device=ctx.device, views=ctx.cfg.tta_views)
    probs = calibrate(raw, temperature)
    y = ctx.cache[final].labels.numpy()
    metrics = full_metrics(y, probs, ctx.classes, ctx.positive, threshold, final, decision)
    metrics["calibration"] = {"temperature": temperature, "fitted_on": fitted.val_name if val_metrics else None,
                              "split": final, "ece_before": ece(raw, y), "ece_after": ece(probs, y)}
    return Scored(metrics, threshold, val_metrics, {final: probs}, temperature, decision)


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
        temperature=scored.temperature, objective=cfg.objective, **_card_decision(scored.decision),
        tta_views=cfg.tta_views, pool=cfg.pool, approach=cfg.approach, **_anomaly_card(network),
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
    drop_previous_run(ctx.run_dir)  # everything of the new run is written: the replaced one can go
    return result


def _anomaly_card(network: Any) -> dict[str, Any]:
    """An anomaly detector's score -> logit mapping, for predictors that report the score."""
    if not getattr(network, "is_anomaly", False):
        return {}
    return {"anomaly_center": float(network.center), "anomaly_scale": float(network.scale)}


def _card_decision(decision: Decision | None) -> dict[str, Any]:
    if decision is None:
        return {"decision": "argmax"}
    return {"decision": decision.rule, "decision_threshold": decision.threshold if decision.rule == "threshold" else None,
            "cost_matrix": decision.cost if decision.rule == "cost" else None}


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
