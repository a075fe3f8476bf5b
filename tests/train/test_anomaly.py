"""--approach anomaly: PatchCore trained on intact images only, with anomaly maps.

One easy synthetic set (damage masks included) is trained once for the module; its test
split holds damaged images the model never saw a label of.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest_serve import running_server
from inspectnet.cli import app
from inspectnet.errors import DataError
from inspectnet.evaluate.pixel import aupro, pixel_auroc
from inspectnet.models.patchcore import greedy_coreset
from inspectnet.synth import generate

runner = CliRunner()
SIZE = 224


def _manifest(data: Path, out: Path, damaged_in_val: bool = True) -> Path:
    """Train: intact only. Val: intact (+ damaged). Test: both. Rows of the synth manifest."""
    with (data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    by = {c: [r for r in rows if r["label"] == c] for c in ("intact", "damaged")}
    out_rows = []
    for i, r in enumerate(by["intact"]):
        split = "train" if i < len(by["intact"]) * 0.6 else "val" if i < len(by["intact"]) * 0.8 else "test"
        out_rows.append((r["path"], "intact", split))
    for i, r in enumerate(by["damaged"]):
        split = "val" if damaged_in_val and i < len(by["damaged"]) // 2 else "test"
        out_rows.append((r["path"], "damaged", split))
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(out_rows)
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("anomaly") / "data", n=200, seed=1, difficulty="easy", size=SIZE,
                    progress=False)


@pytest.fixture(scope="module")
def run(synth: Path) -> Path:
    out = synth.parent / "run"
    manifest = _manifest(synth, synth / "anomaly.csv")
    res = runner.invoke(app, ["train", str(manifest), "--approach", "anomaly", "--img-size", str(SIZE),
                              "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def test_trains_on_intact_only_and_ranks_unseen_damage_above_intact(run: Path) -> None:
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] >= 60
    # 50 damaged test images it never saw a label of: well above chance (0.5).
    assert m["roc_auc"] >= 0.75, m["roc_auc"]
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["architecture"] == "patchcore-efficientnet_lite0" and card["approach"] == "anomaly"
    assert card["anomaly_center"] is not None and card["anomaly_scale"] > 0
    assert any("memory bank" in n for n in m["notes"]) and any("damaged and" in n for n in m["notes"])
    split = list(csv.DictReader((run / "split.csv").open()))
    assert {r["label"] for r in split if r["split"] == "train"} == {"intact"}
    # The report's gallery shows anomaly maps and says so, not Grad-CAM.
    report = (run / "report.html").read_text()
    assert "its anomaly map" in report and "LayerCAM heatmap" not in report


def test_the_bank_is_in_the_safetensors_and_round_trips(run: Path) -> None:
    from safetensors.torch import load_file

    from inspectnet.bundle import load_model

    tensors = load_file(run / "model" / "weights.safetensors")
    bank = tensors["bank"]
    assert bank.ndim == 2 and bank.shape[0] > 100 and bank.shape[1] == 40 + 112  # Lite0 blocks 2 and 4
    lm = load_model(run)
    assert torch.equal(lm.network.bank, bank)
    x = torch.rand(2, 3, SIZE, SIZE)
    assert torch.isfinite(lm.network(x)).all()


def test_evaluate_with_masks_scores_the_maps_per_pixel(run: Path, synth: Path) -> None:
    res = runner.invoke(app, ["evaluate", str(run), "--masks", str(synth), "--no-report"])
    assert res.exit_code == 0, res.output
    loc = json.loads((run / "localization.json").read_text())
    assert loc["n_pixel_images"] >= 60  # every test image, the intact ones as background
    assert loc["pixel_auroc"] >= 0.75 and 0 < loc["aupro"] <= 1, loc


def test_predict_gives_the_score_the_verdict_and_onnx_matches(run: Path, synth: Path, tmp_path: Path) -> None:
    images = sorted((synth / "damaged").glob("*.png"))[-3:] + sorted((synth / "intact").glob("*.png"))[-3:]
    local = tmp_path / "run"
    shutil.copytree(run, local)
    res = runner.invoke(app, ["predict", str(local), *map(str, images), "-f", "json", "--engine", "torch"])
    assert res.exit_code == 0, res.output
    torch_rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(torch_rows) == 6
    for r in torch_rows:
        assert np.isfinite(r["anomaly_score"]) and r["verdict"] in ("damaged", "intact") and r["class"] == r["verdict"]
    # The exported graph computes the score itself: features, distances to the bank, max.
    assert runner.invoke(app, ["export", str(local), "--format", "onnx"]).exit_code == 0
    res = runner.invoke(app, ["predict", str(local), *map(str, images), "-f", "json", "--engine", "onnx"])
    onnx_rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    for a, b in zip(torch_rows, onnx_rows):
        assert a["verdict"] == b["verdict"]
        assert abs(a["p_damaged"] - b["p_damaged"]) < 1e-4
        assert b["anomaly_score"] == pytest.approx(a["anomaly_score"], rel=1e-4, abs=1e-3)


def test_serve_answers_the_score_and_the_anomaly_map(run: Path, synth: Path) -> None:
    from inspectnet.serve.app import create_app

    img = sorted((synth / "damaged").glob("*.png"))[-1]
    with running_server(create_app(run, engine="torch")) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/predict", params={"cam": "true"},
                   files=[("files", (img.name, img.read_bytes(), "image/png"))])
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert np.isfinite(res["anomaly_score"]) and res["verdict"] in ("damaged", "intact")
    heat = Image.open(io.BytesIO(base64.b64decode(res["heatmap_png"])))
    assert heat.size[0] > 0


def test_a_folder_of_intact_images_alone_trains_with_a_quantile_threshold(synth: Path, tmp_path: Path) -> None:
    data = tmp_path / "good"
    shutil.copytree(synth / "intact", data / "intact")
    res = runner.invoke(app, ["train", str(data), "--approach", "anomaly", "--img-size", "64",
                              "--out", str(tmp_path / "run"), "--quiet", "--anomaly-quantile", "0.95"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert any("0.95 quantile" in n for n in m["notes"]), m["notes"]
    card = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert card["classes"] == ["damaged", "intact"] and card["positive_class"] == "damaged"


def test_a_bank_over_the_cap_is_refused_with_the_arithmetic(synth: Path, tmp_path: Path) -> None:
    from inspectnet import train

    with pytest.raises(DataError, match=r"memory bank would collect .* over --bank-max-mb 1;"):
        train(str(_manifest(synth, synth / "cap.csv")), approach="anomaly", img_size=SIZE, bank_max_mb=1,
              out=tmp_path / "run", quiet=True)


def test_damaged_training_images_are_left_out_of_the_bank(synth: Path, tmp_path: Path) -> None:
    from inspectnet import train

    res = train(str(synth), approach="anomaly", img_size=64, out=tmp_path / "run", quiet=True)
    n_train_intact = sum(1 for r in csv.DictReader((tmp_path / "run" / "split.csv").open())
                         if r["split"] == "train" and r["label"] == "intact")
    assert any(f"of {n_train_intact} intact training images" in n for n in res.notes), res.notes


# ---------------------------------------------------------------- the parts


def test_greedy_coreset_covers_the_features_better_than_a_random_subset() -> None:
    g = torch.Generator().manual_seed(0)
    # Two dense clusters and a few outliers: k-center must keep the outliers.
    feats = torch.cat([torch.randn(900, 8, generator=g) * 0.1, torch.randn(97, 8, generator=g) * 0.1 + 5,
                       torch.randn(3, 8, generator=g) * 0.1 + 20])
    sel = greedy_coreset(feats, 0.05, proj_dim=64, seed=0)
    assert len(sel) == 50 and len(set(sel.tolist())) == 50
    assert (sel >= 997).any() and ((sel >= 900) & (sel < 997)).any()  # every cluster, the 3 outliers too
    rand = torch.randperm(len(feats), generator=g)[:50]

    def radius(idx: torch.Tensor) -> float:
        return float(torch.cdist(feats, feats[idx]).min(1).values.max())

    assert radius(sel) < radius(rand)
    assert torch.equal(sel, greedy_coreset(feats, 0.05, seed=0))  # seeded


def test_pixel_auroc_and_aupro_known_cases() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:6, 2:6] = True  # a large region
    mask[15, 15] = True  # a one-pixel region
    perfect = mask.astype(np.float32)
    assert pixel_auroc([perfect], [mask]) == 1.0 and aupro([perfect], [mask]) == pytest.approx(1.0, abs=0.01)
    # Finds the large region, misses the small one: pixel AUROC hardly notices, AUPRO about
    # halves (0.5 up to where the tied background lets the missed pixel through: 0.575).
    big_only = perfect.copy()
    big_only[15, 15] = 0
    assert pixel_auroc([big_only], [mask]) > 0.9
    assert aupro([big_only], [mask]) == pytest.approx(0.575, abs=0.01)
    rng = np.random.default_rng(0)
    noise = [rng.random((20, 20)) for _ in range(20)]
    masks = [rng.random((20, 20)) < 0.1 for _ in range(20)]
    assert abs(pixel_auroc(noise, masks) - 0.5) < 0.05
    assert aupro(noise, masks) == pytest.approx(0.15, abs=0.04)  # chance: fpr_limit / 2
    assert pixel_auroc([perfect], [np.zeros_like(mask)]) is None and aupro([perfect], [np.zeros_like(mask)]) is None
    with pytest.raises(ValueError, match="differ"):
        pixel_auroc([perfect], [mask[:10]])
