"""The run report: one self-contained HTML file (``RUN/report.html``) that a quality engineer
can open offline, mail, or archive next to the model.

Every picture is embedded as a base64 PNG ``data:`` URI; there are no scripts, fonts or
links to fetch. Two entry points feed the same renderer:

* :func:`write_report_for_training`, called by ``train()`` with the images still in memory;
* :func:`write_report`, for ``inspectnet evaluate`` on a saved run folder.

Grad-CAM runs only for the gallery images (at most 24), so a report of a few hundred test
images costs a few seconds on a laptop CPU.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..io import atomic_write_text
from . import report_plots as rp

__all__ = ["EvalSet", "ReportData", "load_eval_set", "render_report", "write_report", "write_report_for_training"]

GALLERY_MAX = 12
THUMBS_PER_CLASS = 6
TILE_PX = 144
THUMB_PX = 96
ECE_BINS = 10
# Localisation costs a Grad-CAM pass per image; at the end of training only a sample is
# scored (``inspectnet evaluate RUN --masks DIR`` scores them all).
LOC_MAX_TRAIN = 32


@dataclass
class EvalSet:
    """Decoded images of the evaluated split, with thumbnails of each class for the report."""

    split: str
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: np.ndarray  # (N,) int64
    paths: list[Path]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    thumbs: dict[str, torch.Tensor] = field(default_factory=dict)  # class -> (k, 3, S, S) uint8
    thumbs_split: str = "train"
    data: str = ""


@dataclass
class ReportData:
    """Everything the renderer needs; both entry points fill one of these."""

    run_dir: Path
    title: str
    classes: list[str]
    positive: str
    threshold: float
    target_recall: float | None
    metrics: dict[str, Any]
    split: str | None
    labels: np.ndarray
    probs: np.ndarray
    images: torch.Tensor
    paths: list[Path]
    network: torch.nn.Module
    counts: dict[str, dict[str, int]]
    thumbs: dict[str, torch.Tensor]
    thumbs_split: str
    history: list[dict[str, Any]]
    curves_png: bytes | None
    approach: str
    config: dict[str, Any]
    card: dict[str, Any]
    notes: list[str]
    localization: dict[str, Any] | None = None
    source: str = "train"
    masks: Path | None = None  # damage masks, outlined on the gallery's heatmaps


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
    from .run import predict_probs

    cfg = result.config
    metrics = result.metrics
    split = metrics.get("split")
    c = cache.get(split) if split else None
    if c is not None:
        stored = getattr(result, "probs", None)
        probs = stored.get(split) if isinstance(stored, dict) else None
        if probs is None or len(probs) != len(c):
            probs = predict_probs(network, c.images, device=device, views=getattr(cfg, "tta_views", 1))
        images, labels, paths = c.images, c.labels.numpy(), list(c.paths)
    else:
        images, labels, paths = torch.zeros((0, 3, 1, 1), dtype=torch.uint8), np.zeros(0, np.int64), []
        probs = np.zeros((0, len(result.card.classes)))
    thumbs = _thumbs_from(cache.get("train"), result.card.classes)
    run_dir = Path(result.run_dir)
    curves = run_dir / "curves.png"
    localization = None
    masks = _auto_masks(getattr(cfg, "data", ""))
    if masks is not None and len(images):
        localization = _localization_safe(network, images, labels, paths, masks, result.card, quiet,
                                          max_images=LOC_MAX_TRAIN)
    from dataclasses import asdict

    data = ReportData(
        run_dir=run_dir, title=run_dir.name, classes=list(result.card.classes), positive=result.card.positive_class,
        threshold=float(result.card.threshold), target_recall=getattr(cfg, "target_recall", None), metrics=metrics,
        split=split, labels=labels, probs=probs, images=images, paths=paths, network=network,
        counts=metrics.get("counts") or {}, thumbs=thumbs, thumbs_split="train", history=list(result.history),
        curves_png=curves.read_bytes() if curves.is_file() else None, approach=cfg.approach,
        config=cfg.to_dict(), card=asdict(result.card),
        notes=list(dict.fromkeys(list(metrics.get("notes") or []) + list(getattr(result, "notes", []) or []))),
        localization=localization, source="train", masks=masks,
    )
    path = _write(data, run_dir / "report.html")
    if not quiet:
        from rich.console import Console

        Console(stderr=True, highlight=False).print(f"  report: {path}")
    return path


def write_report(run: str | Path, data: str | Path | None = None, split: str = "test", device: str = "cpu",
                 metrics: dict[str, Any] | None = None, masks: str | Path | None = None,
                 out: str | Path | None = None, views: int = 1, progress: bool = False) -> Path:
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
    from .run import full_metrics, predict_probs

    run = Path(run)
    lm = load_model(run, device=device)
    card = lm.card
    es = load_eval_set(run, card, data=data, split=split, progress=progress, thumbs_per_class=THUMBS_PER_CLASS)
    probs = predict_probs(lm.network, es.images, device=device, views=views)
    if metrics is None:
        metrics = full_metrics(es.labels, probs, card.classes, card.positive_class, card.threshold, es.split)
    metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
    cfg_path = run / "config.yaml"
    cfg = TrainConfig.load(cfg_path) if cfg_path.is_file() else None
    history = _read_history(run / "history.csv")
    masks_src = Path(masks) if masks is not None else _auto_masks(data if data is not None else (cfg.data if cfg else ""))
    localization = None
    if masks_src is not None and len(es.images):
        localization = _localization_safe(lm.network, es.images, es.labels, es.paths, masks_src, card, True,
                                          strict=masks is not None)
    counts = es.counts
    curves = run / "curves.png"
    notes = list(metrics.get("notes") or [])
    if data is not None:
        notes.append(f"evaluated on {data} (split {split}), not on the data the run was trained on")
    rd = ReportData(
        run_dir=run, title=run.resolve().name, classes=list(card.classes), positive=card.positive_class,
        threshold=float(card.threshold), target_recall=cfg.target_recall if cfg else metrics.get("target_recall"),
        metrics=metrics, split=es.split, labels=es.labels, probs=probs, images=es.images, paths=es.paths,
        network=lm.network, counts=counts, thumbs=es.thumbs, thumbs_split=es.thumbs_split, history=history,
        curves_png=curves.read_bytes() if curves.is_file() else None,
        approach=(cfg.approach if cfg else card.approach), config=cfg.to_dict() if cfg else {}, card=asdict(card),
        notes=notes, localization=localization, source="evaluate", masks=masks_src,
    )
    target = Path(out) if out else run / ("report.html" if data is None and split == "test" else f"report_{split}.html")
    return _write(rd, target)


def load_eval_set(run: str | Path, card: Any, data: str | Path | None = None, split: str = "test",
                  progress: bool = False, thumbs_per_class: int = 0, positives_only: bool = False) -> EvalSet:
    """Decode the images ``evaluate`` would score (same split rules), plus class thumbnails.

    Raises:
        DataError: no ``split.csv`` and no ``data``, unknown labels, or an empty split.
    """
    from ..data.cache import build_cache
    from ..data.split import counts_table
    from .run import eval_samples

    run = Path(run)
    samples, chosen, eval_split = eval_samples(run, card.classes, data, split)
    if positives_only:
        chosen = [s for s in chosen if s.label == card.positive_class]
    if not chosen:
        raise DataError(f"no images in split {eval_split!r}")
    thumb_split = "train" if any(s.split == "train" for s in samples) else eval_split
    extra = []
    if thumbs_per_class and thumb_split != eval_split:
        for c in card.classes:
            extra += [s for s in samples if s.split == thumb_split and s.label == c][:thumbs_per_class]
    cache, _ = build_cache(chosen + extra, card.classes, card.img_size, progress=progress, skip_bad=True)
    if eval_split not in cache:
        raise DataError(f"no readable images in split {eval_split!r}")
    c = cache[eval_split]
    thumbs = _thumbs_from(cache.get(thumb_split), card.classes, thumbs_per_class) if thumbs_per_class else {}
    return EvalSet(split=eval_split, images=c.images, labels=c.labels.numpy(), paths=list(c.paths),
                   counts=counts_table(samples), thumbs=thumbs, thumbs_split=thumb_split,
                   data=str(data) if data is not None else str(run / "split.csv"))


# ---------------------------------------------------------------- helpers


def _thumbs_from(c: Any, classes: list[str], k: int = THUMBS_PER_CLASS) -> dict[str, torch.Tensor]:
    if c is None:
        return {}
    out = {}
    labels = c.labels.numpy() if torch.is_tensor(c.labels) else np.asarray(c.labels)
    for i, name in enumerate(classes):
        rows = np.flatnonzero(labels == i)[:k]
        if len(rows):
            out[name] = c.images[torch.as_tensor(rows)]
    return out


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


def _localization_safe(network: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, paths: list[Path],
                       masks: Path, card: Any, quiet: bool, strict: bool = False,
                       max_images: int | None = None) -> dict[str, Any] | None:
    """Localisation scores, or None when the masks cannot be used (never fails a report
    for masks found by guessing; ``strict`` re-raises when the user named them)."""
    from .localization import localization_scores

    try:
        return localization_scores(network, images, labels, paths, masks, card.positive_index, card.img_size,
                                   threshold=float(card.threshold), max_images=max_images)
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


# ---------------------------------------------------------------- rendering


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if np.isnan(v):
            return "–"
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{100 * float(v):.{digits}f}%"


def _confusion(metrics: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
    cm = (metrics.get("confusion_matrix") or {}).get("matrix")
    if not cm:
        return None
    m = np.asarray(cm, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    cells = [[{"n": int(m[i, j]), "pct": _pct(norm[i, j]), "shade": float(norm[i, j]), "diag": i == j}
              for j in range(len(classes))] for i in range(len(classes))]
    return {"labels": (metrics["confusion_matrix"].get("labels") or classes), "cells": cells,
            "row_totals": [int(r) for r in rows[:, 0]]}


def _gallery(d: ReportData) -> dict[str, list[dict[str, Any]]]:
    """Misclassified (most confidently wrong first) and least confident correct images,
    each with its LayerCAM for the positive class laid over it (the heatmap that pointed at
    the damage most often on the synthetic masks; see ``explain.gradcam``)."""
    from ..explain.gradcam import grad_cam_batch
    from ..explain.overlay import overlay_heatmap

    n = len(d.labels)
    if n == 0:
        return {"wrong": [], "unsure": [], "n_wrong": 0}
    pred = d.probs.argmax(1)
    conf = d.probs.max(1)
    wrong = np.flatnonzero(pred != d.labels)
    n_wrong = len(wrong)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:GALLERY_MAX]
    right = np.flatnonzero(pred == d.labels)
    unsure = right[np.argsort(conf[right], kind="stable")][:GALLERY_MAX]
    chosen = np.concatenate([wrong, unsure]).astype(np.int64)
    if len(chosen) == 0:
        return {"wrong": [], "unsure": [], "n_wrong": 0}
    pos = d.classes.index(d.positive)
    x = d.images[torch.as_tensor(chosen)]
    cams = grad_cam_batch(d.network, x.float().div(255).contiguous(memory_format=torch.channels_last), pos,
                          method="layercam")
    masks = _mask_index(d.masks)
    items = []
    for k, i in enumerate(chosen):
        img = x[k].permute(1, 2, 0).numpy()
        over = _resize(overlay_heatmap(img, cams[k]))
        outlined = _outline_mask(over, masks, d.paths[i]) if masks is not None and d.labels[i] == pos else False
        pair = np.concatenate([_resize(img), np.full((TILE_PX, 4, 3), 255, np.uint8), over], axis=1)
        p_pos = float(d.probs[i, pos])
        items.append({
            "src": rp.png_data_uri(rp.tile_png(pair)),
            "name": Path(d.paths[i]).name,
            "path": str(d.paths[i]),
            "true": d.classes[int(d.labels[i])],
            "pred": d.classes[int(pred[i])],
            "conf": _fmt(float(conf[i])),
            "p_pos": _fmt(p_pos),
            "flagged": p_pos >= d.threshold,
            "wrong": int(pred[i]) != int(d.labels[i]),
            "outlined": outlined,
        })
    return {"wrong": items[: len(wrong)], "unsure": items[len(wrong) :], "n_wrong": n_wrong}


def _mask_index(masks: Path | None) -> Any:
    if masks is None:
        return None
    from .localization import MaskIndex

    try:
        return MaskIndex(masks)
    except (DataError, OSError):
        return None


def _outline_mask(tile: np.ndarray, masks: Any, path: Path) -> bool:
    """Draw the damage mask's outline (white) onto a tile in place; False when there is no mask."""
    from ..explain.gradcam import dilate
    from .localization import load_mask

    mpath = masks.find(path)
    if mpath is None:
        return False
    try:
        m = load_mask(mpath, TILE_PX)
    except OSError:
        return False
    edge = dilate(m, 1) & ~m
    tile[edge] = (255, 255, 255)
    return True


