"""fp32 against int8 on trained runs: accuracy, agreement and images/s (#17 item 4).

``infer_speed.py`` times int8 on random weights (speed only). Here a trained run goes through
``inspectnet export RUN --format onnx --int8`` itself, whose parity report compares the two
graphs on the run's test split with the run's own decision rule and views. Each run is copied
first (the export writes into the run's model folder) and the export's refusal is recorded,
not raised.

Runs:
- ``synthetic``: a features run (Lite0, 224 px, defaults) on 400 synthetic inserts, trained here;
- ``real``: the end-to-end features run of split 0 of ``bench/real_accuracy.py --tier e2e``
  (real photos, 288 px, 8 views), when that bench has run on this machine.

Usage: ``python bench/int8_parity.py [--skip-real]``; prints a table and writes
``bench/results/int8_parity.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import print_table, write_results  # noqa: E402

REAL_RUN = HERE / ".realdev" / "runs" / "features-binary-0"


def parity(name: str, run: Path, tmp: Path) -> dict:
    from inspectnet.errors import ModelError
    from inspectnet.quantize import REPORT_FILE, export_int8

    copy = tmp / f"run-{len(list(tmp.glob('run-*')))}"
    shutil.copytree(run, copy)
    t = time.perf_counter()
    try:
        export_int8(copy)
        verdict = "adopted"
    except ModelError as e:
        verdict = f"refused: {e}"
    rep = json.loads((copy / "model" / REPORT_FILE).read_text())
    return {"run": name, "test_images": rep["n"], "acc_fp32": rep["accuracy_fp32"], "acc_int8": rep["accuracy_int8"],
            "drop_points": 100 * rep["accuracy_drop"], "agreement": rep["agreement"],
            "img_s_fp32": rep["images_per_s_fp32"], "img_s_int8": rep["images_per_s_int8"],
            "speedup": rep["speedup"], "export": verdict.split(";")[0], "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-real", action="store_true", help="only the synthetic run")
    args = ap.parse_args()
    from inspectnet.synth import generate
    from inspectnet.train.run import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", n=400, seed=0, progress=False)
        train(tmp / "data", out=tmp / "syn-run", approach="features", model="efficientnet_lite0", img_size=224,
              quiet=True)
        rows.append(parity("synthetic (Lite0 224, features)", tmp / "syn-run", tmp))
        print(rows[-1], flush=True)
        if not args.skip_real and (REAL_RUN / "model" / "model.json").is_file():
            rows.append(parity("real photos (Lite0 288 x8, features, split 0)", REAL_RUN, tmp))
            print(rows[-1], flush=True)
    print_table(rows, ["run", "test_images", "acc_fp32", "acc_int8", "drop_points", "agreement", "img_s_fp32",
                       "img_s_int8", "speedup", "export"], "fp32 vs int8 (export --int8's own parity report)")
    write_results("int8_parity", rows, {"command": "bench/int8_parity.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
