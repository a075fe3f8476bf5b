"""Pixel-level scores of anomaly maps against damage masks: pixel AUROC and AUPRO.

An anomaly detector (``--approach anomaly``) answers *where* as well as *whether*. Two
numbers from the anomaly-detection literature (MVTec AD, Bergmann et al. 2019/2021) say how
well its maps find the damage, over every test image (intact ones add background pixels):

* **pixel AUROC**: the ROC area of the map's value as a per-pixel damage score. Large
  defects dominate it, and the background is so large that it saturates near 1 easily.
* **AUPRO** (area under the per-region-overlap curve up to 30% false-positive rate,
  normalised to [0, 1]): every connected damage region counts the same, however small, so
  a map that finds the big chip but misses the hairline crack scores lower. It is the
  number to compare detectors by; 0.3 is the usual integration limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FPR_LIMIT = 0.3  # AUPRO integrates the PRO curve over false-positive rates in [0, 0.3]
_STEPS = 200  # thresholds of the PRO curve (the area moves by < 1e-3 beyond this)


def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float | None:
    """ROC area of per-pixel scores ``maps`` for boolean ``masks`` (same shapes).

    Returns:
        The area, or None when the pixels hold only one kind (no damage, or nothing else).
    """
    from sklearn.metrics import roc_auc_score

    s, y = _flat(maps, masks)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def aupro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = FPR_LIMIT) -> float | None:
    """Normalised area under the per-region-overlap curve for false-positive rates up to ``fpr_limit``.

    For a threshold ``t``, PRO is the mean over connected damage regions (8-connected, per
    image) of the share of the region's pixels at or above ``t``; the false-positive rate is
    the share of damage-free pixels at or above ``t``. The curve is sampled at thresholds
    that are quantiles of the damage-free pixels' scores, so that the false-positive rates
    step evenly from ``fpr_limit`` to 0.

    Returns:
        The area divided by ``fpr_limit`` (1 is perfect, about ``fpr_limit / 2`` is chance),
        or None without a damage region or without a damage-free pixel.
    """
    from scipy import ndimage

    regions: list[np.ndarray] = []
    for m, k in zip(maps, masks):
        lab, n = ndimage.label(np.asarray(k, dtype=bool), structure=np.ones((3, 3)))
        regions += [np.sort(np.asarray(m)[lab == i]) for i in range(1, n + 1)]
    s, y = _flat(maps, masks)
    background = np.sort(s[~y])
    if not regions or background.size == 0:
        return None
    fprs = np.linspace(fpr_limit, 0.0, _STEPS)
    # The threshold that lets through a share ``fpr`` of the background (ties may let more).
    idx = np.clip(np.ceil((1 - fprs) * background.size).astype(np.int64), 0, background.size - 1)
    thresholds = np.unique(np.r_[background[idx], np.nextafter(background[-1], np.inf)])
    fpr_at = 1 - np.searchsorted(background, thresholds, side="left") / background.size
    pro = np.mean([1 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    order = np.argsort(fpr_at, kind="stable")
    x, yv = fpr_at[order], pro[order]
    # The curve up to fpr_limit, its end interpolated where tied scores jump past the limit.
    inside = x <= fpr_limit
    if not inside.all():
        j = int(np.argmax(~inside))  # the first point past the limit; x[0] == 0 is inside
        end = yv[j - 1] + (yv[j] - yv[j - 1]) * (fpr_limit - x[j - 1]) / (x[j] - x[j - 1])
        x, yv = np.r_[x[inside], fpr_limit], np.r_[yv[inside], end]
    area = float(np.sum((x[1:] - x[:-1]) * (yv[1:] + yv[:-1]) / 2))
    return area / fpr_limit


def _flat(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps and {len(masks)} masks: they must match")
    for m, k in zip(maps, masks):
        if np.shape(m) != np.shape(k):
            raise ValueError(f"a map of shape {np.shape(m)} and its mask of shape {np.shape(k)} differ")
    if not len(maps):
        return np.zeros(0, np.float32), np.zeros(0, bool)
    return (np.concatenate([np.asarray(m, np.float32).ravel() for m in maps]),
            np.concatenate([np.asarray(k, bool).ravel() for k in masks]))
