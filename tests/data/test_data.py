"""Data sources, split and decoding: what a user's folder or CSV turns into."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inspectnet.data.augment import BatchAugment, dihedral_views
from inspectnet.data.cache import build_cache
from inspectnet.data.decode import decode_image
from inspectnet.data.sources import discover
from inspectnet.data.split import check_split, stratified_split, write_split_csv
from inspectnet.errors import DataError


def _img(path: Path, mode: str = "RGB", size: int = 20, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full((size, size), value * 256, dtype=np.uint16)).save(path)
    elif mode == "P":
        Image.new("RGB", (size, size), (value,) * 3).convert("P").save(path)
    else:
        fill = value if mode in ("L", "P") else (value,) * 3 + ((255,) if mode == "RGBA" else ())
        Image.new(mode, (size, size), fill).save(path)
    return path


def test_folder_per_class(toy_data: Path) -> None:
    samples = discover(toy_data)
    assert {s.label for s in samples} == {"intact", "damaged"}
    assert len(samples) == 80 and all(s.split is None for s in samples)


def test_presplit_folders(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            _img(tmp_path / split / c / f"{c}.png")
    samples = discover(tmp_path)
    assert sorted((s.split, s.label) for s in samples) == sorted(
        (sp, c) for sp in ("train", "val", "test") for c in ("a", "b"))


def test_csv_manifest_obeys_split_and_keeps_metadata(tmp_path: Path) -> None:
    rows = []
    for i in range(6):
        label = "damaged" if i % 2 else "intact"
        _img(tmp_path / "imgs" / f"{i}.png")
        rows.append([f"imgs/{i}.png", label, ["train", "train", "val", "val", "test", "test"][i], f"cam{i}"])
    with (tmp_path / "m.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "camera"])
        w.writerows(rows)
    samples = discover(tmp_path / "m.csv")
    assert [s.split for s in samples] == ["train", "train", "val", "val", "test", "test"]
    assert samples[3].meta == {"camera": "cam3"}
    # A given split is obeyed exactly: stratified_split must not reassign it.
    assert [s.split for s in stratified_split(samples, seed=123)] == [s.split for s in samples]


@pytest.mark.parametrize(
    "content, message",
    [
        ("path,label,split\nimgs/0.png,a,holdout\n", "unknown split 'holdout'"),
        ("path,label\nimgs/missing.png,a\n", "'imgs/missing.png' does not exist"),
        ("file,label\nimgs/0.png,a\n", "missing column(s) path"),
    ],
)
def test_csv_errors_are_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    _img(tmp_path / "imgs" / "0.png")
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(DataError) as e:
        discover(tmp_path / "m.csv")
    assert message in str(e.value) and "m.csv" in str(e.value)


def test_single_class_and_empty_class(tmp_path: Path) -> None:
    _img(tmp_path / "one" / "only" / "x.png")
    with pytest.raises(DataError, match="only one class"):
        discover(tmp_path / "one")
    _img(tmp_path / "two" / "a" / "x.png")
    (tmp_path / "two" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*b holds no images"):
        discover(tmp_path / "two")


def test_split_is_stratified_seeded_and_written(toy_data: Path, tmp_path: Path) -> None:
    a = stratified_split(discover(toy_data), 0.2, 0.2, seed=1)
    b = stratified_split(discover(toy_data), 0.2, 0.2, seed=1)
    c = stratified_split(discover(toy_data), 0.2, 0.2, seed=2)
    assert [s.split for s in a] == [s.split for s in b]
    assert [s.split for s in a] != [s.split for s in c]
    check_split(a)
    for label in ("intact", "damaged"):
        counts = {sp: sum(1 for s in a if s.label == label and s.split == sp) for sp in ("train", "val", "test")}
        assert counts == {"train": 24, "val": 8, "test": 8}
    out = write_split_csv(a, tmp_path / "split.csv")
    again = discover(out)  # split.csv is itself a valid manifest
    assert [(s.path, s.split) for s in again] == [(s.path, s.split) for s in a]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_every_mode_becomes_three_channels(tmp_path: Path, mode: str) -> None:
    t = decode_image(_img(tmp_path / f"x_{mode.replace(';', '')}.png", mode))
    assert t.shape == (3, 20, 20) and t.dtype == torch.uint8
    # 16-bit grey keeps its relative level instead of saturating to white.
    assert 100 < int(t.float().mean()) < 160


@pytest.mark.parametrize("kind", ["RGB", "L", "RGB-tRNS", "P", "RGBA", "LA", "1", "I;16", "RGB-truncated"])
def test_png_fast_path_gives_pillows_pixels_or_steps_aside(tmp_path: Path, kind: str) -> None:
    from inspectnet.data.decode import DecodeError, _decode_pillow, _png_fast

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    path = tmp_path / f"{kind}.png"
    if kind == "RGB-tRNS":
        Image.fromarray(rgb).save(path, transparency=(int(rgb[0, 0, 0]), int(rgb[0, 0, 1]), int(rgb[0, 0, 2])))
    elif kind == "RGB-truncated":
        Image.fromarray(rgb).save(path)
        path.write_bytes(path.read_bytes()[:-200])
    elif kind == "I;16":
        Image.fromarray(rng.integers(0, 65536, (23, 31), dtype=np.uint16)).save(path)
    elif kind == "P":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=50).save(path)
    else:
        Image.fromarray(rgb).convert(kind).save(path)
    fast = _png_fast(path)
    if kind in ("RGB", "L"):  # what cameras and the generator write: the fast path takes them
        assert fast is not None
    if kind == "RGB-truncated":
        assert fast is None
        with pytest.raises(DecodeError, match="truncated"):
            decode_image(path)
        return
    want = _decode_pillow(path)
    assert decode_image(path).shape == want.shape == (3, 23, 31)
    assert torch.equal(decode_image(path), want)


def test_bad_files_stop_before_training_naming_each(toy_data: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "d"
    shutil.copytree(toy_data, data)
    (data / "intact" / "empty.png").write_bytes(b"")
    (data / "damaged" / "text.png").write_text("not an image")
    samples = stratified_split(discover(data))
    with pytest.raises(DataError) as e:
        build_cache(samples, ["damaged", "intact"], 32, progress=False)
    msg = str(e.value)
    assert "2 image(s) cannot be read" in msg
    assert "empty.png: file is empty" in msg and "text.png: not an image" in msg and "--skip-bad" in msg
    cache, bad = build_cache(samples, ["damaged", "intact"], 32, skip_bad=True, progress=False)
    assert len(bad) == 2 and sum(len(c) for c in cache.values()) == 80


def test_batch_augment_is_per_image_and_identity_in_eval() -> None:
    x = torch.rand(8, 3, 16, 16)
    aug = BatchAugment(True, 36, 0.1)
    aug.train()
    y = aug(x.clone(), generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(y, x)
    diffs = [(y[i] - x[i]).abs().mean().item() for i in range(8)]
    assert len({round(d, 5) for d in diffs}) > 1  # different draws per image
    aug.eval()
    assert torch.equal(aug(x), x)
    views = dihedral_views(x, 8)
    # Every view is a permutation of the same pixels (exact: no interpolation), and all differ.
    ref = torch.sort(x.flatten()).values
    assert len(views) == 8 and all(torch.equal(torch.sort(v.flatten()).values, ref) for v in views)
    assert len({v.flatten()[:50].numpy().tobytes() for v in views}) == 8
