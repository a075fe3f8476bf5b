"""Does the heatmap point at the damage? Grad-CAM against ground-truth damage masks.

A classifier can be right for the wrong reason (a tray mark, a lighting gradient that
happens to go with damage). Where damage masks exist, as for the synthetic set
(``DATA/masks/<image name>``, also listed in ``manifest.csv``'s ``mask`` column), we score
each correctly flagged damaged image's Grad-CAM (last stage) and LayerCAM (the finer stage
before it) for the positive class with

* the pointing game: is the hottest pixel on the (dilated) damage?
* energy inside: which fraction of the map's mass lies on the (dilated) damage, to be
  compared with the mask's share of the image (what a uniform map would score).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..explain.gradcam import cams_and_logits, dilate, energy_inside, pointing_game
from .eval_set import load_eval_set

__all__ = ["MaskIndex", "load_mask", "localization_for_run", "localization_scores", "pixel_scores"]

DILATE_PX = 4


class MaskIndex:
    """Finds the damage mask of an image from a masks folder, a data folder or a manifest.

    Accepted sources:
        * a CSV manifest with ``path`` and ``mask`` columns (paths relative to the CSV's
          folder), e.g. the synth's ``manifest.csv``;
        * a data folder holding ``manifest.csv`` (used when it has a ``mask`` column) or a
          ``masks/`` subfolder;
        * a folder of masks named like the images (``damaged_00012.png``; any extension,
          or ``<stem>_mask.<ext>``).
    """

    def __init__(self, source: str | Path) -> None:
        src = Path(source)
        if not src.exists():
            raise DataError(f"masks {src} do not exist; give the masks folder, the data folder "
                            "or its manifest.csv")
        self.by_path: dict[str, Path] = {}
        self.by_name: dict[str, Path] = {}
        self.folders: list[Path] = []
        manifest = src if src.is_file() else src / "manifest.csv"
        if manifest.is_file() and self._read_manifest(manifest):
            return
        if src.is_file():
            raise DataError(f"{src} has no 'mask' column; a masks manifest needs path,mask")
        self.folders = [src / "masks"] if (src / "masks").is_dir() else [src]

    def _read_manifest(self, path: Path) -> bool:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"path", "mask"} <= set(reader.fieldnames or []):
                return False
            for row in reader:
                if not row.get("mask"):
                    continue
                img, mask = path.parent / row["path"], path.parent / row["mask"]
                self.by_path[_key(img)] = mask
                self.by_name.setdefault(img.name, mask)
        return True

    def find(self, image_path: str | Path) -> Path | None:
        """The mask file of ``image_path``, or None when it has none."""
        p = Path(image_path)
        hit = self.by_path.get(_key(p)) or self.by_name.get(p.name)
        if hit is not None:
            return hit if hit.is_file() else None
        for d in self.folders:
            for cand in (d / p.name, d / p.parent.name / p.name):
                if cand.is_file():
                    return cand
            for cand in sorted(d.glob(f"{p.stem}.*")) + sorted(d.glob(f"{p.stem}_mask.*")):
                if cand.is_file():
                    return cand
        return None


def _key(p: Path) -> str:
    try:
        return str(p.resolve())
    except OSError:
        return str(p.absolute())


def load_mask(path: str | Path, size: int) -> np.ndarray:
    """A mask file as a boolean ``(size, size)`` array, True on the damage.

    Args:
        path: Mask image (any mode; grey levels above 127 are damage).
        size: Side of the square the images were squashed to; nearest neighbour keeps the
            mask binary.

    Returns:
        Boolean ``(size, size)`` array.
    """
    from PIL import Image

    with Image.open(path) as im:
        m = im.convert("L")
        if m.size != (size, size):
            m = m.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(m) > 127


def localization_scores(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    paths: Sequence[str | Path],
    masks_dir_or_manifest: str | Path | MaskIndex,
    positive_index: int,
    img_size: int,
    *,
    threshold: float | None = None,
    dilate_px: int = DILATE_PX,
    batch_size: int = 32,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Pointing-game hit rate and energy inside the mask for correctly flagged damaged images.

    Args:
        network: An inspectnet ``Network`` (any device; eval mode is used).
        images: uint8 ``(N, 3, S, S)`` images as the model takes them (S = ``img_size``).
        labels: ``(N,)`` integer labels.
        paths: Image paths, used to find each mask.
        masks_dir_or_manifest: Masks folder, data folder or manifest (see :class:`MaskIndex`).
        positive_index: Index of the damage class.
        img_size: Input size; masks are resized to it with nearest neighbour.
        threshold: Flag when p(positive) >= threshold; None flags by argmax.
        dilate_px: Tolerance around the mask, in input pixels (heatmaps from a coarse
            feature map cannot be sharper than a few pixels).
        batch_size: Images per Grad-CAM pass.
        max_images: Score at most this many flagged images (the first ones), for speed.

    Returns:
        ``n_positive`` (damaged images), ``n_flagged`` (of them, correctly flagged),
        ``n_scored`` (flagged with a mask found), ``n_missing_mask``, ``pointing_game``
        (Grad-CAM hit rate, None if nothing was scored), ``energy_inside`` (mean), the same
        two for LayerCAM (``pointing_game_layercam``, ``energy_inside_layercam``),
        ``mask_fraction`` (mean share of the image covered by the dilated mask: the
        uniform-map baseline for energy), ``dilate_px``, ``threshold`` and ``per_image`` rows
        (path, hit, energy, mask_fraction, p_positive); ``max_images`` as given (the scores
        are of a sample when ``n_scored`` reached it).

    Raises:
        ValueError: images, labels and paths of different lengths, or masks whose size is
            not the heatmaps'.
        DataError: the masks source does not exist or is not a masks manifest.
    """
    index = (masks_dir_or_manifest if isinstance(masks_dir_or_manifest, MaskIndex)
             else MaskIndex(masks_dir_or_manifest))
    y = np.asarray(labels.numpy() if torch.is_tensor(labels) else labels, dtype=np.int64)
    if len(y) != len(images) or len(paths) != len(images):
        raise ValueError(f"{len(images)} images, {len(y)} labels and {len(paths)} paths: "
                         "they must match")
    pos_rows = np.flatnonzero(y == positive_index)
    tally = _Tally(max_images=max_images)
    for s in range(0, len(pos_rows), batch_size):
        if tally.full():
            break
        _score_batch(network, images, pos_rows[s : s + batch_size], paths, index, tally,
                     positive_index=positive_index, img_size=img_size, threshold=threshold,
                     dilate_px=dilate_px)
    return _summary(tally, n_positive=len(pos_rows), dilate_px=dilate_px, threshold=threshold)


