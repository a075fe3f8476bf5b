"""The run report: one self-contained HTML file (``RUN/report.html``) that a quality engineer
can open offline, mail, or archive next to the model.

Every picture is embedded as a base64 PNG ``data:`` URI; there are no scripts, fonts or
links to fetch. Two entry points gather a :class:`ReportData` for the same renderer
(:func:`~inspectnet.evaluate.report_html.render_report`):

* :func:`write_report_for_training`, called by ``train()`` with the images still in memory;
* :func:`write_report`, for ``inspectnet evaluate`` on a saved run folder.

Grad-CAM runs only for the gallery images (at most 24), so a report of a few hundred test
images costs a few seconds on a laptop CPU.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..io import atomic_write_text
from .eval_set import EvalSet, load_eval_set, thumbs_from
from .report_data import ReportData
from .report_html import render_report

# EvalSet, load_eval_set (eval_set), ReportData (report_data) and render_report (report_html)
# moved out of this module; they stay importable from here, as they were.
__all__ = ["EvalSet", "ReportData", "load_eval_set", "render_report", "write_report",
           "write_report_for_training"]

THUMBS_PER_CLASS = 6
# Localisation costs a Grad-CAM pass per image; at the end of training only a sample is
# scored (``inspectnet evaluate RUN --masks DIR`` scores them all).
LOC_MAX_TRAIN = 32


# ---------------------------------------------------------------- entry points


def write_report_for_training(result: Any, cache: dict[str, Any], network: torch.nn.Module,
                              device: torch.device | str, quiet: bool = False) -> Path:
    """Write ``RUN/report.html`` at the end of ``train()``.

    Uses ``result.probs[split]`` when train stored the probabilities it computed, so the
    report's numbers are exactly those of ``metrics.json``; otherwise recomputes them with
    the run's ``tta_views``.

    Args:
        result: The ``TrainResult`` (run_dir, metrics, card, config, history, notes).
        cache: ``{split: CachedImages}`` of the run.
        network: The trained network.
        device: Where it lives.
        quiet: No message on stderr.

    Returns:
        Path of the report.
    """
    from dataclasses import asdict

    cfg = result.config
    metrics = result.metrics
    split = metrics.get("split")
    images, labels, paths, probs = _training_eval_arrays(result, cache, network, device, split)
    thumbs = thumbs_from(cache.get("train"), result.card.classes, THUMBS_PER_CLASS)
    run_dir = Path(result.run_dir)
    curves = run_dir / "curves.png"
    localization = None
    masks = _auto_masks(getattr(cfg, "data", ""))
    if masks is not None and len(images):
        localization = _localization_safe(network, images, labels, paths, masks, result.card, quiet,
                                          max_images=LOC_MAX_TRAIN)
    notes = list(metrics.get("notes") or []) + list(getattr(result, "notes", []) or [])
    data = ReportData(
        run_dir=run_dir, title=run_dir.name, classes=list(result.card.classes),
        positive=result.card.positive_class, threshold=float(result.card.threshold),
        target_recall=getattr(cfg, "target_recall", None), metrics=metrics, split=split,
        labels=labels, probs=probs, images=images, paths=paths, network=network,
        counts=metrics.get("counts") or {}, thumbs=thumbs, thumbs_split="train",
        history=list(result.history), curves_png=curves.read_bytes() if curves.is_file() else None,
        approach=cfg.approach, config=cfg.to_dict(), card=asdict(result.card),
        notes=list(dict.fromkeys(notes)),  # train and metrics may both carry a note
        localization=localization, source="train", masks=masks,
    )
    path = _write(data, run_dir / "report.html")
    if not quiet:
        from rich.console import Console

        Console(stderr=True, highlight=False).print(f"  report: {path}")
    return path


def write_report(run: str | Path, data: str | Path | None = None, split: str = "test",
                 device: str = "cpu", metrics: dict[str, Any] | None = None,
                 masks: str | Path | None = None, out: str | Path | None = None, views: int = 1,
                 progress: bool = False) -> Path:
    """Write the HTML report of a saved run (``inspectnet evaluate``).

    Args:
        run: Run folder.
        data: Other data (folder or CSV); ``None`` uses the run's ``split.csv``.
        split: ``test``, ``val``, ``train``, or ``all`` (every image of ``data``).
        device: Torch device.
        metrics: The metrics ``evaluate()`` just computed (recomputed when None).
        masks: Damage masks (folder, data folder or manifest) for the localisation section;
            None looks for ``masks/`` or a manifest ``mask`` column beside the data.
        out: Report path; default ``RUN/report.html`` for the run's own test split, else
            ``RUN/report_<split>.html`` (mirrors the metrics JSON naming).
        views: Flip/rot90 views averaged per image (``evaluate`` uses 1).
        progress: Show a decoding progress bar.

    Returns:
        Path of the report.
    """
    from dataclasses import asdict

    from ..bundle import load_model
    from ..config import TrainConfig
    from ..decision import calibrate, decision_of
    from .run import full_metrics, predict_probs

    run = Path(run)
    lm = load_model(run, device=device)
    card = lm.card
    es = load_eval_set(run, card, data=data, split=split, progress=progress,
                       thumbs_per_class=THUMBS_PER_CLASS)
    probs = calibrate(predict_probs(lm.network, es.images, device=device, views=views), card.temperature)
    if metrics is None:
        metrics = full_metrics(es.labels, probs, card.classes, card.positive_class, card.threshold,
                               es.split, decision_of(card))
    metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
    cfg_path = run / "config.yaml"
    cfg = TrainConfig.load(cfg_path) if cfg_path.is_file() else None
    masks_src = (Path(masks) if masks is not None
                 else _auto_masks(data if data is not None else (cfg.data if cfg else "")))
    localization = None
    if masks_src is not None and len(es.images):
        # Masks the user named must work; guessed ones may be skipped.
        localization = _localization_safe(lm.network, es.images, es.labels, es.paths, masks_src,
                                          card, True, strict=masks is not None)
    curves = run / "curves.png"
    notes = list(metrics.get("notes") or [])
    if data is not None:
        notes.append(f"evaluated on {data} (split {split}), not on the data the run was trained on")
    rd = ReportData(
        run_dir=run, title=run.resolve().name, classes=list(card.classes),
        positive=card.positive_class, threshold=float(card.threshold),
        target_recall=cfg.target_recall if cfg else metrics.get("target_recall"), metrics=metrics,
        split=es.split, labels=es.labels, probs=probs, images=es.images, paths=es.paths,
        network=lm.network, counts=es.counts, thumbs=es.thumbs, thumbs_split=es.thumbs_split,
        history=_read_history(run / "history.csv"),
        curves_png=curves.read_bytes() if curves.is_file() else None,
        approach=(cfg.approach if cfg else card.approach), config=cfg.to_dict() if cfg else {},
        card=asdict(card), notes=notes, localization=localization, source="evaluate",
        masks=masks_src,
    )
    own_test = data is None and split == "test"
    target = Path(out) if out else run / ("report.html" if own_test else f"report_{split}.html")
    return _write(rd, target)


# ---------------------------------------------------------------- gathering


def _training_eval_arrays(result: Any, cache: dict[str, Any], network: torch.nn.Module,
                          device: torch.device | str, split: str | None
                          ) -> tuple[torch.Tensor, np.ndarray, list[Path], np.ndarray]:
    """Images, labels, paths and probabilities of the split train measured (empty if none)."""
    from ..decision import calibrate
    from .run import predict_probs

    c = cache.get(split) if split else None
    if c is None:
        return (torch.zeros((0, 3, 1, 1), dtype=torch.uint8), np.zeros(0, np.int64), [],
                np.zeros((0, len(result.card.classes))))
    stored = getattr(result, "probs", None)
    probs = stored.get(split) if isinstance(stored, dict) else None
    if probs is None or len(probs) != len(c):
        probs = calibrate(predict_probs(network, c.images, device=device,
                                        views=getattr(result.config, "tta_views", 1)), result.card.temperature)
    return c.images, c.labels.numpy(), list(c.paths), probs


def _auto_masks(data: str | Path | None) -> Path | None:
    """The data's damage masks when it has them (the synthetic set does), else None."""
    if not data:
        return None
    p = Path(data)
    root = p.parent if p.is_file() else p
    if (root / "masks").is_dir() and any((root / "masks").iterdir()):
        return root
    manifest = p if p.is_file() else root / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "mask" in (reader.fieldnames or []):
                return manifest
            first = next(reader, None) if "path" in (reader.fieldnames or []) else None
        if first and first.get("path") and p.is_file():
            # A run's split.csv (how compare hands one split to every approach): look
            # beside the images, whose data folder holds the masks.
            img = Path(first["path"])
            img = img if img.is_absolute() else manifest.parent / img
            for cand in (img.parent.parent, img.parent):
                if cand != root and (cand / "masks").is_dir():
                    return cand
    return None


