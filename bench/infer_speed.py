"""Inference speed at 224 px: torch eager vs channels-last vs ONNX Runtime, against the
arithmetic limit of this machine measured in the same run.

For seed-cnn and efficientnet_lite0 (random weights: speed does not depend on them):

- batch-1 latency (median of repeated single-image calls) and batch-32 throughput;
- FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2);
- the limit: a large fp32 matmul's GFLOP/s measured now, divided by FLOPs per image, is the
  images/s a perfect engine could reach here; "% of limit" says how close each engine gets;
- the end-to-end predict path on PNG files: decode + resize + ONNX Runtime, as
  ``inspectnet predict`` runs it.

Usage: ``python bench/infer_speed.py [--quick]``; prints a table and writes
``bench/results/infer_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

SIZE = 224
MODELS = ("seed-cnn", "efficientnet_lite0")


def matmul_gflops(sizes: tuple[int, ...] = (1024, 2048), reps: int = 8) -> float:
    """fp32 GFLOP/s of large square matmuls (best of sizes and repetitions) with torch's
    threads: the machine's practical peak, measured now because a shared VM's varies."""
    best_rate = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best_rate = max(best_rate, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best_rate


def flops_per_image(net: torch.nn.Module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.rand(1, 3, SIZE, SIZE))
    return float(fc.get_total_flops())


def timeit(fn, reps: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def make_run(name: str, root: Path) -> Path:
    """A run folder with random weights, exported to ONNX, through the library's own path."""
    from inspectnet.bundle import ModelCard, save_bundle
    from inspectnet.export import export_onnx
    from inspectnet.models import create_model

    net = create_model(name, 2, pretrained=False, img_size=SIZE).eval()
    card = ModelCard(architecture=name, classes=["damaged", "intact"], positive_class="damaged", img_size=SIZE,
                     mean=net.mean.flatten().tolist(), std=net.std.flatten().tolist())
    run = root / name
    save_bundle(run, net, card)
    export_onnx(run)
    return run


def write_pngs(root: Path, n: int, size: int = 512) -> list[Path]:
    """Photo-like PNGs (smooth part on a noisy tray), larger than the model input so that
    the resize is part of the measured path."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for i in range(n):
        img = rng.normal(60, 8, (size, size, 3))
        r = size * (0.28 + 0.05 * rng.random())
        part = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2
        img[part] = 150 + 30 * np.sin(xx[part] / 17.0)[:, None]
        p = root / f"img_{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def predict_path_rows(name: str, run: Path, png: Path, threads: int, flops: float, limit: float,
                      rows: list[dict]) -> list[dict]:
    """The whole predict path (512 px PNG -> decode + resize -> ORT, batch 32) as ``predict``
    runs it (the station, one decode-then-infer lane per core) and as it ran before (decoding
    on 2 threads ahead of one engine with all threads), each as a share of the fp32 engine's
    own batch-32 images/s measured just before in this run (#17 item 5)."""
    from inspectnet.data.pixels import decode_resized_pil
    from inspectnet.predict import expand_inputs
    from inspectnet.station import Station

    engine = next(r["batch32_img_s"] for r in rows if r["model"] == name and r["engine"] == "onnxruntime")
    paths = expand_inputs([png])
    t = time.perf_counter()
    for p in paths:
        decode_resized_pil(p, SIZE)
    decode_ips = len(paths) / (time.perf_counter() - t)
    out = []
    for label, st in (("predict path: station, lanes (predict's)", Station(run, lanes=threads, spin=False)),
                      ("predict path: decode ahead of one engine", Station(run))):
        list(st.predict_paths(paths[:32], batch_size=32))  # warm the page cache and ORT
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            n = sum(1 for _ in st.predict_paths(paths, batch_size=32))
            best = max(best, n / (time.perf_counter() - t))
        out.append({"model": name, "engine": label, "batch1_ms": None, "batch32_img_s": best,
                    "gflop_per_img": flops / 1e9, "limit_img_s": limit, "pct_of_limit": 100 * best / limit,
                    "pct_of_engine": 100 * best / engine, "decode_resize_img_s_1thread": decode_ips})
        print(f"{name:<20} {label}: {best:.1f} img/s = {100 * best / engine:.0f}% of the engine "
              f"(decode+resize alone, 1 thread: {decode_ips:.0f} img/s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps1, reps32 = (10, 2) if args.quick else (30, 4)
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    from inspectnet.bundle import load_model
    from inspectnet.predict import OnnxPredictor

    load_start = os.getloadavg()
    peak = matmul_gflops()
    print(f"fp32 matmul peak with {threads} threads: {peak:.1f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pngs = write_pngs(tmp / "png", 64)
        for name in MODELS:
            run = make_run(name, tmp)
            net = load_model(run).network.eval()
            flops = flops_per_image(net)
            limit = peak * 1e9 / flops
            ort = OnnxPredictor(run, threads=threads)
            # int8 (#17): the same graph quantized as `export --int8` does (calibrated here on
            # random images: this row measures speed; accuracy is the export's parity report).
            from inspectnet.quantize import quantize_onnx

            quantize_onnx(run / "model" / "model.onnx", run / "model" / "model.int8.onnx",
                          [np.random.default_rng(i).random((16, 3, SIZE, SIZE), dtype=np.float32) for i in range(4)])
            ort8 = OnnxPredictor(run, threads=threads, file="model.int8.onnx")
            x1, x32 = torch.rand(1, 3, SIZE, SIZE), torch.rand(32, 3, SIZE, SIZE)
            cl = load_model(run).network.eval().to(memory_format=torch.channels_last)
            x1c, x32c = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x32))
            engines = {
                "torch eager": (lambda: net(x1), lambda: net(x32)),
                "torch channels-last": (lambda: cl(x1c), lambda: cl(x32c)),
                "onnxruntime": (lambda: ort.logits(x1.numpy()), lambda: ort.logits(x32.numpy())),
                "onnxruntime int8 (QDQ)": (lambda: ort8.logits(x1.numpy()), lambda: ort8.logits(x32.numpy())),
            }
            for engine, (f1, f32) in engines.items():
                with torch.inference_mode():
                    lat = timeit(f1, reps1)
                    thr = timeit(f32, reps32, warmup=1)
                ips = 32 / statistics.median(thr)
                rows.append({"model": name, "engine": engine, "batch1_ms": statistics.median(lat) * 1e3,
                             "batch32_img_s": ips, "gflop_per_img": flops / 1e9, "limit_img_s": limit,
                             "pct_of_limit": 100 * ips / limit})
                print(f"{name:<20} {engine:<20} {rows[-1]['batch1_ms']:8.2f} ms  {ips:8.1f} img/s", flush=True)

            rows += predict_path_rows(name, run, tmp / "png", threads, flops, limit, rows)
    print_table(rows, ["model", "engine", "batch1_ms", "batch32_img_s", "gflop_per_img", "limit_img_s", "pct_of_limit",
                       "pct_of_engine"],
                title=f"inference at {SIZE} px, {threads} threads, matmul peak {peak:.1f} GFLOP/s")
    # Other processes on these cores skew every number here: record how busy the machine was.
    load = os.getloadavg()
    print(f"load average (1/5/15 min) at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {threads} cores")
    path = write_results("infer_speed", rows, {"matmul_gflops": peak, "img_size": SIZE, "threads": threads,
                                               "loadavg_start": load_start, "loadavg_end": load, "machine": machine()})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
