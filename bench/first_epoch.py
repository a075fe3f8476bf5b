"""First epoch (decoding every split + epoch 1) against a cached epoch, in rounds.

The same setting as framework_compare part (c), alone so that it takes a minute: 600
medium synthetic images (train 420), the seed CNN at 180 px, batch 32, 3 epochs per round.
Target: first epoch <= 1.5x the mean cached epoch.

    .venv/bin/python bench/first_epoch.py --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import print_table, write_results  # noqa: E402
from framework_compare import Probe, make_manifest  # noqa: E402

TARGET = 1.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from inspectnet.synth import generate

    root = Path(tempfile.mkdtemp(prefix="inspectnet-first-epoch-"))
    data = generate(root / "data", n=args.n, seed=0, difficulty="medium", size=256, progress=False)
    manifest = make_manifest(root, data, args.n, f"seed{args.n}")
    rows = []
    for r in range(args.rounds):
        probe = Probe()
        try:
            probe.train(manifest, out=root / f"run{r}", patience=0, quiet=True, batch_size=32,
                               approach="scratch", model="seed-cnn", img_size=180, epochs=3,
                               pool="avg")  # framework_compare (a)'s course CNN, Flatten head
        finally:
            probe.close()
        cached = sum(probe.epochs[1:]) / len(probe.epochs[1:])
        ratio = (probe.decode_seconds + probe.epochs[0]) / cached
        rows.append({"round": r + 1, "decode_s": round(probe.decode_seconds, 2), "epoch1_s": round(probe.epochs[0], 2),
                     "cached_epoch_s": round(cached, 2), "ratio": round(ratio, 2), "target": TARGET,
                     "met": ratio <= TARGET})
        print_table(rows[-1:], list(rows[-1]))
    print_table(rows, list(rows[0]), "first epoch (decode all splits + epoch 1) / mean cached epoch")
    print(f"written: {write_results('first_epoch', rows, {'n': args.n, 'img_size': 180, 'model': 'seed-cnn'})}")


if __name__ == "__main__":
    main()