def _resize(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == (TILE_PX, TILE_PX):
        return np.array(img)
    return np.array(Image.fromarray(np.ascontiguousarray(img)).resize((TILE_PX, TILE_PX), Image.Resampling.BILINEAR))


def _thumb_rows(d: ReportData) -> list[dict[str, Any]]:
    rows = []
    for c in d.classes:
        t = d.thumbs.get(c)
        if t is None:
            continue
        rows.append({"label": c, "srcs": [rp.png_data_uri(rp.tile_png(im.permute(1, 2, 0).numpy(), THUMB_PX))
                                          for im in t]})
    return rows


def _counts_table(d: ReportData) -> dict[str, Any]:
    splits = [s for s in ("train", "val", "test") if s in d.counts]
    rows = []
    for c in d.classes:
        rows.append({"label": c, "n": [d.counts[s].get(c, 0) for s in splits],
                     "total": sum(d.counts[s].get(c, 0) for s in splits)})
    totals = [sum(d.counts[s].values()) for s in splits]
    return {"splits": splits, "rows": rows, "totals": totals, "total": sum(totals)}


def _head_rows(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for r in history:
        if r.get("stage") == "head":
            out.append({k: _fmt(v, 4) if isinstance(v, float) else str(v) for k, v in r.items()})
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", _short(v)))
    return out


def _short(v: Any) -> str:
    """A config or card value for a table: floats without trailing zeros, lists compact."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if v is None or v == "" or v == {}:
        return "–"
    return str(v)


def render_report(d: ReportData) -> str:
    """The report's HTML text (nothing is written)."""
    import jinja2

    m = d.metrics
    pos = d.classes.index(d.positive)
    n = len(d.labels)
    has_eval = n > 0
    score = d.probs[:, pos] if has_eval else np.zeros(0)
    at = m.get("at_threshold") or {}
    ece = None
    rel_png = roc_png = thr_png = None
    if has_eval:
        rel, ece = rp.reliability_png(d.labels, d.probs, ECE_BINS)
        rel_png = rp.png_data_uri(rel)
        roc = rp.roc_pr_png(d.labels, score, pos, d.threshold, d.positive)
        roc_png = rp.png_data_uri(roc) if roc else None
        thr_png = rp.png_data_uri(rp.threshold_png(d.labels, score, pos, d.threshold, d.target_recall or 0.0,
                                                   d.positive, d.split or "test"))
    curves = d.curves_png or rp.history_png(d.history)
    epochs = [r for r in d.history if r.get("stage") != "head"]
    curves_note = None
    if d.approach == "features" or not epochs:
        curves = None
        curves_note = ("no epochs (features approach: head fitted on cached features)" if d.approach == "features"
                       else "no training curves recorded for this run (history.csv is missing or empty)")
    val = m.get("validation") or {}
    val_at = val.get("at_threshold") or {}

    summary = [
        ("accuracy", _pct(m.get("accuracy")), "argmax of the class probabilities"),
        ("balanced accuracy", _pct(m.get("balanced_accuracy")), "mean recall over the classes"),
        (f"recall of {d.positive}", _pct(at.get("recall_positive")), f"at threshold {_fmt(d.threshold)}"),
        ("false alarms", f"{at.get('false_alarms', '–')}",
         f"{_pct(at.get('false_alarm_rate'))} of the {_neg_count(d, pos)} non-{d.positive} images"),
        ("ROC AUC", _fmt(m.get("roc_auc")), f"{d.positive} vs rest"),
        ("ECE", _fmt(ece), f"expected calibration error, {ECE_BINS} bins"),
    ]
    loc = d.localization
    if loc and loc.get("n_scored"):
        summary.append(("pointing game", _pct(loc["pointing_game"]),
                        f"Grad-CAM peak on the damage, {loc['n_scored']} images"))
        if loc.get("pointing_game_layercam") is not None:
            summary.append(("pointing game, LayerCAM", _pct(loc["pointing_game_layercam"]),
                            "peak of the finer-stage map on the damage"))
    per_class = [{"label": c, **{k: _fmt(v) if isinstance(v, float) else v for k, v in pc.items()}}
                 for c, pc in (m.get("per_class") or {}).items()]
    card = dict(d.card)
    versions = card.pop("versions", {}) or {}
    card.pop("metrics", None)
    run_info = [(k, _short(m.get(k))) for k in ("epochs_run", "params_total", "params_trainable",
                                                "train_seconds", "total_seconds") if m.get(k) is not None]

    env = jinja2.Environment(loader=jinja2.PackageLoader("inspectnet.evaluate", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    tpl = env.get_template("report.html.j2")
    return tpl.render(
        d=d, m=m, n=n, has_eval=has_eval, split=d.split or "–", summary=summary, at=at, val_at=val_at,
        counts=_counts_table(d), thumbs=_thumb_rows(d), curves=rp.png_data_uri(curves) if curves else None,
        curves_note=curves_note, head_rows=_head_rows(d.history), confusion=_confusion(m, d.classes),
        per_class=per_class, roc=roc_png, rel=rel_png, ece=ece, thr=thr_png, gallery=_gallery(d),
        config=_flatten(d.config), card=_flatten(card), versions=versions, run_info=run_info,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), loc=loc, esc=html.escape,
    )


def _neg_count(d: ReportData, pos: int) -> int:
    return int((d.labels != pos).sum())
