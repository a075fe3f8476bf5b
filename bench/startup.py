"""Start-up cost of each command: import time and peak RSS, in fresh processes (#17 item 3).

For each command line, runs ``python -X importtime -m inspectnet ...`` in a new process
``--rounds`` times, each from its own small parent (so that ``ru_maxrss`` of the children is
that command's peak RSS); the first round is the coldest, the median of the rest is "warm".
Import time is the sum of ``-X importtime``'s top-level entries. Also which heavy modules each
command imported (torch, timm, lightning). The predict rows use a small features run exported
to ONNX, so that ``predict`` takes the torch-free station path.

Usage: ``python bench/startup.py [--rounds 3]``; prints a table and writes
``bench/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

HEAVY = ("torch", "timm", "lightning", "onnxruntime", "fastapi")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from inspectnet.export import export_onnx
    from inspectnet.synth import generate
    from inspectnet.train.run import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate(tmp / "data", n=40, size=96, seed=0, difficulty="easy", progress=False)
        run = tmp / "run"
        train(data, approach="features", img_size=96, cv_folds=0, tta_views=1, out=run, quiet=True)
        export_onnx(run)
        image = str(next((data / "damaged").glob("*.png")))
        commands = {
            "--help": ["--help"],
            "--version": ["--version"],
            "predict (ONNX run, 1 image)": ["predict", str(run), image, "-f", "json"],
            "predict --engine torch (1 image)": ["predict", str(run), image, "-f", "json", "--engine", "torch"],
            "train --help": ["train", "--help"],
        }
        for name, cmd in commands.items():
            # RSS per command needs its own parent: run each round from a fresh interpreter.
            per = []
            for _ in range(args.rounds):
                code = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
                        "p = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'inspectnet', *sys.argv[1:]], "
                        "capture_output=True, text=True); w = time.perf_counter() - t; "
                        "print(json.dumps({'rc': p.returncode, 'wall': w, "
                        "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 'err': p.stderr}))")
                out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, timeout=600)
                r = json.loads(out.stdout)
                if r["rc"] != 0:
                    raise RuntimeError(f"{name}: {r['err'][-400:]}")
                imp, heavy = 0, set()
                for line in r["err"].splitlines():
                    if line.startswith("import time:") and "|" in line:
                        _, cum, mod = line[len("import time:"):].split("|")
                        if cum.strip().isdigit() and not mod.startswith("  "):
                            imp += int(cum.strip())
                        if mod.strip().split(".")[0] in HEAVY:
                            heavy.add(mod.strip().split(".")[0])
                per.append({"wall": r["wall"], "import": imp / 1e6, "rss": r["rss"], "heavy": ",".join(sorted(heavy)) or "-"})
            warm = per[1:] or per
            rows.append({"command": f"inspectnet {name}", "cold_wall_s": per[0]["wall"],
                         "warm_wall_s": statistics.median(p["wall"] for p in warm),
                         "warm_import_s": statistics.median(p["import"] for p in warm),
                         "peak_rss_mb": max(p["rss"] for p in per), "heavy_modules": per[-1]["heavy"]})
            print(f"{rows[-1]['command']:<45} warm {rows[-1]['warm_wall_s']:.2f} s, imports "
                  f"{rows[-1]['warm_import_s']:.2f} s, {rows[-1]['peak_rss_mb']:.0f} MB, {rows[-1]['heavy_modules']}",
                  flush=True)
    print_table(rows, ["command", "cold_wall_s", "warm_wall_s", "warm_import_s", "peak_rss_mb", "heavy_modules"],
                title="start-up of each command (fresh processes)")
    load = os.getloadavg()
    path = write_results("startup", rows, {"rounds": args.rounds, "loadavg_end": load,
                                           "targets": "--help and predict on an ONNX run: <= 0.5 s of imports, <= 150 MB"})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