@dataclass
class _Tally:
    """What :func:`localization_scores` has counted so far, over the batches."""

    max_images: int | None
    per_image: list[dict[str, Any]] = field(default_factory=list)
    n_flagged: int = 0
    n_missing: int = 0

    def full(self) -> bool:
        """True once ``max_images`` images are scored."""
        return self.max_images is not None and len(self.per_image) >= self.max_images


def _score_batch(network: torch.nn.Module, images: torch.Tensor, rows: np.ndarray,
                 paths: Sequence[str | Path], index: MaskIndex, tally: _Tally, *,
                 positive_index: int, img_size: int, threshold: float | None,
                 dilate_px: int) -> None:
    """Grad-CAM and LayerCAM of one batch of damaged images, scored into ``tally``."""
    x = images[torch.as_tensor(rows)].float().div(255).contiguous(memory_format=torch.channels_last)
    cams, logits = cams_and_logits(network, x, positive_index, methods=("gradcam", "layercam"))
    probs = logits.softmax(1).numpy()
    p_pos = probs[:, positive_index]
    flagged = p_pos >= threshold if threshold is not None else probs.argmax(1) == positive_index
    for j, r in enumerate(rows):
        if not flagged[j]:
            continue
        tally.n_flagged += 1
        mpath = index.find(paths[r])
        if mpath is None:
            tally.n_missing += 1
            continue
        # Past the cap the rest of this batch still counts towards n_flagged and
        # n_missing_mask (as it always has); only the scoring stops.
        if tally.full():
            continue
        mask = dilate(load_mask(mpath, img_size), dilate_px)
        cam, lcam = cams["gradcam"][j], cams["layercam"][j]
        if cam.shape != mask.shape:
            raise ValueError(f"heatmap {cam.shape} and mask {mask.shape} differ; "
                             f"is img_size={img_size} right?")
        tally.per_image.append({
            "path": str(paths[r]),
            "mask": str(mpath),
            "hit": pointing_game(cam, mask, dilate_px=0),
            "energy": energy_inside(cam, mask),
            "hit_layercam": pointing_game(lcam, mask, dilate_px=0),
            "energy_layercam": energy_inside(lcam, mask),
            "mask_fraction": float(mask.mean()),
            "p_positive": float(p_pos[j]),
        })


