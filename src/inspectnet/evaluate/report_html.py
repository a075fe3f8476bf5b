"""Rendering the run report: a :class:`ReportData` in, the HTML text of ``report.html`` out.

Nothing here reads the run folder or decodes data; that is ``report``'s job. The one
computation left here is the gallery's Grad-CAM, run only on the (at most
``2 * GALLERY_MAX``) images it shows.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from . import report_plots as rp
from .report_data import ReportData

__all__ = ["render_report"]

GALLERY_MAX = 12
TILE_PX = 144
THUMB_PX = 96
ECE_BINS = 10


def render_report(d: ReportData) -> str:
    """The report's HTML text (nothing is written).

    Args:
        d: Everything the report shows.

    Returns:
        One self-contained HTML page.
    """
    m = d.metrics
    pos = d.classes.index(d.positive)
    n = len(d.labels)
    has_eval = n > 0
    at = m.get("at_threshold") or {}
    rel_png, roc_png, thr_png, ece = _eval_figures(d, pos) if has_eval else (None, None, None, None)
    curves, curves_note = _curves(d)
    val = m.get("validation") or {}
    val_at = val.get("at_threshold") or {}
    summary = _summary(d, at, ece, pos)
    per_class = [{"label": c, **{k: _fmt(v) if isinstance(v, float) else v for k, v in pc.items()}}
                 for c, pc in (m.get("per_class") or {}).items()]
    card = dict(d.card)
    versions = card.pop("versions", {}) or {}
    card.pop("metrics", None)
    run_info = [(k, _short(m.get(k))) for k in ("epochs_run", "params_total", "params_trainable",
                                                "train_seconds", "total_seconds")
                if m.get(k) is not None]
    tpl = _environment().get_template("report.html.j2")
    return tpl.render(
        d=d, m=m, n=n, has_eval=has_eval, split=d.split or "–", summary=summary, at=at,
        val_at=val_at, counts=_counts_table(d), thumbs=_thumb_rows(d),
        curves=rp.png_data_uri(curves) if curves else None, curves_note=curves_note,
        head_rows=_head_rows(d.history), confusion=_confusion(m, d.classes), per_class=per_class,
        roc=roc_png, rel=rel_png, ece=ece, thr=thr_png, gallery=_gallery(d),
        config=_flatten(d.config), card=_flatten(card), versions=versions, run_info=run_info,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), loc=d.localization,
        esc=html.escape, anomaly=d.card.get("approach") == "anomaly",
    )


def _environment() -> Any:
    """The Jinja environment of the packaged templates, with the report's number filters."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("inspectnet.evaluate", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    return env


def _eval_figures(d: ReportData, pos: int) -> tuple[str, str | None, str, float]:
    """Reliability, ROC/PR and threshold figures as data URIs, and the ECE.

    The ROC/PR URI is None when the split holds only one of positive / negative.
    """
    score = d.probs[:, pos]
    rel, ece = rp.reliability_png(d.labels, d.probs, ECE_BINS)
    rel_png = rp.png_data_uri(rel)
    roc = rp.roc_pr_png(d.labels, score, pos, d.threshold, d.positive)
    roc_png = rp.png_data_uri(roc) if roc else None
    thr_png = rp.png_data_uri(rp.threshold_png(d.labels, score, pos, d.threshold,
                                               d.target_recall or 0.0, d.positive,
                                               d.split or "test"))
    return rel_png, roc_png, thr_png, ece


def _curves(d: ReportData) -> tuple[bytes | None, str | None]:
    """The training curves PNG, or None and the sentence that says why there are none."""
    curves = d.curves_png or rp.history_png(d.history)
    epochs = [r for r in d.history if r.get("stage") != "head"]
    if d.approach == "features" or not epochs:
        note = ("no epochs (features approach: head fitted on cached features)"
                if d.approach == "features"
                else "no training curves recorded for this run (history.csv is missing or empty)")
        return None, note
    return curves, None


