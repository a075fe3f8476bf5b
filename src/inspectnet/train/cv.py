"""``inspectnet train DATA --cv K``: K-fold cross-validation of the whole recipe.

One test split of a small data set is a noisy number: 60 test images put a 90% accuracy
anywhere between 80% and 95%. Cross-validation trains the recipe K times, each time testing
on another fold (stratified by label, a ``group`` kept in one fold; the validation split is
carved from the other folds as usual), so every image is tested once:

- ``RUN/folds/fold-i.csv``: the manifest of fold i (``split`` = test for the fold, train/val
  for the rest), given to :func:`~inspectnet.train.run.train` as its data;
- ``RUN/fold-1 .. RUN/fold-K``: ordinary run folders;
- ``RUN/cv.json``: each fold's numbers, mean and standard deviation over the folds, and the
  pooled out-of-fold accuracy and recall with their 95% Wilson intervals.

Not to be confused with ``cv_folds``, the cross-validation *inside* one features run that
chooses the head's regularisation.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..data.sources import Sample, discover
from ..data.split import stratified_folds, stratified_split, write_split_csv
from ..errors import ConfigError, DataError
from ..evaluate.metrics import ci95, pct_ci, pick_positive
from ..io import atomic_write_json
from . import prepare

METRICS = ("accuracy", "balanced_accuracy", "recall_positive", "roc_auc")


def cross_validate(data: str | Path | None, k: int = 5, *, config: TrainConfig | None = None,
                   out: str | Path | None = None, quiet: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train the recipe once per fold and summarise the folds.

    Args:
        data: Folder of class folders or CSV manifest (a ``group`` column keeps groups in one
            fold). A split the data gives (pre-split folders, a ``split`` column) is ignored:
            the folds are made from all the images.
        k: Folds (2 to 20).
        config: A base config; keyword overrides win (as for ``train``).
        out: The cross-validation folder (default ``runs/cv-<approach>``).
        quiet: No progress bars or messages.
        **overrides: Any ``TrainConfig`` field, e.g. ``approach="scratch", epochs=1``.

    Returns:
        The contents of ``RUN/cv.json`` (``folds``, ``summary``, ``pooled``), with ``_written_to``.

    Raises:
        ConfigError: ``k`` out of range, or ``RUN/cv.json`` exists and ``overwrite`` is off.
        DataError: a class has fewer than ``k`` images (or groups); a fold's training fails.
    """
    from .run import train

    cfg = prepare.resolve_config(config, data, overrides)
    if not 2 <= k <= 20:
        raise ConfigError(f"--cv {k}: cross-validation needs 2 to 20 folds", key="cv")
    root = Path(out or f"runs/cv-{cfg.approach}")
    if (root / "cv.json").is_file() and not cfg.overwrite:
        raise ConfigError(f"{root} already holds a cross-validation (cv.json exists); pass --overwrite "
                          "to replace it, or choose another --out", key="overwrite")
    samples = discover(cfg.data)
    counts = Counter(s.label for s in samples)
    positive = pick_positive(sorted(counts), dict(counts), cfg.positive)  # one positive for every fold
    manifests = fold_manifests(samples, k, cfg, root / "folds")
    rows: list[dict[str, Any]] = []
    for i, manifest in enumerate(manifests, 1):
        if not quiet:
            from rich.console import Console

            Console(stderr=True, highlight=False).print(f"[bold]cross-validation: fold {i}/{k}[/]")
        res = train(manifest, config=config, out=root / f"fold-{i}", quiet=quiet,
                    **{**overrides, "positive": positive})
        rows.append(fold_row(i, res.run_dir, res.metrics))
    notes = ["the data's own split is ignored: the folds are made from all its images"] \
        if any(s.split is not None for s in samples) else []
    result = {"k": k, "positive_class": positive, "approach": cfg.approach, "seed": cfg.seed,
              "model": rows[0].get("model"), "folds": rows, "summary": summarize(rows),
              "pooled": pooled(rows), "notes": notes}
    atomic_write_json(root / "cv.json", result)
    return {**result, "_written_to": str(root / "cv.json")}