def _summary(tally: _Tally, *, n_positive: int, dilate_px: int,
             threshold: float | None) -> dict[str, Any]:
    """The result dict of :func:`localization_scores`: counts, means and the per-image rows."""
    per_image = tally.per_image
    n = len(per_image)

    def mean(key: str) -> float | None:
        return float(np.mean([r[key] for r in per_image])) if n else None

    return {
        "n_positive": int(n_positive),
        "n_flagged": int(tally.n_flagged),
        "n_scored": n,
        "n_missing_mask": int(tally.n_missing),
        "pointing_game": mean("hit"),
        "energy_inside": mean("energy"),
        "pointing_game_layercam": mean("hit_layercam"),
        "energy_inside_layercam": mean("energy_layercam"),
        "mask_fraction": mean("mask_fraction"),
        "dilate_px": int(dilate_px),
        "threshold": threshold,
        "max_images": tally.max_images,
        "per_image": per_image,
    }


@torch.no_grad()
def pixel_scores(network: torch.nn.Module, images: torch.Tensor, paths: Sequence[str | Path], index: MaskIndex,
                 img_size: int, batch_size: int = 32) -> dict[str, Any]:
    """Pixel AUROC and AUPRO (:mod:`.pixel`) of an anomaly detector's maps on every image.

    An image without a mask counts as intact (all background): the masks of the synthetic
    set exist for the damaged images only.

    Args:
        network: A model with ``anomaly_map`` (``PatchCore``).
        images: uint8 ``(N, 3, S, S)``.
        paths: The images' paths, to find their masks.
        index: The masks.
        img_size: Input size; masks are resized to it (nearest neighbour).
        batch_size: Images per pass.

    Returns:
        ``pixel_auroc``, ``aupro`` (None where undefined) and ``n_pixel_images``.
    """
    from .pixel import aupro, pixel_auroc

    network.eval()
    device = _model_device(network)
    maps, masks = [], []
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size].to(device).float().div_(255)
        maps += list(network.anomaly_map(x).float().cpu().numpy())  # type: ignore[operator]
    for p in paths:
        found = index.find(p)
        masks.append(load_mask(found, img_size) if found is not None else np.zeros((img_size, img_size), bool))
    return {"pixel_auroc": pixel_auroc(maps, masks), "aupro": aupro(maps, masks), "n_pixel_images": len(maps)}


def _model_device(network: torch.nn.Module) -> torch.device:
    for t in network.buffers():
        return t.device
    return torch.device("cpu")


def localization_for_run(run: str | Path, masks: str | Path, data: str | Path | None = None,
                         split: str = "test", device: str = "cpu", use_threshold: bool = True,
                         out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """``inspectnet evaluate RUN --masks DIR``: localisation scores of a saved run, to JSON.

    Args:
        run: Run folder.
        masks: Masks folder, data folder or manifest with a ``mask`` column.
        data: Data to score (default: the run's ``split.csv``).
        split: Which split (``test``, ``val``, ``train``; ``all`` for every image of ``data``).
        device: Torch device.
        use_threshold: Flag with the run's decision threshold (else argmax).
        out: JSON path; default ``RUN/localization.json`` (``localization_<split>.json``
            for another split or data set).

    Returns:
        The :func:`localization_scores` dict plus ``split`` and ``_written_to``.
    """
    from ..bundle import load_model
    from ..io import atomic_write_json

    lm = load_model(run, device=device)
    anomaly = bool(getattr(lm.network, "is_anomaly", False))
    # An anomaly detector's maps are scored on every image (intact ones add background).
    es = load_eval_set(run, lm.card, data=data, split=split, progress=progress,
                       positives_only=not anomaly)
    index = MaskIndex(masks)
    scores = localization_scores(lm.network, es.images, es.labels, es.paths, index,
                                 lm.card.positive_index, lm.card.img_size,
                                 threshold=lm.card.threshold if use_threshold else None)
    if anomaly:
        scores.update(pixel_scores(lm.network, es.images, es.paths, index, lm.card.img_size))
    scores["split"] = es.split
    run = Path(run)
    target = Path(out) if out else run / ("localization.json" if data is None and split == "test"
                                          else f"localization_{split}.json")
    atomic_write_json(target, scores)
    scores["_written_to"] = str(target)
    return scores
