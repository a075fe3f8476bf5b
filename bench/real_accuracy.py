"""Accuracy on real photos: the 1,970 development images of the ELPV solar-cell set.

Real electroluminescence photos (300 px grayscale) graded by experts: defect probability
0, 1/3, 2/3 or 1. Binary labels (>= 0.5 is defective, 2.2:1) and the four grades (the
middle two rare). Only the indices in ``bench/realdev_indices.json`` are ever kept: the
package's other 654 images are the held-out test of our own checks and never loaded here
beyond the package's own loader.

Protocol (the same for every recipe, paired): ``--splits`` repeated stratified splits
(seed i: 25% test, 10% of the rest as validation), stratified on the grade so that the
binary and the grade task share them. Each recipe makes every choice on train/validation
(or cross-validation inside train+val) and is scored once on the test part. The table gives
mean ± std over splits and the paired difference to the baseline with its standard error;
a difference counts when it exceeds twice its standard error.

Two tiers:
- ``heads``: frozen features extracted once per (backbone, size, views) and cached in
  ``bench/.realdev/features/``; recipes are heads on them (seconds per split).
- ``e2e``: ``inspectnet.train`` end to end on each split, as a user runs it.

The baseline (inside this file, fixed): frozen Lite0 features at 224 px, average pooled,
one view, standardised, scikit-learn ``LogisticRegressionCV`` (C by 5-fold CV on train+val).

    pip install -e '.[bench]'                             # elpv-dataset, bench only
    .venv/bin/python bench/real_accuracy.py --tier heads   # feature-level recipes
    .venv/bin/python bench/real_accuracy.py --tier e2e --recipes features auto
    .venv/bin/python bench/real_accuracy.py --quick        # 2 splits, heads tier only
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import warnings

import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import print_table, write_results  # noqa: E402

ROOT = HERE / ".realdev"
STORE: Path | None = None  # where run_heads caches its results (default ROOT/heads.json)
INDICES = HERE / "realdev_indices.json"  # a copy of shared/realdev/dev_indices.json
GRADES = ("p0", "p33", "p67", "p100")


# ------------------------------------------------------------------ the data set --------
def export(out: Path = ROOT) -> Path:
    """Write the development images and a manifest (``path,label,grade,type,proba``)."""
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        sys.exit("pip install -e '.[bench]'   (elpv-dataset: bench only, it ships the images)")
    from PIL import Image

    keep = json.loads(INDICES.read_text())["dev"]
    images, proba, types = load_dataset()
    (out / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in keep:
        rel = f"img/cell{i:04d}.png"
        if not (out / rel).exists():
            Image.fromarray(images[i]).save(out / rel)
        p = float(proba[i])
        rows.append([rel, "defective" if p >= 0.5 else "functional", GRADES[int(round(3 * p))], str(types[i]), p])
    del images
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "grade", "type", "proba"])
        w.writerows(rows)
    return manifest


@dataclass
class RealSet:
    paths: list[Path]
    binary: np.ndarray  # 0 defective, 1 functional (sorted class names, as inspectnet orders them)
    grade: np.ndarray  # 0..3
    certain: np.ndarray  # bool: the experts' probability is 0 or 1

    @classmethod
    def load(cls, manifest: Path) -> RealSet:
        rows = list(csv.DictReader(open(manifest)))
        return cls([manifest.parent / r["path"] for r in rows],
                   np.array([0 if r["label"] == "defective" else 1 for r in rows]),
                   np.array([GRADES.index(r["grade"]) for r in rows]),
                   np.array([float(r["proba"]) in (0.0, 1.0) for r in rows]))


def splits(ds: RealSet, n: int, seed0: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` repeated stratified splits: 25% test, 10% of the rest as validation."""
    from sklearn.model_selection import StratifiedShuffleSplit

    out = []
    for i in range(n):
        idx = np.arange(len(ds.paths))
        rest, test = next(StratifiedShuffleSplit(1, test_size=0.25, random_state=seed0 + i).split(idx, ds.grade))
        tr, va = next(StratifiedShuffleSplit(1, test_size=0.10, random_state=seed0 + i).split(rest, ds.grade[rest]))
        out.append({"train": rest[tr], "val": rest[va], "test": test})
    return out


