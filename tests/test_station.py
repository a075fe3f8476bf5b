"""The inspection station: `inspectnet predict` on an exported run with torch unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest_serve import lite_run, seed_run, serve_process, toy_images  # noqa: F401 - fixtures
from inspectnet.predict import expand_inputs, make_predictor

# Any import of torch (or of what needs it) fails in the child: the station must not reach it.
NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'lightning', 'safetensors'):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)  # as when not installed
sys.meta_path.insert(0, _NoTorch())
sys.argv = ['inspectnet'] + sys.argv[1:]
from inspectnet.cli import main
main()
"""


@pytest.mark.parametrize("run_fixture", ["seed_run", "lite_run"])
def test_predict_without_torch_matches_the_torch_engine(run_fixture: str, tmp_path_factory: pytest.TempPathFactory,
                                                       request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(run_fixture)
    images = sorted(expand_inputs([toy_images(tmp_path_factory)]))[:12]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", str(run), *map(str, images), "-f", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    want = list(make_predictor(run, engine="torch").predict_paths(images))
    assert len(got) == len(want) == 12
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["tta_views"] >= 1
    for g, w in zip(got, want):
        assert g["path"] == w["path"] and g["verdict"] == w["verdict"] and g["review"] == w["review"]
        for k in w["probabilities"]:
            assert abs(g["probabilities"][k] - w["probabilities"][k]) < 1e-4, (k, g, w)


def test_predict_without_torch_reports_bad_files_and_needs_torch_only_for_cams(
        lite_run: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    good = sorted(expand_inputs([toy_images(tmp_path_factory)]))[0]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", str(lite_run), str(good), str(bad), "-f", "csv"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "1 unreadable" in proc.stderr, proc.stderr
    rows = proc.stdout.strip().splitlines()
    assert rows[0].startswith("path,verdict") and "broken.png" in rows[2] and rows[2].split(",")[-1]
    assert "Traceback" not in proc.stderr
    # --cam needs gradients: the torch engine, which this station does not have.
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", str(lite_run), str(good), "--cam",
                           str(tmp_path / "cams")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "torch" in proc.stderr


def test_station_views_follow_the_torch_order() -> None:
    import torch

    from inspectnet.data.augment import dihedral_views
    from inspectnet.station import dihedral_np

    x = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    for a, b in zip(dihedral_np(x, 8), dihedral_views(torch.from_numpy(x), 8)):
        assert np.array_equal(a, b.numpy())


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path: Path, toy_data: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "train", str(toy_data), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "pip install 'inspectnet[train]'" in proc.stderr, proc.stderr


def test_serve_without_torch_answers_like_the_torch_engine(lite_run: Path,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx

    images = sorted(expand_inputs([toy_images(tmp_path_factory)]))[:4]
    want = {Path(r["path"]).name: r for r in make_predictor(lite_run, engine="torch").predict_paths(images)}
    with serve_process([sys.executable, "-c", NO_TORCH, "serve", str(lite_run)]) as (url, proc):
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
        r = httpx.post(f"{url}/v1/predict", files=files, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["engine"] == "onnx"
        for got in r.json()["results"]:
            w = want[got["name"]]
            assert got["verdict"] == w["verdict"]
            for k, v in w["probabilities"].items():
                assert abs(got["probabilities"][k] - v) < 1e-4
        # Heatmaps need gradients: a JSON 501 that says what to install, not a crash.
        r = httpx.post(f"{url}/v1/predict", params={"cam": "true"}, files=files[:1], timeout=60)
        assert r.status_code == 501 and "torch" in r.json()["detail"], r.text
        model = httpx.get(f"{url}/v1/model", timeout=30)
        assert model.status_code == 200 and model.json()["cam_available"] is False, model.text
    assert proc.returncode == 0


def test_lanes_give_the_rows_of_one_engine_in_input_order(seed_run: Path, tmp_path: Path,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """``predict`` runs one decode-then-infer lane per core; the rows must be those of a
    single engine, in the order of the inputs, bad files included where they were."""
    from inspectnet.station import Station

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    paths = sorted(expand_inputs([toy_images(tmp_path_factory)]))
    paths = paths[:7] + [bad] + paths[7:]
    one = list(Station(seed_run).predict_paths(paths, batch_size=4))
    two = list(Station(seed_run, lanes=3).predict_paths(paths, batch_size=4))
    assert [r["path"] for r in two] == [str(p) for p in paths] == [r["path"] for r in one]
    assert two[7]["error"] and "broken.png" in two[7]["path"]
    assert [r["verdict"] for r in two] == [r["verdict"] for r in one]
    for a, b in zip(one, two):
        assert (a["error"] is None) == (b["error"] is None)
        if a["error"] is None:
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16", "exif"])
def test_the_fast_decode_gives_the_pixels_of_decode_then_resize(mode: str, tmp_path: Path) -> None:
    from PIL import Image

    from inspectnet.data.pixels import decode_pil, decode_resized_pil, resize_pil

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8))
    img = {"RGB": rgb, "L": rgb.convert("L"), "P": rgb.convert("P"), "RGBA": rgb.convert("RGBA"), "exif": rgb,
           "I;16": Image.fromarray(rng.integers(0, 60000, (45, 61), dtype=np.uint16))}[mode]
    path = tmp_path / ("a.jpg" if mode == "exif" else "a.png")
    if mode == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # turned 90 degrees
        img.save(path, exif=exif)
    else:
        img.save(path)
    for size in (32, 61):
        want = resize_pil(decode_pil(path), size)
        got = decode_resized_pil(path, size)
        assert got.shape == (3, size, size) and got.dtype == np.uint8
        assert np.array_equal(got, want)