def _summary(d: ReportData, at: dict[str, Any], ece: float | None,
             pos: int) -> list[tuple[str, str, str]]:
    """The headline rows: (name, value, what it means)."""
    m = d.metrics
    summary = [
        ("accuracy", _pct(m.get("accuracy")), _ci(m.get("accuracy_ci95")) + "argmax of the class probabilities"),
        ("balanced accuracy", _pct(m.get("balanced_accuracy")), "mean recall over the classes"),
        (f"recall of {d.positive}", _pct(at.get("recall_positive")),
         _ci(at.get("recall_positive_ci95")) + f"at threshold {_fmt(d.threshold)}"),
        ("false alarms", f"{at.get('false_alarms', '–')}",
         f"{_pct(at.get('false_alarm_rate'))} of the {_neg_count(d, pos)} non-{d.positive} images"),
        ("ROC AUC", _fmt(m.get("roc_auc")), f"{d.positive} vs rest"),
        ("ECE", _fmt(ece), f"expected calibration error, {ECE_BINS} bins"),
    ]
    loc = d.localization
    anomaly = d.card.get("approach") == "anomaly"  # its heatmap is the anomaly map, not a CAM
    if loc and loc.get("n_scored"):
        summary.append(("pointing game", _pct(loc["pointing_game"]),
                        f"{'anomaly-map' if anomaly else 'Grad-CAM'} peak on the damage, {loc['n_scored']} images"))
        if loc.get("pointing_game_layercam") is not None and not anomaly:
            summary.append(("pointing game, LayerCAM", _pct(loc["pointing_game_layercam"]),
                            "peak of the finer-stage map on the damage"))
    return summary


def _ci(ci: list[float] | None) -> str:
    """``95% CI 88.0–93.6% · `` (Wilson) to lead a tile's caption; empty without an interval."""
    return f"95% CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f}% · " if ci else ""


def _neg_count(d: ReportData, pos: int) -> int:
    return int((d.labels != pos).sum())


# ---------------------------------------------------------------- formatting


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


def _short(v: Any) -> str:
    """A config or card value for a table: floats without trailing zeros, lists compact."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if v is None or v == "" or v == {}:
        return "–"
    return str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", _short(v)))
    return out


# ---------------------------------------------------------------- tables


def _confusion(metrics: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
    cm = (metrics.get("confusion_matrix") or {}).get("matrix")
    if not cm:
        return None
    m = np.asarray(cm, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    cells = [[{"n": int(m[i, j]), "pct": _pct(norm[i, j]), "shade": float(norm[i, j]),
               "diag": i == j}
              for j in range(len(classes))] for i in range(len(classes))]
    return {"labels": (metrics["confusion_matrix"].get("labels") or classes), "cells": cells,
            "row_totals": [int(r) for r in rows[:, 0]]}


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


def _thumb_rows(d: ReportData) -> list[dict[str, Any]]:
    rows = []
    for c in d.classes:
        t = d.thumbs.get(c)
        if t is None:
            continue
        rows.append({"label": c,
                     "srcs": [rp.png_data_uri(rp.tile_png(im.permute(1, 2, 0).numpy(), THUMB_PX))
                              for im in t]})
    return rows


# ---------------------------------------------------------------- gallery


def _gallery(d: ReportData) -> dict[str, list[dict[str, Any]]]:
    """Misclassified (most confidently wrong first) and least confident correct images,
    each with its LayerCAM for the positive class laid over it (the heatmap that pointed at
    the damage most often on the synthetic masks; see ``explain.gradcam``)."""
    from ..explain.gradcam import grad_cam_batch

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
    batch = x.float().div(255).contiguous(memory_format=torch.channels_last)
    cams = grad_cam_batch(d.network, batch, pos, method="layercam")
    masks = _mask_index(d.masks)
    items = [_gallery_item(d, int(i), x[k], cams[k], pred, conf, pos, masks)
             for k, i in enumerate(chosen)]
    return {"wrong": items[: len(wrong)], "unsure": items[len(wrong) :], "n_wrong": n_wrong}


def _gallery_item(d: ReportData, i: int, image: torch.Tensor, cam: np.ndarray, pred: np.ndarray,
                  conf: np.ndarray, pos: int, masks: Any) -> dict[str, Any]:
    """One gallery tile (the image beside its heatmap, damage outlined) and its caption."""
    from ..explain.overlay import overlay_heatmap

    img = image.permute(1, 2, 0).numpy()
    over = _resize(overlay_heatmap(img, cam))
    outlined = (_outline_mask(over, masks, d.paths[i])
                if masks is not None and d.labels[i] == pos else False)
    pair = np.concatenate([_resize(img), np.full((TILE_PX, 4, 3), 255, np.uint8), over], axis=1)
    p_pos = float(d.probs[i, pos])
    return {
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
    }


def _mask_index(masks: Path | None) -> Any:
    """The masks' index, or None when there are none or they cannot be read (the gallery
    then shows heatmaps without outlines rather than failing)."""
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
    return np.array(Image.fromarray(np.ascontiguousarray(img))
                    .resize((TILE_PX, TILE_PX), Image.Resampling.BILINEAR))
