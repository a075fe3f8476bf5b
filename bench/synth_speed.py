"""Speed of the synthetic insert generator on one core.

Prints images/s at 256 px per difficulty, for rendering alone and for ``generate`` (render +
PNG writing + manifest + preview), per wall-clock second and per CPU second of this one
single-threaded process, and writes ``bench/results/synth_speed.json``.

Usage::

    PYTHONPATH=src python bench/synth_speed.py [--n 200] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TARGET = 50.0  # images/s required on one core at 256 px


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="images per measurement")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "synth_speed.json")
    args = ap.parse_args()
    from inspectnet.synth import generate, render_sample  # after the sys.path tweak above

    cv2.setNumThreads(1)  # one core, honestly
    render_sample(0, "damaged", size=args.size)  # warm caches
    rows = []
    for diff in ("easy", "medium", "hard"):
        # Wall time and CPU time of this (single-threaded) process: on a shared machine the
        # CPU-time rate is the honest "one core" figure; the wall rate is what a user sees.
        w, c = time.perf_counter(), time.process_time()
        for i in range(args.n):
            render_sample(i, ("intact", "damaged")[i % 2], seed=1, difficulty=diff, size=args.size)
        render = (args.n / (time.perf_counter() - w), args.n / (time.process_time() - c))
        with tempfile.TemporaryDirectory() as tmp:
            w, c = time.perf_counter(), time.process_time()
            generate(tmp, n=args.n, seed=1, difficulty=diff, size=args.size, progress=False)
            gen = (args.n / (time.perf_counter() - w), args.n / (time.process_time() - c))
        rows.append(
            {
                "difficulty": diff,
                "size": args.size,
                "n": args.n,
                "render_images_per_s": round(render[0], 1),
                "render_images_per_cpu_s": round(render[1], 1),
                "generate_images_per_s": round(gen[0], 1),
                "generate_images_per_cpu_s": round(gen[1], 1),
            }
        )
    head = ("difficulty", "size", "render img/s", "(per cpu-s)", "generate img/s", "(per cpu-s)")
    print("{:<10} {:>5} {:>13} {:>12} {:>15} {:>12}".format(*head))
    for r in rows:
        print(
            "{:<10} {:>5} {:>13.1f} {:>12.1f} {:>15.1f} {:>12.1f}".format(
                r["difficulty"],
                r["size"],
                r["render_images_per_s"],
                r["render_images_per_cpu_s"],
                r["generate_images_per_s"],
                r["generate_images_per_cpu_s"],
            )
        )
    ok = all(r["generate_images_per_cpu_s"] >= TARGET for r in rows)
    verdict = "met" if ok else "NOT met"
    print(f"target >= {TARGET:.0f} img/s on one core (generate incl. PNG writing): {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "synth_speed",
                "threads": 1,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "processor": platform.processor(),
                "target_images_per_s": TARGET,
                "target_met": ok,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
