"""Groups in the doctor: a group column's group in two splits, and names that suggest groups."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from inspectnet.cli import app
from inspectnet.data.doctor import (
    cheap_checks,
    check_for_training,
    diagnose,
    groups_across_splits,
    name_group_hint,
    name_groups,
    name_stem,
)
from inspectnet.data.sources import Sample, discover
from inspectnet.errors import DataError


def _img(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((48, 48), Image.Resampling.BICUBIC).save(path)
    return path


@pytest.mark.parametrize(("name", "stem"), [
    ("part017_a.png", "part017"), ("part017_B.png", "part017"), ("insert_12-3.jpg", "insert_12"),
    ("IMG_0001 (2).jpg", "img_0001"), ("scan12_top.png", "scan12"), ("p9_v2.png", "p9"),
    ("damaged_1.png", None),  # the first damaged image, not view 1 of a part "damaged"
    ("damaged_000.png", None), ("intact_00001.png", None), ("IMG_0001.jpg", None), ("part017.png", None),
])
def test_name_stem_strips_a_short_trailing_counter_or_view(name: str, stem: str | None) -> None:
    assert name_stem(Path(name)) == stem


def test_name_groups_include_the_bare_name_and_skip_numbering_schemes() -> None:
    names = ["part017.png", "part017_b.png", "part018_a.png", "part018_b.png", "part019_a.png"]
    names += [f"batch3_{i}.png" for i in range(1, 40)]  # 39 "views": a numbering scheme, not one part
    samples = [Sample(Path("/d/x") / n, "x") for n in names]
    got = [[s.path.name for s in g] for g in name_groups(samples)]
    assert got == [["part017.png", "part017_b.png"], ["part018_a.png", "part018_b.png"]]


def test_doctor_warns_when_names_suggest_groups(tmp_path: Path) -> None:
    root = tmp_path / "d"
    seed = 0
    for c in ("damaged", "intact"):
        for part in range(6):
            for view in ("a", "b"):
                seed += 1
                _img(root / c / f"{c[:3]}{part:03d}_{view}.png", seed)
    rep = diagnose(root, progress=False)
    kinds = [p["kind"] for p in rep.problems]
    assert kinds == ["name_groups"], rep.verdict
    msg = rep.problems[0]["message"]
    assert "24 of 24 images" in msg and "group column" in msg and "path,label,group" in msg
    assert "dam000_a.png + dam000_b.png" in msg
    assert rep.name_groups[0]["stem"] == "dam000" and rep.name_groups[0]["files"] == [
        "damaged/dam000_a.png", "damaged/dam000_b.png"]
    assert any("path,label,group" in m for m in cheap_checks(discover(root)))  # train prints it too
    res = CliRunner().invoke(app, ["doctor", str(root), "-q"])
    assert res.exit_code == 1 and "name groups" in res.output and "dam000_a.png" in res.output

    # With a group column the names are not guessed at.
    rows = [f"{s.path.relative_to(root)},{s.label},{s.path.stem[:-2]}" for s in discover(root)]
    (root / "m.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n")
    assert diagnose(root / "m.csv", progress=False).ok


def test_a_few_grouped_names_are_no_warning() -> None:
    samples = [Sample(Path(f"/d/x/item{i:04d}.png"), "x") for i in range(20)]
    samples += [Sample(Path("/d/x/part7_a.png"), "x"), Sample(Path("/d/x/part7_b.png"), "x")]
    assert name_group_hint(samples) is None  # 2 of 22 images: under 20%
    assert name_group_hint(samples, share=0.05) is not None


def _presplit_manifest(tmp_path: Path, straddle: bool) -> Path:
    lines, seed = ["path,label,split,group"], 0
    for split in ("train", "val", "test"):
        for c in ("damaged", "intact"):
            for part in range(2):
                for view in range(2):
                    seed += 1
                    p = _img(tmp_path / "img" / f"{split}-{c}-{part}-{view}.png", seed)
                    group = f"{split}-{c}-{part}"
                    if straddle and split == "test" and c == "damaged" and part == 0:
                        group = "train-damaged-0"  # a part photographed for train shows up in test
                    lines.append(f"{p.relative_to(tmp_path)},{c},{split},{group}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.csv"


def test_a_group_in_two_splits_is_leakage_for_doctor_and_train(tmp_path: Path) -> None:
    clean = discover(_presplit_manifest(tmp_path / "ok", straddle=False))
    assert groups_across_splits(clean) == []
    cfg = SimpleNamespace(allow_leakage=False, allow_label_conflicts=False)
    assert check_for_training(clean, cfg)[1] == []

    manifest = _presplit_manifest(tmp_path / "bad", straddle=True)
    samples = discover(manifest)
    assert groups_across_splits(samples) == [("train-damaged-0", ["train", "test"])]
    with pytest.raises(DataError, match=r"group 'train-damaged-0' in train and test"):
        check_for_training(samples, cfg)
    _, warnings = check_for_training(samples, SimpleNamespace(allow_leakage=True, allow_label_conflicts=False))
    assert any("train-damaged-0" in w and "--allow-leakage" in w for w in warnings)

    rep = diagnose(manifest, progress=False)
    assert rep.problems[0]["kind"] == "group_leakage"
    assert rep.group_leakage == [{"group": "train-damaged-0", "splits": ["train", "test"]}]
    res = CliRunner().invoke(app, ["train", str(manifest), "--out", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 1 and "train-damaged-0" in res.output and "train and test" in res.output
