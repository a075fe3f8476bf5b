"""How fast is ``inspectnet doctor``, and how much memory does it hold?

Generates N small PNGs (64-128 px, smooth random "parts" with noise) in a temp folder laid
out as train/val/test/<class>/, plants exact copies across splits, re-encoded near copies
and conflicting labels, runs ``diagnose`` in a fresh process (so that its peak RSS is its
own), checks the planted problems were found, and extrapolates to 100,000 images. The
pair search is also timed directly on 100,000 hashes, since it is the only part that is not
linear in N.

    python bench/doctor_speed.py               # 20,000 images
    python bench/doctor_speed.py --n 2000      # quick look

Writes bench/results/doctor_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
CLASSES = ("damaged", "intact")


def _render(args: tuple[str, int]) -> None:
    path, seed = args
    rng = np.random.default_rng(seed)
    size = int(rng.integers(64, 129))
    coarse = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    img += rng.normal(0, 4, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, compress_level=1)


def generate(root: Path, n: int, workers: int) -> tuple[dict[str, int], list[tuple[Path, Path]]]:
    """Write ``n`` images plus planted problems; returns how many of each, and the near-copy pairs."""
    jobs = []
    for i in range(n):
        split = SPLITS[0][0] if i % 20 < 14 else SPLITS[1][0] if i % 20 < 17 else SPLITS[2][0]
        cls = CLASSES[i % 2]
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        jobs.append((str(d / f"img_{i:06d}.png"), i))
    with Pool(workers) as pool:
        pool.map(_render, jobs, chunksize=64)
    rng = np.random.default_rng(1)
    train = [Path(p) for p, _ in jobs if "/train/" in p]
    picks = rng.choice(len(train), 3 * max(1, n // 1000), replace=False)
    k = len(picks) // 3
    planted = {"exact_leaks": 0, "near_leaks": 0, "conflicts": 0}
    near: list[tuple[Path, Path]] = []
    for j, idx in enumerate(picks):
        src = train[idx]
        cls = src.parent.name
        if j < k:  # byte copy into test: leakage
            shutil.copy(src, root / "test" / cls / f"leak_{j}.png")
            planted["exact_leaks"] += 1
        elif j < 2 * k:  # resized + JPEG copy into val: near-duplicate leakage
            im = Image.open(src)
            im.resize((im.width * 3 // 2, im.height * 3 // 2)).save(root / "val" / cls / f"near_{j}.jpg", quality=88)
            near.append((src, root / "val" / cls / f"near_{j}.jpg"))
            planted["near_leaks"] += 1
        else:  # the same file in the other class: a conflicting label
            other = CLASSES[1 - CLASSES.index(cls)]
            shutil.copy(src, root / "train" / other / f"conflict_{j}.png")
            planted["conflicts"] += 1
    return planted, near


def near_copy_distances(near: list[tuple[Path, Path]]) -> dict[str, list[int]]:
    """pHash distance and thumbnail difference of each planted near copy: the recall curve."""
    from inspectnet.data.doctor import hamming, inspect_file

    out: dict[str, list[int]] = {"phash_bits": [], "thumb_max_diff": []}
    for a, b in near:
        fa, fb = inspect_file(a), inspect_file(b)
        out["phash_bits"].append(hamming(fa.phash, fb.phash))
        ta, tb = (np.frombuffer(f.thumb, np.uint8).astype(np.int16) for f in (fa, fb))
        out["thumb_max_diff"].append(int(np.abs(ta - tb).max()))
    return out


def measure(root: str, threshold: int) -> dict:
    """Run in a fresh process: diagnose, and report time and this process's peak RSS."""
    from inspectnet.data.doctor import diagnose

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    rep = diagnose(root, near_threshold=threshold, progress=False)
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds, "n_files": rep.n_files,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss0 / 1024,
        "found": {
            "exact_leak_groups": sum("leakage" in g["kinds"] for g in rep.exact_duplicates),
            "near_leak_pairs": sum("leakage" in p["kinds"] for p in rep.near_duplicates),
            "conflict_groups": sum("conflicting_labels" in g["kinds"] for g in rep.exact_duplicates),
            "near_pairs_total": len(rep.near_duplicates),
        },
        "verdict": rep.verdict,
    }


