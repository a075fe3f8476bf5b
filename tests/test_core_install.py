"""The core install really has no torch (#17's acceptance).

A fresh venv holds exactly what ``pip install .`` (and ``pip install '.[serve]'``) would put
in it: the distributions in the closure of inspectnet's declared requirements, taken from
those installed here, file by file (an offline wheel cache of what is already installed,
without the wheel step). torch, timm, Lightning, scikit-learn... are not in it, so nothing
the station does can reach them, whatever it imports. There, ``predict`` and ``serve`` answer
as the full install's torch engine does, and training says which extra to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from conftest_serve import lite_run, serve_process, toy_images  # noqa: F401 - fixtures
from inspectnet.predict import expand_inputs, make_predictor

ROOT = Path(__file__).resolve().parents[1]


def requirement_closure(root: str) -> dict[str, metadata.Distribution]:
    """The installed distributions that ``pip install <root>`` needs (``root`` may name
    extras, e.g. ``inspectnet[serve]``), by canonical name; markers evaluated here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dists: dict[str, metadata.Distribution] = {}
    extras_of: dict[str, set[str]] = {}
    todo = [Requirement(root)]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        asked = set(req.extras)
        if key in dists and asked <= extras_of[key]:
            continue
        dists[key] = metadata.distribution(req.name)
        extras_of[key] = extras_of.get(key, set()) | asked
        for line in dists[key].requires or []:
            dep = Requirement(line)
            envs = [{"extra": e} for e in extras_of[key] | {""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append(dep)
    return dists


def core_venv(where: Path, root: str) -> Path:
    """A venv with the closure of ``root`` linked in file by file; inspectnet from ``src/``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    site = next(where.glob("lib/python*/site-packages"))
    for key, dist in requirement_closure(root).items():
        if key == "inspectnet":
            continue  # the checkout itself, below
        base = Path(dist.locate_file(""))
        for f in dist.files or []:
            src = (base / f).resolve()
            if ".." in f.parts or not src.is_file():
                continue  # scripts in bin/, data outside site-packages
            dst = site / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src)
    (site / "inspectnet-src.pth").write_text(str(ROOT / "src") + "\n")
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return core_venv(tmp_path_factory.mktemp("core-venv"), "inspectnet")


@pytest.fixture(scope="module")
def serve_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return core_venv(tmp_path_factory.mktemp("serve-venv"), "inspectnet[serve]")


def run_in(python: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_the_core_venv_has_no_torch_and_predicts_like_the_torch_engine(
        core_python: Path, lite_run: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    probe = run_in(core_python, "-c", "import importlib.util as u; print([m for m in ('torch', 'timm', 'lightning', "
                                      "'sklearn', 'fastapi') if u.find_spec(m)]); import onnxruntime, inspectnet")
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    images = sorted(expand_inputs([toy_images(tmp_path_factory)]))[:6]
    out = tmp_path / "rows.jsonl"
    proc = run_in(core_python, "-m", "inspectnet", "predict", str(lite_run), *map(str, images), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "onnx engine" in proc.stderr
    import json

    got = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    want = {Path(r["path"]).name: r for r in make_predictor(lite_run, engine="torch").predict_paths(images)}
    assert got.keys() == want.keys()
    for name, w in want.items():
        assert got[name]["verdict"] == w["verdict"]
        assert np.allclose(list(got[name]["probabilities"].values()), list(w["probabilities"].values()), atol=1e-4)


def test_the_core_venv_names_the_extra_a_command_needs(core_python: Path, lite_run: Path, tmp_path: Path) -> None:
    for args, extra in ((["train", str(tmp_path)], "train"), (["serve", str(lite_run)], "serve")):
        proc = run_in(core_python, "-m", "inspectnet", *args)
        assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
        assert f"inspectnet[{extra}]" in proc.stderr, proc.stderr


def test_the_serve_venv_serves_without_torch(serve_python: Path, lite_run: Path,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx

    probe = run_in(serve_python, "-c", "import importlib.util as u; print(u.find_spec('torch'))")
    assert probe.stdout.strip() == "None", probe.stdout + probe.stderr
    images = sorted(expand_inputs([toy_images(tmp_path_factory)]))[:3]
    want = {Path(r["path"]).name: r for r in make_predictor(lite_run, engine="torch").predict_paths(images)}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with serve_process([str(serve_python), "-m", "inspectnet", "serve", str(lite_run)], env=env,
                       ready_timeout=90) as (url, proc):
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
        r = httpx.post(f"{url}/v1/predict", files=files, timeout=60)
        assert r.status_code == 200 and r.json()["engine"] == "onnx", r.text
        for row in r.json()["results"]:
            w = want[row["name"]]
            assert row["verdict"] == w["verdict"]
            assert all(abs(row["probabilities"][k] - v) < 1e-4 for k, v in w["probabilities"].items())
    assert proc.returncode == 0
