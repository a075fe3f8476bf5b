"""`inspectnet predict --engine ray`: the station on a local 2-CPU Ray cluster gives the local
path's rows, files, resume and shards; torch is never imported; a missing extra is named."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest_serve import seed_run, toy_images  # noqa: F401 - fixtures
from inspectnet.cli import app
from inspectnet.predict import expand_inputs
from test_station import NO_TORCH

runner = CliRunner()
# Ray Data's own settings warn about their renamed fields when a context is copied.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs, the one every `--engine ray` run of this module joins."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'inspectnet[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'inspectnet[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The toy images and one file that is not an image."""
    bad = tmp_path_factory.mktemp("ray_bad") / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return [str(toy_images(tmp_path_factory)), str(bad)]


def _predict(run: Path, inputs: list[str], out: Path, *args: str) -> str:
    r = runner.invoke(app, ["predict", str(run), *inputs, "--skip-bad", "--output", str(out), *args])
    assert r.exit_code == 0, r.output
    return r.output


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _words(row: dict) -> dict:
    """A row without its probabilities (compared within 1e-6 instead)."""
    return {k: v for k, v in row.items() if k not in ("probabilities", "probability") and not k.startswith("p_")}


def test_rows_equal_the_local_station(seed_run: Path, ray_cluster, inputs: list[str], tmp_path: Path) -> None:
    n = len(expand_inputs(inputs))
    out = _predict(seed_run, inputs, tmp_path / "ray.jsonl", "--engine", "ray", "--batch-size", "8")
    assert f"{n} inspected" in out and "1 unreadable" in out and "(ray engine)" in out
    _predict(seed_run, inputs, tmp_path / "local.jsonl", "--engine", "onnx")
    got, want = _jsonl(tmp_path / "ray.jsonl"), _jsonl(tmp_path / "local.jsonl")
    assert [g["path"] for g in got] == [w["path"] for w in want] and len(got) == n  # input order
    for g, w in zip(got, want):
        if w["error"] is not None:  # the corrupt file: the same error row, by name
            assert g == w and g["path"].endswith("corrupt.png") and g["error"]
            continue
        assert _words(g) == _words(w)  # verdict, review, reason, threshold...
        for k, v in w["probabilities"].items():
            assert abs(g["probabilities"][k] - v) < 1e-6, (k, g, w)

    # CSV: the same columns and cells (numbers printed to 6 places, so within one unit).
    _predict(seed_run, inputs, tmp_path / "ray.csv", "--engine", "ray", "--workers", "1")
    _predict(seed_run, inputs, tmp_path / "local.csv", "--engine", "onnx")
    got_csv, want_csv = _csv(tmp_path / "ray.csv"), _csv(tmp_path / "local.csv")
    columns = ["path", "verdict", "probability", "p_damaged", "review_reason", "error"]
    assert list(got_csv[0]) == list(want_csv[0]) == columns
    for g, w in zip(got_csv, want_csv, strict=True):
        assert (g["path"], g["verdict"], g["error"]) == (w["path"], w["verdict"], w["error"])
        if w["probability"]:
            assert abs(float(g["p_damaged"]) - float(w["p_damaged"])) <= 1.01e-6
    assert any(r["path"].endswith("corrupt.png") and r["error"] for r in got_csv)


def test_resume_and_shards(seed_run: Path, ray_cluster, inputs: list[str], tmp_path: Path) -> None:
    n = len(expand_inputs(inputs))
    full = tmp_path / "full.csv"
    _predict(seed_run, inputs, full, "--engine", "ray")
    lines = full.read_text().splitlines(keepends=True)
    part = tmp_path / "part.csv"
    part.write_text("".join(lines[:8]) + lines[8][:12])  # 7 rows, and half of the 8th
    out = _predict(seed_run, inputs, part, "--engine", "ray", "--resume")
    assert "7 already in the file" in out
    resumed = _csv(part)
    assert len(resumed) == n and len({r["path"] for r in resumed}) == n
    assert {r["path"]: r["verdict"] for r in resumed} == {r["path"]: r["verdict"] for r in _csv(full)}

    seen: list[str] = []
    for i in (1, 2):
        shard = tmp_path / f"shard{i}.jsonl"
        _predict(seed_run, inputs, shard, "--engine", "ray", "--shard", f"{i}/2")
        seen += [r["path"] for r in _jsonl(shard)]
    assert len(seen) == len(set(seen)) == n


def test_joins_a_running_cluster_without_importing_torch(seed_run: Path, ray_cluster, inputs: list[str],
                                                         tmp_path: Path) -> None:
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    out = tmp_path / "station.jsonl"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", str(seed_run), *inputs, "--engine", "ray",
                           "--skip-bad", "--output", str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0 and "(ray engine)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(_jsonl(out)) == len(expand_inputs(inputs))


def test_a_missing_ray_names_the_extra(seed_run: Path, inputs: list[str]) -> None:
    no_ray = NO_TORCH.replace("('torch',", "('ray', 'torch',")
    assert no_ray != NO_TORCH
    proc = subprocess.run([sys.executable, "-c", no_ray, "predict", str(seed_run), *inputs, "--engine", "ray"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'inspectnet[ray]'" in proc.stderr, proc.stderr


def test_cpu_only_and_worker_errors_unwrapped(seed_run: Path, inputs: list[str]) -> None:
    from inspectnet.errors import ModelError
    from inspectnet.predict.ray_engine import _inspectnet_cause

    r = runner.invoke(app, ["predict", str(seed_run), *inputs, "--engine", "ray", "--device", "cuda"])
    assert r.exit_code == 2 and "--engine ray runs the exported model on CPUs" in r.output
    inner = ModelError("model.onnx is missing")
    wrapper = RuntimeError("worker died")
    wrapper.cause = inner  # as Ray's RayTaskError carries the worker's exception
    assert _inspectnet_cause(wrapper) is inner and _inspectnet_cause(RuntimeError("x")) is None