def time_pair_search(n: int, threshold: int) -> float:
    """``near_pairs`` on ``n`` hashes, a third of them in tight clusters (look-alike parts)."""
    from inspectnet.data.doctor import near_pairs

    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, n, dtype=np.uint64) << np.uint64(1)
    centres = h[: n // 300]
    for i in range(n // 3):  # clusters of ~100 hashes within a few bits of a centre
        flips = rng.choice(64, int(rng.integers(0, 6)), replace=False)
        h[n - 1 - i] = centres[i % len(centres)] ^ np.uint64(sum(1 << int(b) for b in flips))
    t = time.perf_counter()
    near_pairs(h, threshold)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--threshold", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "doctor_speed.json")
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.threshold)))
        return

    with tempfile.TemporaryDirectory(prefix="doctor_bench_") as tmp:
        root = Path(tmp) / "data"
        t = time.perf_counter()
        planted, near = generate(root, a.n, a.workers)
        gen_s = time.perf_counter() - t
        print(f"generated {a.n} images + planted {planted} in {gen_s:.1f} s", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--measure", str(root), "--threshold", str(a.threshold)],
                              capture_output=True, text=True, check=True)
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        dists = near_copy_distances(near)
    pair_100k = time_pair_search(100_000, a.threshold)
    rate = m["n_files"] / m["seconds"]
    per_file_kb = max(m["peak_rss_mb"] - m["rss_before_mb"], 0) * 1024 / m["n_files"]
    result = {
        "n_images": m["n_files"], "threshold": a.threshold, "seconds": round(m["seconds"], 2),
        "images_per_s": round(rate, 1), "peak_rss_mb": round(m["peak_rss_mb"], 1),
        "rss_before_diagnose_mb": round(m["rss_before_mb"], 1), "growth_kb_per_image": round(per_file_kb, 2),
        "planted": planted, "found": m["found"], "verdict": m["verdict"],
        "planted_near_copies": {**dists, "recall_by_threshold": {
            t: sum(d <= t for d in dists["phash_bits"]) / max(len(near), 1) for t in (2, 4, 6, 8)}},
        "pair_search_100k_s": round(pair_100k, 2),
        "extrapolated_100k": {
            "seconds": round(100_000 / rate + pair_100k, 1),
            "peak_rss_mb": round(m["rss_before_mb"] + per_file_kb * 100_000 / 1024, 0),
            "how": "per-file pass scaled linearly at the measured rate + the pair search timed on 100k hashes; "
                   "RSS = interpreter/imports + measured growth per image x 100k",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    ok = (m["found"]["exact_leak_groups"] >= planted["exact_leaks"]
          and m["found"]["near_leak_pairs"] >= planted["near_leaks"]
          and m["found"]["conflict_groups"] >= planted["conflicts"])
    result["planted_all_found"] = ok
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"doctor: {m['n_files']} images in {m['seconds']:.1f} s = {rate:.0f} images/s, "
          f"peak RSS {m['peak_rss_mb']:.0f} MB "
          f"({m['rss_before_mb']:.0f} MB before, {per_file_kb:.2f} KB/image)")
    print(f"planted {planted}, found {m['found']} -> {'all found' if ok else 'MISSED SOME'}")
    print(f"planted near copies (1.5x resize + JPEG q88): pHash bits {sorted(dists['phash_bits'])}, "
          f"recall at threshold 2/4/6/8: {list(result['planted_near_copies']['recall_by_threshold'].values())}")
    print(f"pair search on 100k hashes: {pair_100k:.2f} s; extrapolated 100k images: "
          f"{result['extrapolated_100k']['seconds']:.0f} s, ~{result['extrapolated_100k']['peak_rss_mb']:.0f} MB")
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
