"""Accuracy of each approach with its defaults, mean ± std over seeds, on data that
resembles inspection photos: the synthetic set at ``--difficulty hard``, balanced and
imbalanced (1 damaged : 4 intact), colour and grayscale.

    .venv/bin/python bench/accuracy.py                 # 3 seeds, 600 images, 4 data sets
    .venv/bin/python bench/accuracy.py --quick         # 1 seed, 300 images, 2 data sets

Numbers are test-split numbers; every choice inside a run (best epoch, head L2,
threshold) is made on its validation split. Synthetic data is for iteration: a recipe
is kept only if it also makes sense for real photos (see the closing notes of issue 4).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

APPROACHES = (("scratch", "seed-cnn", {"img_size": 128, "epochs": 40}),
              ("features", "efficientnet_lite0", {"img_size": 224, "tta_views": 8}),
              ("finetune", "efficientnet_lite0", {"img_size": 224, "epochs": 5, "tta_views": 8}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--approaches", nargs="+", default=[a[0] for a in APPROACHES])
    ap.add_argument("--sets", nargs="+", default=None, help="data sets to run (default: all of the mode)")
    ap.add_argument("--name", default="accuracy", help="results file bench/results/NAME.json")
    args = ap.parse_args()
    n = args.n or (300 if args.quick else 600)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    sets = [("hard", 0.5, False), ("hard-imbalanced", 0.2, False)]
    if not args.quick:
        sets += [("hard-gray", 0.5, True), ("hard-gray-imbalanced", 0.2, True)]
    if args.sets:
        known = {s[0]: s for s in sets + [("hard-gray", 0.5, True), ("hard-gray-imbalanced", 0.2, True)]}
        sets = [known[name] for name in args.sets]

    from inspectnet.synth import generate
    from inspectnet.train.run import train

    tmp = Path(tempfile.mkdtemp(prefix="inspectnet-acc-"))
    rows = []
    for name, frac, gray in sets:
        for approach, model, kw in APPROACHES:
            if approach not in args.approaches:
                continue
            per_seed = []
            for seed in seeds:
                data = tmp / f"{name}-{seed}"
                if not data.exists():
                    generate(data, n=n, seed=100 + seed, difficulty="hard", damaged_fraction=frac, grayscale=gray,
                             progress=False)
                t = time.perf_counter()
                res = train(data, out=tmp / "runs" / f"{name}-{approach}-{seed}", approach=approach, model=model,
                            seed=seed, quiet=True, **kw)
                m = res.metrics
                per_seed.append({"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                                 "f1_positive": m["f1_positive"], "seconds": time.perf_counter() - t,
                                 # finetune ended on the features approach's model (validation chose it)
                                 "kept_features": approach == "finetune" and res.card.pool != "avg"})
            row = {"data": name, "n": n, "approach": approach, "model": model, "seeds": len(seeds)}
            if approach == "finetune":
                row["kept_features"] = sum(p["kept_features"] for p in per_seed)
            for k in ("accuracy", "balanced_accuracy", "f1_positive", "seconds"):
                vals = [p[k] for p in per_seed]
                row[k] = round(statistics.mean(vals), 4)
                row[f"{k}_std"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
            rows.append(row)
            print_table([row], list(row))
    print_table(rows, ["data", "approach", "model", "seeds", "accuracy", "accuracy_std", "balanced_accuracy",
                       "balanced_accuracy_std", "f1_positive", "f1_positive_std", "seconds", "kept_features"],
                "accuracy of the defaults (test split, mean ± std over seeds)")
    print(f"written: {write_results(args.name, rows, {'n': n, 'seeds': seeds})}")


if __name__ == "__main__":
    main()
