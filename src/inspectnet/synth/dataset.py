"""Writing a synthetic data set: class folders, damage masks, manifest and a contact sheet.

Labels are assigned to indices by a permutation drawn from the seed, and every image is
rendered from ``(seed, index)`` alone, so the output is byte-identical whatever the number
of worker processes.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from inspectnet.synth.config import (
    SynthConfig,
    check_difficulty,
    check_generate_args,
    check_jpeg_quality,
    check_size,
)
from inspectnet.synth.render import render_sample

#: Manifest columns, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "shape",
    "coating",
    "damage",
    "severity",
    "bbox",
    "mask",
    "index",
    "tray",
    "difficulty",
)
PREVIEW_COUNT = 32
_OUR_NAME = re.compile(r"(intact|damaged|empty)_\d{5,}\.png")
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]


def class_counts(
    n: int, damaged_fraction: float, with_empty: bool, empty_fraction: float = 0.2
) -> dict[str, int]:
    """How many images of each class ``generate`` writes.

    ``empty`` takes ``int(n * empty_fraction)`` images (``n // 5`` by default) when asked; of
    the rest, ``round(rest * damaged_fraction)`` are damaged, kept within [1, rest - 1] so
    both classes exist.
    """
    n_empty = int(n * empty_fraction) if with_empty else 0
    rest = n - n_empty
    n_dam = min(max(round(rest * damaged_fraction), 1), rest - 1)
    return {"intact": rest - n_dam, "damaged": n_dam, "empty": n_empty}


def assign_labels(n: int, seed: int, counts: dict[str, int]) -> list[str]:
    """Labels of indices ``0..n-1``: the class list shuffled by a seed-only permutation."""
    labels = (
        ["damaged"] * counts["damaged"]
        + ["intact"] * counts["intact"]
        + ["empty"] * counts["empty"]
    )
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    return [labels[j] for j in order]


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Write an RGB or single-channel uint8 array as PNG.

    OpenCV's encoder writes no timestamps, so equal arrays give equal bytes. Huffman-only
    deflate: sensor noise defeats LZ77 matching anyway, so this is ~2x faster than the
    default and the files come out smaller than Pillow's level 6.
    """
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # OpenCV wants BGR
    ok, buf = cv2.imencode(".png", arr, _PNG_PARAMS)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _work(job: tuple) -> dict:
    """Render and write one image; returns its manifest row (runs in worker processes)."""
    index, label, out, seed, difficulty, size, grayscale, cfg = job
    img, mask, meta = render_sample(index, label, seed, difficulty, size, cfg)
    name = f"{label}_{index:05d}.png"
    if grayscale:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    _save_png(img, Path(out) / label / name)
    mask_rel = ""
    if mask is not None:
        mask_rel = f"masks/{name}"
        _save_png(mask.astype(np.uint8) * 255, Path(out) / mask_rel)
    bbox = meta["bbox"]
    return {
        "path": f"{label}/{name}",
        "label": label,
        "shape": meta["shape"],
        "coating": meta["coating"],
        "damage": "+".join(meta["damage"]),
        "severity": "" if meta["severity"] is None else f"{meta['severity']:.3f}",
        "bbox": "" if bbox is None else " ".join(str(v) for v in bbox),
        "mask": mask_rel,
        "index": index,
        "tray": meta["tray"],
        "difficulty": difficulty,
    }


def write_preview(out: Path, rows: list[dict], cols: int = 8, tile: int = 160) -> Path:
    """Contact sheet of the first rows: each tile captioned with its label and damage.

    The damage bounding box is outlined in yellow so a reviewer can find subtle damage.
    """
    rows = rows[:PREVIEW_COUNT]
    nrow = math.ceil(len(rows) / cols)
    cap = 14
    sheet = Image.new("RGB", (cols * tile, nrow * (tile + cap)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        im = Image.open(out / row["path"]).convert("RGB")
        scale = tile / im.width
        x, y = (i % cols) * tile, (i // cols) * (tile + cap)
        sheet.paste(im.resize((tile, tile), Image.BILINEAR), (x, y))
        if row["bbox"]:
            x0, y0, x1, y1 = (int(v) * scale for v in row["bbox"].split())
            draw.rectangle([x + x0 - 2, y + y0 - 2, x + x1 + 1, y + y1 + 1], outline=(255, 220, 0))
        colour = {"intact": (120, 220, 120), "damaged": (255, 110, 90), "empty": (150, 170, 255)}[
            row["label"]
        ]
        text = row["label"] + (f": {row['damage']}" if row["damage"] else "")
        draw.text((x + 3, y + tile + 1), text[:26], fill=colour)
    path = out / "preview.png"
    sheet.save(path, format="PNG", compress_level=6)
    return path


def generate(
    out: str | Path,
    n: int = 1200,
    seed: int = 0,
    difficulty: str = "medium",
    size: int = 256,
    with_empty: bool = False,
    grayscale: bool = False,
    damaged_fraction: float = 0.5,
    jpeg_quality: int | None = None,
    workers: int = 1,
    progress: bool = True,
    config: SynthConfig | None = None,
) -> Path:
    """Write a synthetic data set of insert photos.

    Layout: ``OUT/intact/*.png``, ``OUT/damaged/*.png`` (``OUT/empty/*.png`` with
    ``with_empty``), ``OUT/masks/<damaged image name>`` (255 = damage), ``OUT/manifest.csv``
    (columns :data:`MANIFEST_COLUMNS`, rows in index order) and ``OUT/preview.png``.

    Args:
        out: Output folder (created). Images and masks of an earlier run into the same
            folder are deleted first; other files are left alone.
        n: Number of images in total (>= 2).
        seed: Seed; the same seed gives byte-identical files.
        difficulty: ``easy``, ``medium`` or ``hard`` (damage size/contrast, distractors).
        size: Image side in pixels (>= 32).
        with_empty: Add a third class ``empty`` (tray without insert), ``n // 5`` images
            with the default ``config.empty_fraction``.
        grayscale: Save single-channel ``L`` PNGs, like a monochrome inspection camera.
        damaged_fraction: Share of damaged images among the non-empty ones, in (0, 1);
            0.5 balances the classes, 0.2 gives a 1:4 imbalanced set.
        jpeg_quality: Pass every image through JPEG at this quality (1-100) first.
        workers: Processes to render with; the output does not depend on it.
        progress: Show a progress bar.
        config: Nuisance knobs (:class:`SynthConfig`); ``jpeg_quality`` overrides its own.

    Returns:
        ``Path(out)``.

    Raises:
        ValueError: On a bad difficulty, ``n < 2``, ``size < 32``, a fraction outside
            (0, 1), a bad JPEG quality or ``workers < 1``.
    """
    check_generate_args(n, damaged_fraction, workers)
    check_difficulty(difficulty)
    check_size(size)
    cfg = config or SynthConfig()
    if jpeg_quality is not None:
        check_jpeg_quality(jpeg_quality)
        cfg = replace(cfg, jpeg_quality=jpeg_quality)
    out = Path(out)
    counts = class_counts(n, damaged_fraction, with_empty, cfg.empty_fraction)
    labels = assign_labels(n, seed, counts)
    for name, c in counts.items():
        if c:
            (out / name).mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    jobs = [(i, labels[i], str(out), seed, difficulty, size, grayscale, cfg) for i in range(n)]

    def track(it):
        if not progress:
            return it
        from inspectnet.progress import progress_iter

        return progress_iter(it, total=n, desc="synth", enabled=True)

    if workers > 1:
        # imap keeps index order, so the manifest is the same as with one worker.
        with _context().Pool(workers, initializer=_init_worker) as pool:
            rows = list(track(pool.imap(_work, jobs, chunksize=8)))
    else:
        rows = [row for row in track(map(_work, jobs))]
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    write_preview(out, rows)
    return out


def _remove_stale(out: Path) -> None:
    """Delete images and masks of an earlier run into ``out`` (only files named like ours),
    so that a folder-based loader never mixes two runs."""
    for sub in ("intact", "damaged", "empty", "masks"):
        for p in (out / sub).glob("*.png") if (out / sub).is_dir() else ():
            if _OUR_NAME.fullmatch(p.name):
                p.unlink()


def _context():
    """Spawned workers: forking a parent whose OpenCV/torch thread pools exist can deadlock
    (seen here: children asleep forever). Spawning costs a fresh import per worker (~2 s,
    mostly torch via ``inspectnet/__init__``) but is always safe. Callers' scripts need the
    usual ``if __name__ == "__main__":`` guard."""
    return multiprocessing.get_context("spawn")


def _init_worker() -> None:
    # One OpenCV thread per process: the images are small and the processes already use
    # every core.
    import cv2

    cv2.setNumThreads(1)