def fold_manifests(samples: list[Sample], k: int, cfg: TrainConfig, folder: Path) -> list[Path]:
    """Write ``folder/fold-i.csv`` for i = 1..k: the fold as test, val carved from the rest.

    Raises:
        DataError: a class has fewer than ``k`` images (or groups): some fold would miss it.
    """
    base = [dataclasses.replace(s, split=None) for s in samples]
    units = Counter(s.label for s in {(s.label, s.group or f"path:{s.path}"): s for s in base}.values())
    short = sorted(c for c, n in units.items() if n < k)
    if short:
        raise DataError(f"--cv {k}: class(es) {', '.join(f'{c!r} ({units[c]})' for c in short)} have fewer "
                        f"than {k} images (groups, where a group column gives them); every fold needs "
                        "each class in its test split: use fewer folds or add images")
    fold = stratified_folds(base, k, cfg.seed)
    paths = []
    for i in range(k):
        one = [dataclasses.replace(s, split="test" if f == i else None) for s, f in zip(base, fold)]
        stratified_split([s for s in one if s.split is None], cfg.val_fraction, 0.0, cfg.seed)
        paths.append(write_split_csv(one, folder / f"fold-{i + 1}.csv"))
    return paths


def fold_row(i: int, run_dir: Path, m: dict[str, Any]) -> dict[str, Any]:
    """One fold's line of ``cv.json``: its metrics and the counts the pooled intervals need."""
    cm = np.asarray((m.get("confusion_matrix") or {}).get("matrix") or [[0]])
    pos = m["classes"].index(m["positive_class"]) if m.get("classes") else 0
    at = m.get("at_threshold") or {}
    flagged_pos = (at.get("flagged") or 0) - (at.get("false_alarms") or 0)
    return {"fold": i, "run_dir": str(run_dir), "model": m.get("model"), "n": m.get("n"),
            **{key: m.get(key) for key in METRICS},
            "recall_at_threshold": at.get("recall_positive"), "threshold": at.get("threshold"),
            "correct": int(np.trace(cm)), "positives": int(cm[pos].sum()), "found": int(cm[pos, pos]),
            "found_at_threshold": int(flagged_pos), "missed_at_threshold": int(at.get("missed") or 0)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Mean and standard deviation (ddof 1: the folds are a sample) of each metric over the
    folds where it is defined (ROC-AUC is not on a fold without both classes)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for key in (*METRICS, "recall_at_threshold"):
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        out[key] = {"mean": float(np.mean(vals)) if vals else None,
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None, "folds": len(vals)}
    return out


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every image was tested once: accuracy and recall over all of them, with 95% Wilson
    intervals (the folds' models differ, so this is the recipe's interval, not one model's)."""
    n, correct = sum(r["n"] or 0 for r in rows), sum(r["correct"] for r in rows)
    pos, found = sum(r["positives"] for r in rows), sum(r["found"] for r in rows)
    hit = sum(r["found_at_threshold"] for r in rows)
    at_pos = hit + sum(r["missed_at_threshold"] for r in rows)
    return {"n": n, "accuracy": correct / n if n else None, "accuracy_ci95": ci95(correct, n),
            "positives": pos, "recall_positive": found / pos if pos else None,
            "recall_positive_ci95": ci95(found, pos),
            "recall_at_threshold": hit / at_pos if at_pos else None,
            "recall_at_threshold_ci95": ci95(hit, at_pos)}


def cv_table(result: dict[str, Any]) -> Any:
    """A rich table: one line per fold, mean ± std, and the pooled numbers with intervals."""
    from rich.table import Table

    def f(v: float | None, pct: bool = True) -> str:
        return "-" if v is None else f"{100 * v:.1f}%" if pct else f"{v:.3f}"

    t = Table(title=f"inspectnet train --cv {result['k']} · {result['approach']} · {result.get('model')} "
                    f"(positive: {result['positive_class']})",
              caption="mean ± std over the folds (ddof 1); pooled: every image tested once, [95% Wilson interval]")
    for col in ("fold", "n", "accuracy", "bal. acc", "recall pos", "ROC-AUC"):
        t.add_column(col, justify="left" if col == "fold" else "right", no_wrap=True)
    for r in result["folds"]:
        t.add_row(str(r["fold"]), str(r["n"]), f(r["accuracy"]), f(r["balanced_accuracy"]),
                  f(r["recall_positive"]), f(r["roc_auc"], False))
    s = result["summary"]

    def ms(key: str, pct: bool = True) -> str:
        m, sd = s[key]["mean"], s[key]["std"]
        return f"{f(m, pct)} ± {f(sd, pct) if sd is not None else '-'}" if m is not None else "-"

    t.add_row("mean ± std", "", ms("accuracy"), ms("balanced_accuracy"), ms("recall_positive"),
              ms("roc_auc", False), end_section=True)
    p = result["pooled"]
    t.add_row("pooled", str(p["n"]), pct_ci(p["accuracy"], p["accuracy_ci95"]), "",
              pct_ci(p["recall_positive"], p["recall_positive_ci95"]), "")
    return t
