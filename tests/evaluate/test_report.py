"""The HTML report, calibration error and Grad-CAM-on-mask localisation scores."""

from __future__ import annotations

import csv
import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inspectnet.evaluate.localization import MaskIndex, localization_scores
from inspectnet.evaluate.report_plots import calibration_bins, expected_calibration_error, threshold_sweep

SECTIONS = ("summary", "data", "curves", "confusion", "roc-pr", "calibration", "threshold", "gallery", "model-card")


class _Collect(HTMLParser):
    """Ids, and every src/href value, of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.srcs: list[str] = []
        self.links: list[str] = []
        self.imgs_in: dict[str, int] = {}
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] = tag
        if tag == "section":
            self._stack.append(a.get("id") or "")
        if "src" in a:
            self.srcs.append(a["src"] or "")
        if "href" in a:
            self.links.append(a["href"] or "")
        if tag == "img" and self._stack:
            self.imgs_in[self._stack[-1]] = self.imgs_in.get(self._stack[-1], 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self._stack:
            self._stack.pop()


def _parse(path: Path) -> tuple[_Collect, str]:
    text = path.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(text)
    return p, text


def _check_self_contained(p: _Collect) -> None:
    assert p.srcs, "the report has no images"
    for s in p.srcs:
        assert s.startswith("data:image/png;base64,"), s[:60]
    for u in p.srcs + p.links:
        assert not u.lower().startswith(("http://", "https://", "//")), u


@pytest.fixture(scope="module")
def trained(toy_data: Path, tmp_path_factory: pytest.TempPathFactory):
    from inspectnet.train.run import train

    out = tmp_path_factory.mktemp("report") / "run"
    return train(toy_data, out=out, approach="scratch", model="seed-cnn", img_size=48, epochs=2, quiet=True)


def test_train_writes_report_with_every_section(trained) -> None:
    path = trained.run_dir / "report.html"
    assert path.is_file()
    p, text = _parse(path)
    for s in SECTIONS:
        assert p.ids.get(s) == "section", f"section #{s} is missing"
    _check_self_contained(p)
    for s in ("data", "curves", "roc-pr", "calibration", "threshold", "gallery"):
        assert p.imgs_in.get(s, 0) >= 1, f"section #{s} has no picture"
    assert "ECE" in text and "threshold" in text
    assert text.count("95% CI ") >= 2  # accuracy and the positive class's recall, with Wilson intervals
    assert f"{trained.card.threshold:.4f}" in text


def test_write_report_from_run_folder(trained, tmp_path: Path) -> None:
    from inspectnet.evaluate.report import write_report

    out = write_report(trained.run_dir, out=tmp_path / "again.html")
    p, _ = _parse(out)
    for s in SECTIONS:
        assert s in p.ids
    _check_self_contained(p)
    assert p.imgs_in.get("curves", 0) == 1  # the saved curves of the scratch run


def test_features_run_says_there_are_no_epochs(trained, tmp_path: Path) -> None:
    from inspectnet.bundle import load_model
    from inspectnet.data.cache import build_cache
    from inspectnet.data.sources import from_csv
    from inspectnet.evaluate.report import write_report_for_training

    lm = load_model(trained.run_dir)
    cache, _ = build_cache(from_csv(trained.run_dir / "split.csv"), lm.card.classes, 48, progress=False)
    res = dataclasses.replace(
        trained, run_dir=tmp_path, config=trained.config.override(approach="features"),
        history=[{"stage": "head", "epoch": 1, "val_loss": 0.3, "l2": 1.0}],
    )
    p, text = _parse(write_report_for_training(res, cache, lm.network, "cpu", quiet=True))
    assert "no epochs (features approach: head fitted on cached features)" in text
    assert p.imgs_in.get("curves", 0) == 0
    _check_self_contained(p)


# ---------------------------------------------------------------- calibration


def _binary(conf: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (class 1 gets ``conf``) and labels, right or wrong as asked."""
    probs = np.array([[1 - c, c] for c in conf])
    labels = np.array([1 if ok else 0 for ok in correct])
    return labels, probs


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    # 10 images at 0.8 of which 8 right, 10 at 0.6 of which 6 right, 4 at 1.0 all right.
    y1, p1 = _binary([0.8] * 10, [True] * 8 + [False] * 2)
    y2, p2 = _binary([0.6] * 10, [True] * 6 + [False] * 4)
    y3, p3 = _binary([1.0] * 4, [True] * 4)
    y, p = np.concatenate([y1, y2, y3]), np.concatenate([p1, p2, p3])
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    b = calibration_bins(y, p)
    assert b["count"].sum() == 24 and b["count"][-1] == 4  # confidence 1.0 lands in the last bin


def test_ece_of_an_overconfident_model() -> None:
    # Always 90 % sure, right half of the time: gap 0.4 in the only bin.
    y, p = _binary([0.9] * 10, [True, False] * 5)
    assert expected_calibration_error(y, p) == pytest.approx(0.4)
    # Two bins, weighted by their counts: 0.75 * |0.5 - 0.9| + 0.25 * |1.0 - 0.7| = 0.375.
    y2, p2 = _binary([0.7] * 4, [True] * 4)
    y3, p3 = _binary([0.9] * 12, [True, False] * 6)
    assert expected_calibration_error(np.r_[y3, y2], np.r_[p3, p2]) == pytest.approx(0.375)


