"""The ``group`` column: read from a manifest, kept whole by the split and by the folds of ``--cv``."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from inspectnet.data.sources import Sample, discover, from_csv
from inspectnet.data.split import stratified_folds, stratified_split, write_split_csv


def _grouped(n_groups: int = 12, per_group: int = 3, labels: str = "ab") -> list[Sample]:
    return [Sample(Path(f"/d/{c}/part{g:02d}_{v}.png"), c, group=f"{c}{g}")
            for c in labels for g in range(n_groups) for v in range(per_group)]


def _split_of_each_group(samples: list[Sample]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        out[s.group].add(s.split)
    return out


def test_manifest_group_column_is_read_and_written_back(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "m.csv").write_text("path,label,group,camera\na.png,x,p1,c1\nb.png,x,p1,c2\n"
                                    "c.png,y,,c1\nd.png,y,p2,c1\n")
    samples = from_csv(tmp_path / "m.csv")
    assert [s.group for s in samples] == ["p1", "p1", None, "p2"]
    assert samples[0].meta == {"camera": "c1"}  # group is a field, not metadata
    for s, sp in zip(samples, ("train", "train", "test", "val")):
        s.split = sp
    back = from_csv(write_split_csv(samples, tmp_path / "split.csv"))
    assert [(s.group, s.split, s.meta) for s in back] == [(s.group, s.split, s.meta) for s in samples]
    with (tmp_path / "split.csv").open() as f:
        assert next(csv.reader(f)) == ["path", "label", "split", "group", "camera"]


def test_without_groups_nothing_changes(toy_data: Path, tmp_path: Path) -> None:
    samples = discover(toy_data)
    assert all(s.group is None for s in samples)
    write_split_csv(stratified_split(samples, seed=3), tmp_path / "split.csv")
    with (tmp_path / "split.csv").open() as f:
        assert next(csv.reader(f)) == ["path", "label", "split"]  # no group column appears


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_keeps_every_group_in_one_split_and_stays_stratified(seed: int) -> None:
    samples = _grouped()
    stratified_split(samples, 0.15, 0.15, seed)
    assert all(len(splits) == 1 for splits in _split_of_each_group(samples).values())
    counts = Counter((s.label, s.split) for s in samples)
    for c in "ab":  # 36 images a class in groups of 3: 5.4 wanted in val and test, 6 (two groups) is closest
        assert counts[(c, "test")] in (3, 6) and counts[(c, "val")] in (3, 6)
        assert counts[(c, "train")] >= 24
    # seeded: the same seed gives the same split, whatever the input order
    again = list(reversed(_grouped()))
    stratified_split(again, 0.15, 0.15, seed)
    assert sorted((str(s.path), s.split) for s in again) == sorted((str(s.path), s.split) for s in samples)


def test_grouped_split_puts_big_groups_in_train_and_singletons_fill_the_rest() -> None:
    samples = _grouped(n_groups=1, per_group=8, labels="a") + [
        Sample(Path(f"/d/a/single{i}.png"), "a") for i in range(12)]
    stratified_split(samples, 0.15, 0.15, 0)
    assert {s.split for s in samples if s.group} == {"train"}
    counts = Counter(s.split for s in samples)
    assert counts == {"train": 14, "val": 3, "test": 3}  # exactly the ungrouped sizes of 20 images


def test_folds_are_stratified_balanced_and_group_aware() -> None:
    samples = _grouped(n_groups=10, per_group=2)
    folds = stratified_folds(samples, 5, seed=0)
    fold_of_group: dict[str, set[int]] = defaultdict(set)
    for s, f in zip(samples, folds):
        fold_of_group[s.group].add(f)
    assert all(len(f) == 1 for f in fold_of_group.values())
    assert Counter((s.label, f) for s, f in zip(samples, folds)) == {(c, f): 4 for c in "ab" for f in range(5)}
    assert folds == stratified_folds(samples, 5, seed=0) and folds != stratified_folds(samples, 5, seed=1)
    # without groups: every class spread evenly, fold sizes within one image
    plain = [Sample(Path(f"/d/{c}/{i}.png"), c) for c in "ab" for i in range(11 if c == "a" else 18)]
    folds = stratified_folds(plain, 5, seed=0)
    per_class = Counter((s.label, f) for s, f in zip(plain, folds))
    assert {per_class[("a", f)] for f in range(5)} <= {2, 3} and {per_class[("b", f)] for f in range(5)} <= {3, 4}
    sizes = Counter(folds).values()
    assert max(sizes) - min(sizes) <= 1


def test_a_class_with_a_group_for_every_split_reaches_every_split() -> None:
    samples = _grouped(n_groups=3, per_group=2)  # 6 images a class want 4/1/1; whole groups give 2/2/2
    stratified_split(samples, 0.15, 0.15, 0)
    assert Counter((s.label, s.split) for s in samples) == {(c, sp): 2 for c in "ab" for sp in ("train", "val", "test")}