# ------------------------------------------------------------------ frozen features ------
def features(ds: RealSet, backbone: str, size: int, views: int = 8) -> np.ndarray:
    """``(N, 8, C)`` catavgmax-mid pooled features of the frozen ImageNet backbone over the 8
    flip/rot90 views (the first is the image itself: ``[:, :v]`` are the first ``v`` views), cached."""
    path = ROOT / "features" / f"{backbone}-{size}-v{views}.npy"
    if path.is_file():
        return np.load(path)
    import torch

    from inspectnet.data.cache import build_cache
    from inspectnet.data.sources import Sample
    from inspectnet.models import create_model
    from inspectnet.train.heads import extract_features

    t = time.perf_counter()
    samples = [Sample(p, "x", "train") for p in ds.paths]
    cache, _ = build_cache(samples, ["x"], size, progress=False)
    net = create_model(backbone, 2, pretrained=True, img_size=size, pool="catavgmax-mid").eval()
    net = net.to(memory_format=torch.channels_last)
    f = extract_features(net, cache["train"].images, views=views, desc=f"{backbone} {size}px x{views}",
                         keep_views=True).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, f)
    print(f"  extracted {backbone} {size}px x{views}: {f.shape} in {time.perf_counter() - t:.0f} s", flush=True)
    return f


def pool_columns(f: np.ndarray, pool: str, last: int) -> np.ndarray:
    """Slice catavgmax-mid features (``[avg(last+mid), max(last+mid)]``) to another pool."""
    half = f.shape[-1] // 2
    if pool == "avg":
        return f[..., :last]
    if pool == "catavgmax":
        return np.concatenate([f[..., :last], f[..., half:half + last]], -1)
    return f