def test_threshold_sweep_counts() -> None:
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.4, 0.5, 0.1])
    sw = threshold_sweep(y, s, 1, thresholds=np.array([0.05, 0.45, 0.95]))
    assert sw["recall"].tolist() == [1.0, 0.5, 0.0]
    assert sw["false_alarm_rate"].tolist() == [1.0, 0.5, 0.0]


# ---------------------------------------------------------------- localisation


class _BrightIsDamage(torch.nn.Module):
    """A model whose Grad-CAM for class 1 is exactly the image's red channel (clipped at 0):
    the feature map is that channel and the head is its mean, so every weight is positive."""

    num_features = 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        m = f.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _spot(y0: int, x0: int, size: int = 32, k: int = 8) -> np.ndarray:
    img = np.zeros((3, size, size), np.uint8)
    img[0, y0 : y0 + k, x0 : x0 + k] = 255
    return img


def _save_mask(path: Path, y0: int, x0: int, size: int = 64, k: int = 16) -> None:
    m = np.zeros((size, size), np.uint8)
    m[y0 : y0 + k, x0 : x0 + k] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)


@pytest.fixture()
def loc_case(tmp_path: Path):
    """Three damaged images (spot at 4..11) and one intact; masks at twice the input size:
    the first on the spot (a hit), the second far from it (a miss), the third missing."""
    data = tmp_path / "data"
    images = torch.from_numpy(np.stack([_spot(4, 4), _spot(4, 4), _spot(4, 4), _spot(20, 20)]))
    labels = torch.tensor([1, 1, 1, 0])
    paths = [data / "damaged" / "d1.png", data / "damaged" / "d2.png", data / "damaged" / "d3.png",
             data / "intact" / "i1.png"]
    _save_mask(data / "masks" / "d1.png", 8, 8)  # input pixels 4..11: the spot
    _save_mask(data / "masks" / "d2.png", 40, 40)  # input pixels 20..27: elsewhere
    return images, labels, paths, data


def test_localization_scores_hand_made(loc_case) -> None:
    images, labels, paths, data = loc_case
    r = localization_scores(_BrightIsDamage(), images, labels, paths, data / "masks", positive_index=1,
                            img_size=32, dilate_px=2)
    assert (r["n_positive"], r["n_flagged"], r["n_scored"], r["n_missing_mask"]) == (3, 3, 2, 1)
    assert r["pointing_game"] == pytest.approx(0.5)
    hits = {Path(x["path"]).name: (x["hit"], x["energy"]) for x in r["per_image"]}
    assert hits["d1.png"] == (True, pytest.approx(1.0))
    assert hits["d2.png"] == (False, pytest.approx(0.0))
    assert r["energy_inside"] == pytest.approx(0.5)
    # The dilated 8x8 mask grows to 12x12 of 32x32.
    assert r["mask_fraction"] == pytest.approx(144 / 1024)


def test_localization_reads_the_synth_manifest_and_threshold(loc_case) -> None:
    images, labels, paths, data = loc_case
    with (data / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "mask"])
        w.writerow(["damaged/d1.png", "damaged", "masks/d1.png"])
        w.writerow(["damaged/d2.png", "damaged", "masks/d2.png"])
        w.writerow(["damaged/d3.png", "damaged", ""])
        w.writerow(["intact/i1.png", "intact", ""])
    idx = MaskIndex(data)  # a data folder: its manifest wins
    assert idx.find(paths[0]) == data / "masks" / "d1.png"
    assert idx.find(paths[2]) is None
    r = localization_scores(_BrightIsDamage(), images, labels, paths, data / "manifest.csv", 1, 32, dilate_px=2)
    assert r["n_scored"] == 2 and r["pointing_game"] == pytest.approx(0.5)
    # p(damaged) of these images is about 0.53: a threshold above it flags none.
    r = localization_scores(_BrightIsDamage(), images, labels, paths, data, 1, 32, threshold=0.9)
    assert r["n_flagged"] == 0 and r["pointing_game"] is None


def test_report_finds_the_masks_behind_a_runs_split_csv(loc_case, tmp_path: Path) -> None:
    # compare hands the first run's split.csv to the others; their reports must still find
    # the data folder's masks from the image paths in it.
    from inspectnet.evaluate.report import _auto_masks

    _, _, paths, data = loc_case
    run = tmp_path / "runs" / "features"
    run.mkdir(parents=True)
    with (run / "split.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerow([str(paths[0]), "damaged", "train"])
    assert _auto_masks(run / "split.csv") == data
    (data / "masks" / "d1.png").unlink()
    (data / "masks" / "d2.png").unlink()
    (data / "masks").rmdir()
    assert _auto_masks(run / "split.csv") is None
