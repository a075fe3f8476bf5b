"""``inspectnet doctor``: leakage, conflicting labels, near-duplicates, bad files, verdict order."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from inspectnet.cli import app
from inspectnet.data.doctor import (
    HARM_ORDER,
    cheap_checks,
    check_leakage,
    diagnose,
    near_pairs,
    phash,
    sniff,
)
from inspectnet.data.sources import Sample, discover
from inspectnet.errors import DataError


def _part(path: Path, seed: int, size: int = 64, notch: bool = False) -> Path:
    """A smooth random 'part' (low-frequency blobs): distinct seeds give distinct pHashes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    if notch:
        a = np.asarray(img).copy()
        a[10:20, 10:20] = 0
        img = Image.fromarray(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _presplit(root: Path, n: int = 4) -> Path:
    seed = 0
    for split in ("train", "val", "test"):
        for c in ("damaged", "intact"):
            for i in range(n):
                seed += 1
                _part(root / split / c / f"{c}_{i}.png", seed)
    return root


@pytest.fixture()
def clean(tmp_path: Path) -> Path:
    return _presplit(tmp_path / "clean")


def test_clean_set_is_ok(clean: Path) -> None:
    rep = diagnose(clean, progress=False)
    assert rep.ok and rep.verdict.startswith("OK"), rep.verdict
    assert rep.classes == {"damaged": 12, "intact": 12}
    assert rep.splits["test"] == {"damaged": 4, "intact": 4}
    assert rep.modes == {"RGB": 24} and rep.sizes["most_common"] == {"64x64": 24}
    assert rep.imbalance_ratio == 1.0


def test_exact_copy_across_splits_is_leakage(clean: Path) -> None:
    shutil.copy(clean / "train/damaged/damaged_0.png", clean / "test/damaged/leaked.png")
    rep = diagnose(clean, progress=False)
    assert rep.problems[0]["kind"] == "leakage"
    (group,) = rep.exact_duplicates
    assert group["kinds"] == ["leakage"]
    assert {f["path"] for f in group["files"]} == {"train/damaged/damaged_0.png", "test/damaged/leaked.png"}
    assert "leakage" in rep.verdict
    # and training refuses the same split, naming both files
    samples = discover(clean)
    with pytest.raises(DataError, match=r"leaked\.png.*|damaged_0\.png") as e:
        check_leakage(samples)
    assert "leaked.png" in str(e.value) and "damaged_0.png" in str(e.value)
    assert len(check_leakage(samples, allow=True)) == 1


def test_resized_reencoded_copy_is_a_near_duplicate(clean: Path) -> None:
    src = clean / "train/intact/intact_1.png"
    Image.open(src).resize((96, 96), Image.Resampling.BILINEAR).save(clean / "val/intact/copy.jpg", quality=85)
    rep = diagnose(clean, progress=False)
    (pair,) = rep.near_duplicates
    assert {pair["a"]["path"], pair["b"]["path"]} == {"train/intact/intact_1.png", "val/intact/copy.jpg"}
    assert pair["kinds"] == ["leakage"] and pair["distance"] <= 4
    assert rep.exact_duplicates == []


def test_same_fixture_with_a_chip_is_not_a_duplicate(tmp_path: Path) -> None:
    # Same part, one with damage: pHash alone would pair them; the thumbnail check must not.
    _part(tmp_path / "d/intact/a.png", 7)
    _part(tmp_path / "d/damaged/b.png", 7, notch=True)
    rep = diagnose(tmp_path / "d", progress=False)
    assert rep.near_duplicates == [] and rep.exact_duplicates == []


def test_conflicting_labels_found(clean: Path) -> None:
    shutil.copy(clean / "train/damaged/damaged_2.png", clean / "train/intact/same.png")
    rep = diagnose(clean, progress=False)
    (group,) = rep.exact_duplicates
    assert group["kinds"] == ["conflicting_labels"]
    assert rep.problems[0]["kind"] == "conflicting_labels"


def test_within_class_duplicates_without_split_warn_about_random_split(tmp_path: Path) -> None:
    for c, s0 in (("a", 0), ("b", 100)):
        for i in range(3):
            _part(tmp_path / "d" / c / f"{i}.png", s0 + i)
    shutil.copy(tmp_path / "d/a/0.png", tmp_path / "d/a/copy_of_0.png")  # not "0_copy": a name group
    rep = diagnose(tmp_path / "d", progress=False)
    assert [p["kind"] for p in rep.problems] == ["duplicates"]
    assert "random split" in rep.problems[0]["message"]


def test_unreadable_files_with_reasons(clean: Path) -> None:
    good = (clean / "train/damaged/damaged_0.png").read_bytes()
    (clean / "train/damaged/trunc.png").write_bytes(good[: len(good) // 2])
    (clean / "train/damaged/zero.png").write_bytes(b"")
    (clean / "train/intact/text.png").write_text("path,label\n")
    rep = diagnose(clean, progress=False)
    reasons = {u["path"]: u["reason"] for u in rep.unreadable}
    assert "truncated" in reasons["train/damaged/trunc.png"]
    assert "0 bytes" in reasons["train/damaged/zero.png"]
    assert "text" in reasons["train/intact/text.png"]
    assert rep.n_readable == rep.n_files - 3
    assert rep.problems[0]["kind"] == "unreadable"


def test_verdict_order_worst_first(clean: Path) -> None:
    # Planted in the reverse order of harm: a lying extension, a blank frame, a tiny image,
    # a within-class copy, an unreadable file, a conflicting label, a leak.
    Image.open(clean / "train/intact/intact_0.png").save(clean / "train/intact/liar.png", format="JPEG")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(clean / "train/intact/blank.png")
    _part(clean / "train/intact/tiny.png", 999, size=16)
    shutil.copy(clean / "train/intact/intact_3.png", clean / "train/intact/copy.png")
    (clean / "val/intact/zero.png").write_bytes(b"")
    shutil.copy(clean / "train/damaged/damaged_2.png", clean / "train/intact/same.png")
    shutil.copy(clean / "train/damaged/damaged_0.png", clean / "test/damaged/leaked.png")
    rep = diagnose(clean, progress=False)
    kinds = [p["kind"] for p in rep.problems]
    # (liar.png is also a re-encoded copy of intact_0.png: a near-duplicate)
    assert kinds == ["leakage", "conflicting_labels", "unreadable", "duplicates", "near_duplicates",
                     "constant_images", "small_images", "extension_mismatch"]
    assert kinds == sorted(kinds, key=HARM_ORDER.index)
    assert rep.verdict.startswith("PROBLEMS: leakage")
    assert rep.verdict.index("conflicting") < rep.verdict.index("unreadable")


def test_imbalance_and_single_class(tmp_path: Path) -> None:
    for i in range(9):
        _part(tmp_path / "d/intact" / f"{i}.png", i)
    _part(tmp_path / "d/damaged/0.png", 50)
    _part(tmp_path / "d/damaged/1.png", 51)
    rep = diagnose(tmp_path / "d", progress=False)
    assert rep.imbalance_ratio == 4.5 and [p["kind"] for p in rep.problems] == ["imbalance"]
    shutil.rmtree(tmp_path / "d/damaged")
    rep = diagnose(tmp_path / "d", progress=False)  # discover() refuses one class; the doctor reports it
    assert rep.problems[0]["kind"] == "single_class"


def test_near_pairs_banding_is_exact_for_the_threshold() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300).astype(np.uint64)
    # plant neighbours at exactly 1..6 bits, spread so that every band is hit
    planted = []
    for d in range(1, 7):
        bits = rng.choice(64, d, replace=False)
        mask = np.uint64(sum(1 << int(b) for b in bits))
        planted.append(base[d] ^ mask)
    h = np.concatenate([base, np.array(planted, dtype=np.uint64)])
    for t in (3, 4, 6):
        got = near_pairs(h, t)
        brute = [(i, j, (int(h[i]) ^ int(h[j])).bit_count()) for i in range(len(h)) for j in range(i + 1, len(h))
                 if (int(h[i]) ^ int(h[j])).bit_count() <= t]
        assert got == brute
        assert sum(1 for p in got if p[1] >= 300) == t


def test_phash_and_sniff_basics() -> None:
    rng = np.random.default_rng(1)
    g = np.asarray(Image.fromarray(rng.integers(0, 200, (5, 5), dtype=np.uint8)).resize((32, 32), Image.BICUBIC),
                   dtype=np.float64)
    assert phash(g) == phash(g + 3)  # a brightness shift moves only the DC coefficient
    assert (phash(g) ^ phash(np.rot90(g))).bit_count() > 8  # a different picture: many bits differ
    flat = np.full((32, 32), 7.0)
    assert phash(flat) == phash(flat + 50)  # float noise must not decide the bits of a flat image
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "PNG" and sniff(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP" and sniff(b"path,label\n") == "TEXT"
    assert sniff(b"\x00\x01\x02\xfe") is None


def test_cheap_checks(tmp_path: Path) -> None:
    ok = [_part(tmp_path / f"{i}.png", i) for i in range(3)]
    (tmp_path / "z.png").write_bytes(b"")
    (tmp_path / "t.png").write_text("hello")
    Image.open(ok[0]).save(tmp_path / "j.png", format="JPEG")
    samples = [Sample(p, "a", "train") for p in ok] + [
        Sample(tmp_path / "z.png", "b", "train"), Sample(tmp_path / "t.png", "b", "test"),
        Sample(tmp_path / "j.png", "b", "train")]
    msgs = "\n".join(cheap_checks(samples))
    assert "fewer than 10" in msgs and "split test has no images of class(es) a" in msgs
    assert "z.png" in msgs and "t.png" in msgs and "j.png" in msgs


def test_cli_exit_codes_json_and_fix_report(clean: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["doctor", str(clean), "--quiet", "--json", str(tmp_path / "ok.json")])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and json.loads((tmp_path / "ok.json").read_text())["ok"] is True

    shutil.copy(clean / "train/damaged/damaged_0.png", clean / "test/damaged/leaked.png")
    res = runner.invoke(app, ["doctor", str(clean), "-q", "--json", str(tmp_path / "r.json"),
                              "--fix-report", str(tmp_path / "fix.csv"), "--near-threshold", "3"])
    assert res.exit_code == 1, res.output
    assert "leakage" in res.output and "leaked.png" in res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ok"] is False and rep["problems"][0]["kind"] == "leakage" and rep["near_threshold"] == 3
    rows = list(csv.DictReader((tmp_path / "fix.csv").open()))
    assert rows[0]["issue"] == "leakage" and rows[0]["path"] == "test/damaged/leaked.png"

    res = runner.invoke(app, ["doctor", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


# ------------------------------------------------------------------ the checks train runs (data/doctor/training.py)

def test_check_for_training_drops_repeated_rows_and_refuses_what_ruins_a_model(clean: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from inspectnet.data.doctor import check_for_training

    cfg = SimpleNamespace(allow_leakage=False, allow_label_conflicts=False)
    samples = discover(clean)
    n = len(samples)
    kept, warnings = check_for_training(samples + [Sample(s.path, s.label, s.split) for s in samples[:3]], cfg)
    assert len(kept) == n and len(warnings) == 1 and "dropped 3 duplicate row(s)" in warnings[0]

    relabelled = samples + [Sample(samples[0].path, "intact", "train")]  # one path, two labels
    with pytest.raises(DataError, match="1 image.* more than one label.*--allow-label-conflicts") as e:
        check_for_training(relabelled, cfg)
    assert str(samples[0].path) in str(e.value)
    kept, warnings = check_for_training(relabelled, SimpleNamespace(allow_leakage=False, allow_label_conflicts=True))
    assert len(kept) == n + 1 and "more than one label" in warnings[0]

    shutil.copy(samples[0].path, tmp_path / "copy.png")  # identical content, the other label
    with pytest.raises(DataError, match="identical content") as e:
        check_for_training(samples + [Sample(tmp_path / "copy.png", "intact", "train")], cfg)
    assert "copy.png" in str(e.value)

    no_val = [s for s in samples if not (s.label == "damaged" and s.split == "val")]
    with pytest.raises(DataError, match=r"'damaged' has 8 image\(s\) \(train 4, val 0, test 4\)"):
        check_for_training(no_val, cfg)
    # The doctor says the same of that set: one code path.
    assert any("split val has no images of class(es) damaged" in m for m in cheap_checks(no_val))
