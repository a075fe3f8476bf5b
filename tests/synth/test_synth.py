"""Tests of the synthetic insert generator (inspectnet.synth)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from inspectnet.synth import (
    DAMAGE_MODES,
    MANIFEST_COLUMNS,
    SHAPES,
    SynthConfig,
    generate,
    render_sample,
)

SIZE = 96  # small images keep the suite fast; damage geometry scales with size


def _read_manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _digest(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out`` by relative path."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate(
        out, n=20, seed=7, difficulty="medium", size=SIZE, damaged_fraction=0.2, progress=False
    )
    return out


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", n=10, seed=3, size=SIZE, progress=False)
    b = generate(tmp_path / "b", n=10, seed=3, size=SIZE, progress=False)
    c = generate(tmp_path / "c", n=10, seed=4, size=SIZE, progress=False)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    assert "manifest.csv" in da and len(da) >= 10 + 1 + 1  # images, manifest, preview (+ masks)
    assert da["manifest.csv"] != dc["manifest.csv"]
    common = [k for k in da if k in dc and k.endswith(".png") and k != "preview.png"]
    assert any(da[k] != dc[k] for k in common)


def test_output_does_not_depend_on_worker_count(tmp_path):
    one = generate(tmp_path / "w1", n=8, seed=5, size=SIZE, workers=1, progress=False)
    two = generate(tmp_path / "w2", n=8, seed=5, size=SIZE, workers=2, progress=False)
    assert _digest(one) == _digest(two)


def test_render_sample_is_deterministic():
    a, ma, _ = render_sample(11, "damaged", seed=2, size=SIZE)
    b, mb, _ = render_sample(11, "damaged", seed=2, size=SIZE)
    c, _, _ = render_sample(11, "damaged", seed=3, size=SIZE)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


# --- masks and damage ------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty,min_inside", [("hard", 0.95), ("medium", 0.95)])
def test_masks_lie_on_the_insert(difficulty, min_inside):
    """Damage is on the insert (or the part broken away from it), not on the tray.

    A built-up edge is metal welded onto the edge, so at ``medium`` size its blob sticks out
    past the outline: it must still touch the insert with at least half of its area.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))  # 5 px margin at 128 px
    seen = set()
    for i in range(36):
        _, mask, meta = render_sample(i, "damaged", seed=1, size=128, difficulty=difficulty)
        assert mask is not None and mask.shape == (128, 128) and mask.dtype == bool
        assert mask.sum() >= 3, f"image {i}: {meta['damage']} left no mask"
        outline = cv2.dilate(meta["insert_mask"].astype(np.uint8), kernel) > 0
        inside = (mask & outline).sum() / mask.sum()
        need = 0.5 if "built_up_edge" in meta["damage"] and difficulty != "hard" else min_inside
        assert inside >= need, (
            f"image {i}: only {inside:.0%} of the {meta['damage']} mask is on the insert"
        )
        x0, y0, x1, y1 = meta["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        seen.update(meta["damage"])
    assert seen == set(DAMAGE_MODES), f"modes never drawn: {set(DAMAGE_MODES) - seen}"


@pytest.mark.parametrize("difficulty,min_diff", [("easy", 40.0), ("medium", 35.0), ("hard", 20.0)])
def test_damage_is_visible_where_the_mask_is(difficulty, min_diff):
    """Same index rendered intact and damaged: they differ inside the mask, hardly outside."""
    diffs = []
    for i in range(16):
        dam, mask, meta_d = render_sample(i, "damaged", seed=9, difficulty=difficulty, size=128)
        intact, none_mask, meta_i = render_sample(
            i, "intact", seed=9, difficulty=difficulty, size=128
        )
        assert none_mask is None and meta_i["damage"] == [] and meta_i["bbox"] is None
        d = np.abs(dam.astype(np.int16) - intact.astype(np.int16)).max(axis=2)
        diffs.append(d[mask].mean())
        if meta_d["occluded"] == meta_i["occluded"]:
            near = cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
            assert (d[~near] > 12).mean() < 0.01, f"image {i} changed away from its damage"
    assert np.median(diffs) >= min_diff, (
        f"{difficulty}: median diff inside masks {np.median(diffs):.1f}"
    )


def test_difficulty_orders_damage_size():
    def mean_area(diff: str) -> float:
        return float(
            np.mean(
                [
                    render_sample(i, "damaged", seed=4, difficulty=diff, size=128)[1].sum()
                    for i in range(12)
                ]
            )
        )

    easy, medium, hard = mean_area("easy"), mean_area("medium"), mean_area("hard")
    assert easy > medium > hard > 0


def test_intact_images_carry_distractors_too():
    """Dark specks and lint appear in intact images, so 'any dark blob' cannot decide."""
    cfg = SynthConfig(distractor_rate=0.0, clutter_prob=0.0, fixture_prob=0.0, occlusion_prob=0.0)
    changed = 0
    for i in range(8):
        with_marks, _, _ = render_sample(i, "intact", seed=2, size=128)
        clean, _, _ = render_sample(i, "intact", seed=2, size=128, config=cfg)
        changed += int(np.abs(with_marks.astype(int) - clean.astype(int)).max() > 40)
    assert changed >= 6


# --- data set layout ----------------------------------------------------------------------


def test_class_balance_in_folders_and_manifest(dataset):
    rows = _read_manifest(dataset)
    labels = [r["label"] for r in rows]
    assert labels.count("damaged") == 4 and labels.count("intact") == 16  # round(20 * 0.2)
    assert len(list((dataset / "damaged").glob("*.png"))) == 4
    assert len(list((dataset / "intact").glob("*.png"))) == 16
    assert not (dataset / "empty").exists()


def test_manifest_columns_paths_and_masks(dataset):
    rows = _read_manifest(dataset)
    required = {"path", "label", "shape", "coating", "damage", "severity", "bbox", "mask"}
    assert required <= set(rows[0]) and list(rows[0]) == list(MANIFEST_COLUMNS)
    assert [int(r["index"]) for r in rows] == list(range(20))
    for r in rows:
        img = dataset / r["path"]
        assert img.is_file() and r["path"].startswith(r["label"] + "/")
        assert r["shape"] in SHAPES and r["coating"]
        if r["label"] == "damaged":
            assert all(m in DAMAGE_MODES for m in r["damage"].split("+"))
            assert 0.0 < float(r["severity"]) <= 1.0
            x0, y0, x1, y1 = map(int, r["bbox"].split())
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            m = np.asarray(Image.open(dataset / r["mask"]))
            assert m.shape == (SIZE, SIZE) and set(np.unique(m)) <= {0, 255} and (m == 255).any()
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        else:
            assert r["damage"] == r["severity"] == r["bbox"] == r["mask"] == ""
    assert len(list((dataset / "masks").glob("*.png"))) == 4
    preview = Image.open(dataset / "preview.png")
    assert preview.width > 4 * SIZE and preview.mode == "RGB"


def test_grayscale_writes_single_channel_pngs(tmp_path):
    out = generate(tmp_path / "g", n=6, seed=1, size=SIZE, grayscale=True, progress=False)
    for r in _read_manifest(out):
        im = Image.open(out / r["path"])
        assert im.mode == "L" and im.size == (SIZE, SIZE)


def test_with_empty_gives_three_classes(tmp_path):
    out = generate(tmp_path / "e", n=20, seed=2, size=SIZE, with_empty=True, progress=False)
    rows = _read_manifest(out)
    counts = {k: sum(r["label"] == k for r in rows) for k in ("intact", "damaged", "empty")}
    assert counts == {"intact": 8, "damaged": 8, "empty": 4}
    assert all(len(list((out / k).glob("*.png"))) == v for k, v in counts.items())
    assert all(r["shape"] == "" and r["mask"] == "" for r in rows if r["label"] == "empty")


def test_jpeg_quality_adds_artefacts():
    cfg = SynthConfig(jpeg_quality=20)
    a, _, _ = render_sample(0, "intact", size=SIZE)
    b, _, _ = render_sample(0, "intact", size=SIZE, config=cfg)
    assert a.shape == b.shape and 2.0 < np.abs(a.astype(int) - b.astype(int)).mean() < 40.0


# --- argument checking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"difficulty": "extreme"}, "'extreme'"),
        ({"n": 1}, "n must be"),
        ({"size": 16}, "size must be"),
        ({"damaged_fraction": 0.0}, "damaged_fraction"),
        ({"damaged_fraction": 1.5}, "1.5"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, needle):
    with pytest.raises(ValueError) as err:
        generate(tmp_path / "x", **{"n": 4, "size": SIZE, "progress": False, **kwargs})
    assert needle in str(err.value)
    assert not (tmp_path / "x").exists()  # nothing written before the arguments are checked


def test_bad_difficulty_message_lists_allowed_values():
    with pytest.raises(ValueError, match=r"easy.*medium.*hard"):
        render_sample(0, "damaged", difficulty="HARD")
    with pytest.raises(ValueError, match="label"):
        render_sample(0, "broken")
    with pytest.raises(ValueError, match="shapes"):
        SynthConfig(shapes=("X",))