def _localization_safe(network: torch.nn.Module, images: torch.Tensor, labels: np.ndarray,
                       paths: list[Path], masks: Path, card: Any, quiet: bool, strict: bool = False,
                       max_images: int | None = None) -> dict[str, Any] | None:
    """Localisation scores, or None when the masks cannot be used (never fails a report
    for masks found by guessing; ``strict`` re-raises when the user named them)."""
    from .localization import localization_scores

    try:
        return localization_scores(network, images, labels, paths, masks, card.positive_index,
                                   card.img_size, threshold=float(card.threshold),
                                   max_images=max_images)
    except (DataError, ValueError, OSError) as e:
        if strict:
            raise
        if not quiet:
            import sys

            print(f"  localisation skipped: {e}", file=sys.stderr)
        return None


def _read_history(path: Path) -> list[dict[str, Any]]:
    """``history.csv`` back into dicts of numbers; empty cells are left out, as train wrote them."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v in ("", None):
                    continue
                try:
                    row[k] = float(v) if k != "stage" else v
                except ValueError:
                    row[k] = v
            if "epoch" in row:
                row["epoch"] = int(row["epoch"])
            rows.append(row)
    return rows


def _write(data: ReportData, path: Path) -> Path:
    return atomic_write_text(path, render_report(data))
