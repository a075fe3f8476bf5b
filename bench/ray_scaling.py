"""`inspectnet predict --engine ray` at 1 and 2 Ray workers against the local station (#17 item 9).

One efficientnet_lite0 features run (224 px, one view, exported to ONNX) and the same
synthetic PNGs for every row. Each row consumes ``run_predictions`` as ``predict`` does, with
the predictor ``predict`` would build (the local one from ``inspectnet.cli._predictor``):

- ``local``: the station in this process (``--engine onnx``);
- ``ray, N workers``: :class:`inspectnet.predict.RayStation` on a local Ray started once
  with 2 CPUs (its start-up is reported apart); each row starts its N workers afresh, as
  each ``predict`` command does.

``img_s`` is images over the whole call, worker start-up included (what a ``predict``
command of this size sees); ``first_row_s`` is the wait for the first row. ``marginal_img_s``
is the rate once running: each configuration also runs on the first ``--small`` images, and
``(N - small) / (T_N - T_small)`` cancels the fixed start-up. Configurations alternate over
``--rounds`` and the best round of each is kept: the machine is shared, and the best is the
least disturbed.

Usage: ``python bench/ray_scaling.py [--quick] [--images 400] [--rounds 2]``; prints a table
and writes ``bench/results/ray_scaling.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

SIZE = 224


def make_run(tmp: Path, n_images: int) -> tuple[Path, list[Path]]:
    """A small Lite0 features run, exported, and ``n_images`` synthetic PNGs to predict."""
    from inspectnet.export import export_onnx
    from inspectnet.predict import expand_inputs
    from inspectnet.synth import generate
    from inspectnet.train.run import train

    train_data = generate(tmp / "train", n=60, seed=0, difficulty="easy", size=256, progress=False)
    # One view per image (tta_views=1): views multiply the work per image; this measures the
    # engine's scaling, not the run's test-time augmentation.
    train(train_data, out=tmp / "run", approach="features", model="efficientnet_lite0", img_size=SIZE,
          tta_views=1, quiet=True)
    export_onnx(tmp / "run")
    images = generate(tmp / "images", n=n_images, seed=1, difficulty="easy", size=256, progress=False)
    return tmp / "run", expand_inputs([images / "damaged", images / "intact"])  # not masks/, preview.png


def timed(pred: Any, paths: list[Path], batch_size: int, workers: int) -> dict[str, float]:
    """Consume ``run_predictions`` as ``predict`` does; wall, first-row and steady rates."""
    from inspectnet.predict.stream import run_predictions

    t0 = time.perf_counter()
    first = None
    n = 0
    for row in run_predictions(pred, paths, batch_size=batch_size, workers=workers):
        assert row["error"] is None, row
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert n == len(paths) and first is not None
    return {"seconds": end - t0, "img_s": n / (end - t0), "first_row_s": first - t0}


def measure(run: Path, paths: list[Path], rounds: int, batch_size: int,
            small: int) -> tuple[list[dict[str, Any]], float]:
    import ray

    from inspectnet.cli import _predictor
    from inspectnet.predict.ray_engine import RayStation

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t
    configs = {"local station (--engine onnx)": lambda: (_predictor(run, "onnx", "cpu"), 2),
               "ray, 1 worker": lambda: (RayStation(run, workers=1), 1),
               "ray, 2 workers": lambda: (RayStation(run, workers=2), 2)}
    best: dict[str, dict[str, Any]] = {}
    try:
        for r in range(rounds):
            for name, build in configs.items():
                pred, workers = build()
                m = timed(pred, paths, batch_size, workers)
                short = timed(pred, paths[:small], batch_size, workers)["seconds"]
                m["marginal_img_s"] = (len(paths) - small) / max(m["seconds"] - short, 1e-9)
                print(f"round {r + 1}: {name:<32} {m['img_s']:6.1f} img/s over {m['seconds']:.1f} s "
                      f"(first row {m['first_row_s']:.1f} s, marginal {m['marginal_img_s']:.1f} img/s), "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
                if name not in best or m["img_s"] > best[name]["img_s"]:
                    best[name] = {"engine": name, "workers": workers, **m}
    finally:
        ray.shutdown()
    base = best["local station (--engine onnx)"]["img_s"]
    one = best["ray, 1 worker"]["img_s"]
    one_m = best["ray, 1 worker"]["marginal_img_s"]
    rows = [{**b, "x_local": b["img_s"] / base, "x_1_worker": b["img_s"] / one,
             "marginal_x_1_worker": b["marginal_img_s"] / one_m} for b in best.values()]
    return rows, ray_start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--small", type=int, default=64, help="images of the short run that measures start-up")
    ap.add_argument("--quick", action="store_true", help="200 images, one round")
    args = ap.parse_args()
    if args.quick:
        args.images, args.rounds = 200, 1
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run, paths = make_run(Path(tmp), args.images)
        rows, ray_start = measure(run, paths, args.rounds, args.batch_size, args.small)
    cols = ["engine", "workers", "img_s", "marginal_img_s", "first_row_s", "seconds", "x_local", "x_1_worker",
            "marginal_x_1_worker"]
    print_table(rows, cols,
                title=f"predict on {len(paths)} PNGs, efficientnet_lite0 {SIZE} px, 1 view, 2-CPU Ray")
    print(f"\nRay start-up (ray.init, once): {ray_start:.1f} s")
    path = write_results("ray_scaling", rows, {
        "images": len(paths), "rounds": args.rounds, "batch_size": args.batch_size, "small": args.small,
        "ray_init_s": ray_start,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "ray": __import__("ray").__version__})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