# ------------------------------------------------------------------ scoring -------------
def scores(probs: np.ndarray, y: np.ndarray, certain: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return {"acc": float((pred == y).mean()), "bal": float(np.mean(recalls)),
            "acc_certain": float((pred[certain] == y[certain]).mean())}


def baseline_head(f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray) -> np.ndarray:
    """The fixed peer: standardised features, LogisticRegressionCV (5-fold), view-averaged input."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000))
    clf.fit(f_tr.mean(1), y_tr)
    return clf.predict_proba(f_te.mean(1))


def inspectnet_val_head(f_tr, y_tr, f_va, y_va, f_te, n_classes, weighted=False):  # noqa: ANN001, ANN201
    """inspectnet's features head as of 4e6e9c4: every view a sample, L2 chosen on validation."""
    import torch

    from inspectnet.train.heads import train_linear_head
    from inspectnet.train.loop import class_weights_for

    cw = class_weights_for("auto" if weighted else "off", np.bincount(y_tr, minlength=n_classes).tolist())
    ft, fv = torch.from_numpy(f_tr), torch.from_numpy(f_va)
    head, _ = train_linear_head(ft.flatten(0, 1), torch.from_numpy(y_tr).repeat_interleave(ft.shape[1]),
                                fv.mean(1), torch.from_numpy(y_va), n_classes, cw)
    with torch.no_grad():
        return head(torch.from_numpy(f_te)).softmax(-1).mean(1).numpy()


def inspectnet_cv_head(f_tr, y_tr, f_va, y_va, f_te, n_classes, weighted=False):  # noqa: ANN001, ANN201
    """The CV head: L2 by k-fold CV on train+val, refit on all of it."""
    import torch

    from inspectnet.train.heads import fit_head_cv
    from inspectnet.train.loop import class_weights_for

    f = torch.from_numpy(np.concatenate([f_tr, f_va]))
    y = torch.from_numpy(np.concatenate([y_tr, y_va]))
    cw = class_weights_for("auto" if weighted else "off", np.bincount(y.numpy(), minlength=n_classes).tolist())
    head, _ = fit_head_cv(f, y, n_classes, cw)
    with torch.no_grad():
        return head(torch.from_numpy(f_te)).softmax(-1).mean(1).numpy()


@dataclass
class HeadRecipe:
    name: str
    backbone: str  # "a+b" concatenates two backbones' features
    size: int
    views: int  # views at extraction: every one a training sample, averaged at test
    pool: str
    head: Callable[..., np.ndarray]
    weighted: bool = False


def _feats(ds: RealSet, r: HeadRecipe) -> np.ndarray:
    parts = []
    for bb in r.backbone.split("+"):
        f = features(ds, bb, r.size)[:, : r.views]
        parts.append(pool_columns(f, r.pool, LAST_CHANNELS[bb]))
    return np.concatenate(parts, -1).astype(np.float32)


LAST_CHANNELS = {"efficientnet_lite0": 1280, "efficientnet_lite1": 1280, "efficientnet_lite2": 1280}


def run_heads(ds: RealSet, recipes: list[HeadRecipe], parts: list[dict[str, np.ndarray]],
              tasks: tuple[str, ...] = ("binary", "grades")) -> list[dict[str, Any]]:
    """Each recipe on every split and both tasks; results cached in ``.realdev/heads.json`` by
    recipe, task and number of splits (a head is deterministic: same features, same numbers)."""
    store = ROOT / "heads.json" if STORE is None else STORE
    done = json.loads(store.read_text()) if store.is_file() else {}
    rows = []
    for r in recipes:
        f = None
        for task, y in (("binary", ds.binary), ("grades", ds.grade)):
            if task not in tasks:
                continue
            key = f"{r.name}|{task}|{len(parts)}"
            if key in done:
                rows.append(done[key])
                continue
            f = _feats(ds, r) if f is None else f
            per = []
            t = time.perf_counter()
            for sp in parts:
                tr, va, te = sp["train"], sp["val"], sp["test"]
                if r.head is baseline_head:
                    p = baseline_head(f[np.concatenate([tr, va])], y[np.concatenate([tr, va])], f[te])
                else:
                    p = r.head(f[tr], y[tr], f[va], y[va], f[te], int(y.max()) + 1, weighted=r.weighted)
                per.append(scores(p, y[te], ds.certain[te]))
            rows.append({"recipe": r.name, "task": task, "per_split": per,
                         "head_seconds": round((time.perf_counter() - t) / len(parts), 1)})
            done[key] = rows[-1]
            store.write_text(json.dumps(done, indent=1))
            print(f"  {r.name:<34} {task:<6} acc {np.mean([s['acc'] for s in per]):.4f}", flush=True)
    return rows


HEADS = [
    HeadRecipe("baseline: lite0 224 avg x1 LRCV", "efficientnet_lite0", 224, 1, "avg", baseline_head),
    # inspectnet's features head as of 4e6e9c4 (its defaults: one view, class weights auto).
    HeadRecipe("inspectnet@4e6e9c4 features head", "efficientnet_lite0", 224, 1, "catavgmax-mid",
               inspectnet_val_head, weighted=True),
    HeadRecipe("CV head, lite0 224 mid x8", "efficientnet_lite0", 224, 8, "catavgmax-mid", inspectnet_cv_head),
    HeadRecipe("CV head, lite0 224 mid x1", "efficientnet_lite0", 224, 1, "catavgmax-mid", inspectnet_cv_head),
    HeadRecipe("CV head, lite0 224 mid x8 weighted", "efficientnet_lite0", 224, 8, "catavgmax-mid",
               inspectnet_cv_head, weighted=True),
    HeadRecipe("CV head, lite0 224 avg x8", "efficientnet_lite0", 224, 8, "avg", inspectnet_cv_head),
    HeadRecipe("CV head, lite0 288 mid x8", "efficientnet_lite0", 288, 8, "catavgmax-mid", inspectnet_cv_head),
    HeadRecipe("CV head, lite2 288 mid x8", "efficientnet_lite2", 288, 8, "catavgmax-mid", inspectnet_cv_head),
    HeadRecipe("CV head, lite0+lite2 288 mid x8", "efficientnet_lite0+efficientnet_lite2", 288, 8,
               "catavgmax-mid", inspectnet_cv_head),
]


# ------------------------------------------------------------------ end to end ----------
def run_e2e(ds: RealSet, names: list[str], parts: list[dict[str, np.ndarray]], tasks: list[str]
            ) -> list[dict[str, Any]]:
    from inspectnet.train.run import train

    rows = []
    manifest = ROOT / "manifest.csv"
    base = list(csv.DictReader(open(manifest)))
    store = ROOT / "heads.json" if STORE is None else STORE
    for name in names:
        for task in tasks:
            per, secs = [], []
            recipe = f"inspectnet train --approach {name}"
            for i, sp in enumerate(parts):
                # Each finished split is cached at once (key recipe|task|split i): an end-to-end
                # run takes minutes, and an interrupted bench resumes where it stopped.
                done = json.loads(store.read_text()) if store.is_file() else {}
                key = f"{recipe}|{task}|split {i}"
                if key in done:
                    per.append(done[key]["scores"])
                    secs.append(done[key]["seconds"])
                    continue
                split = np.empty(len(base), dtype=object)
                for k in ("train", "val", "test"):
                    split[sp[k]] = k
                m = ROOT / f"split-{task}-{i}.csv"
                with open(m, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(["path", "label", "split"])
                    w.writerows([[r["path"], r["label"] if task == "binary" else r["grade"], split[j]]
                                 for j, r in enumerate(base)])
                t = time.perf_counter()
                res = train(m, out=ROOT / "runs" / f"{name}-{task}-{i}", approach=name, quiet=True, overwrite=True)
                secs.append(time.perf_counter() - t)
                # The run's test cache follows the manifest's order of the test rows, which is
                # index order; StratifiedShuffleSplit hands out the test indices shuffled.
                te = np.sort(sp["test"])
                y = (ds.binary if task == "binary" else ds.grade)[te]
                per.append(scores(res.probs["test"], y, ds.certain[te]))
                print(f"  {name} {task} split {i}: acc {per[-1]['acc']:.4f} ({secs[-1]:.0f} s)", flush=True)
                done = json.loads(store.read_text()) if store.is_file() else {}
                done[key] = {"scores": per[-1], "seconds": round(secs[-1], 1)}
                store.write_text(json.dumps(done, indent=1))
            rows.append({"recipe": recipe, "task": task, "per_split": per, "seconds": round(statistics.mean(secs), 1)})
            if len(parts) > 1:
                done = json.loads(store.read_text())
                done[f"{recipe}|{task}|{len(parts)}"] = rows[-1]
                store.write_text(json.dumps(done, indent=1))
    return rows


# ------------------------------------------------------------------ anomaly (#16) -------
def run_anomaly(ds: RealSet, parts: list[dict[str, np.ndarray]], img_size: int | None = None
                ) -> list[dict[str, Any]]:
    """``--approach anomaly`` on each split: the bank from the *functional* training images
    only (the defective ones of train are left out), validation as it is (it sets the
    decision), test as it is; image AUROC of the defective class on test."""
    from sklearn.metrics import roc_auc_score

    from inspectnet.train.run import train

    base = list(csv.DictReader(open(ROOT / "manifest.csv")))
    per, secs = [], []
    for i, sp in enumerate(parts):
        split = np.empty(len(base), dtype=object)
        for k in ("train", "val", "test"):
            split[sp[k]] = k
        keep = [j for j, r in enumerate(base) if not (split[j] == "train" and r["label"] == "defective")]
        m = ROOT / f"split-anomaly-{i}.csv"
        with open(m, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split"])
            w.writerows([[base[j]["path"], base[j]["label"], split[j]] for j in keep])
        t = time.perf_counter()
        extra = {"img_size": img_size} if img_size else {}
        res = train(m, out=ROOT / "runs" / f"anomaly-{img_size or 'default'}-{i}", approach="anomaly", quiet=True,
                    overwrite=True, **extra)
        secs.append(time.perf_counter() - t)
        te = np.sort(sp["test"])  # the run's test rows come in manifest (index) order
        y = ds.binary[te]  # 0 = defective, the positive class
        p_def = res.probs["test"][:, 0]
        s = scores(res.probs["test"], y, ds.certain[te])
        s["auroc"] = float(roc_auc_score(y == 0, p_def))
        per.append(s)
        print(f"  anomaly split {i}: AUROC {s['auroc']:.4f}, acc {s['acc']:.4f} ({secs[-1]:.0f} s, "
              f"{int((split == 'train').sum() - (len(base) - len(keep)))} functional training images)", flush=True)
    return [{"recipe": f"inspectnet train --approach anomaly{f' --img-size {img_size}' if img_size else ''}",
             "task": "binary", "per_split": per, "seconds": round(statistics.mean(secs), 1),
             "auroc": f"{statistics.mean(p['auroc'] for p in per):.4f} ± {statistics.stdev(p['auroc'] for p in per):.4f}"}]


# ------------------------------------------------------------------ the table -----------
def summarise(rows: list[dict[str, Any]], baseline: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        acc = [s["acc"] for s in r["per_split"]]
        base = [s["acc"] for s in baseline[r["task"]]][: len(acc)]
        d = [a - b for a, b in zip(acc, base)]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        out.append({
            "task": r["task"], "recipe": r["recipe"],
            "accuracy": f"{statistics.mean(acc):.4f} ± {statistics.stdev(acc) if len(acc) > 1 else 0:.4f}",
            "bal_acc": round(statistics.mean(s["bal"] for s in r["per_split"]), 4),
            "acc_certain": round(statistics.mean(s["acc_certain"] for s in r["per_split"]), 4),
            "vs_baseline": f"{statistics.mean(d):+.4f} ± {se:.4f}",
            "counts": bool(len(d) > 1 and abs(statistics.mean(d)) > 2 * se),
            "seconds": r.get("seconds", r.get("head_seconds")),
        })
    return out


def report(n: int, name: str) -> None:
    """The table of every cached heads result over ``n`` splits, without running anything."""
    store = STORE or ROOT / "heads.json"
    done = json.loads(store.read_text())
    rows = [v for k, v in done.items() if k.endswith(f"|{n}")]
    baseline = {r["task"]: r["per_split"] for r in rows if r["recipe"] == HEADS[0].name}
    table = summarise(rows, baseline)
    print_table(table, ["task", "recipe", "accuracy", "bal_acc", "acc_certain", "vs_baseline", "counts", "seconds"],
                f"real development set, {n} splits (accuracy mean ± std; paired difference ± SE)")
    write_results(name, table, {"splits": n, "raw": rows, "command": f"bench/real_accuracy.py --report (cache {store})"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", choices=("heads", "e2e", "both", "anomaly"), default="heads")
    ap.add_argument("--img-size", type=int, default=None, help="anomaly tier: input size (default: the approach's)")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 splits, heads tier")
    ap.add_argument("--recipes", nargs="+", default=None, help="heads: name prefixes; e2e: approach names")
    ap.add_argument("--e2e-splits", type=int, default=None, help="end-to-end runs on the first N splits only")
    ap.add_argument("--tasks", nargs="+", default=["binary", "grades"])
    ap.add_argument("--store", default=None, help="heads cache file (default bench/.realdev/heads.json)")
    ap.add_argument("--report", action="store_true", help="no new runs: the table of every cached heads result")
    ap.add_argument("--name", default="real_accuracy")
    args = ap.parse_args()
    n = 2 if args.quick else args.splits
    global STORE
    if args.store:
        STORE = Path(args.store)
    if args.report:
        return report(n, args.name)
    ds = RealSet.load(export())
    parts = splits(ds, n)
    print(f"{len(ds.paths)} development images; {n} splits of {[len(parts[0][k]) for k in ('train', 'val', 'test')]}")
    if args.tier == "anomaly":  # image AUROC of the bank of functional cells; no baseline head needed
        rows = run_anomaly(ds, parts, args.img_size)
        print_table(rows, ["task", "recipe", "auroc", "seconds"], f"anomaly on the real development set, {n} splits")
        return write_results(args.name, rows, {"splits": n, "command": "bench/real_accuracy.py " + " ".join(sys.argv[1:])})
    rows = run_heads(ds, HEADS[:1], parts)  # the baseline, always: the paired differences need it
    baseline = {r["task"]: r["per_split"] for r in rows}
    if args.tier in ("heads", "both"):
        chosen = [h for h in HEADS[1:] if not args.recipes or any(h.name.startswith(p) for p in args.recipes)]
        rows += run_heads(ds, chosen, parts, tuple(args.tasks))
    if args.tier in ("e2e", "both") and not args.quick:
        rows += run_e2e(ds, args.recipes or ["features"], parts[: args.e2e_splits or n], args.tasks)
    table = summarise(rows, baseline)
    print_table(table, ["task", "recipe", "accuracy", "bal_acc", "acc_certain", "vs_baseline", "counts", "seconds"],
                f"real development set, {n} splits (accuracy mean ± std; paired difference ± SE)")
    write_results(args.name, table, {"splits": n, "raw": rows,
                                     "command": "bench/real_accuracy.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
