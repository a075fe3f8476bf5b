"""Training speed of the three approaches: images/s of one epoch at 128 px and 224 px.

Each approach runs through inspectnet's own ``train()`` on a generated set (the same
images for all), so the numbers include everything a user waits for. The seed CNN epoch
is timed from Lightning's per-epoch history; features = extraction + head fit.

    .venv/bin/python bench/train_speed.py [--n 320] [--sizes 128 224]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, print_table, write_results  # noqa: E402


class EpochTimer:
    """Lightning callback: wall time of each training epoch (without validation)."""

    def __init__(self) -> None:
        import lightning as L

        outer = self

        class _CB(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):  # noqa: ANN001
                outer._t = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):  # noqa: ANN001
                outer.epochs.append(time.perf_counter() - outer._t)

        self.epochs: list[float] = []
        self.callback = _CB()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=320, help="images in the generated set")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    import torch

    from inspectnet.synth import generate
    from inspectnet.train import loop
    from inspectnet.train.run import train

    tmp = Path(tempfile.mkdtemp(prefix="inspectnet-bench-"))
    data = generate(tmp / "data", n=args.n, seed=0, difficulty="medium", size=256, progress=False)
    rows = []
    timer = EpochTimer()
    orig = loop.lightning_fit

    def timed_fit(*a, **kw):  # noqa: ANN002, ANN003
        import lightning as L

        orig_trainer = L.Trainer

        class T(orig_trainer):  # type: ignore[misc, valid-type]
            def __init__(self, *ta, callbacks=None, **tk):  # noqa: ANN001, ANN002, ANN003
                super().__init__(*ta, callbacks=[*(callbacks or []), timer.callback], **tk)

        L.Trainer = T
        try:
            return orig(*a, **kw)
        finally:
            L.Trainer = orig_trainer

    loop.lightning_fit = timed_fit
    n_train = None
    for size in args.sizes:
        for approach, model in (("scratch", "seed-cnn"), ("features", "efficientnet_lite0"),
                                ("finetune", "efficientnet_lite0")):
            timer.epochs.clear()
            t0 = time.perf_counter()
            res = train(data, out=tmp / f"{approach}-{size}", approach=approach, model=model, img_size=size,
                        epochs=args.epochs, patience=0, quiet=True)
            total = time.perf_counter() - t0
            n_train = res.metrics["counts"]["train"]
            n_tr = sum(n_train.values())
            if approach == "features":
                secs = res.train_seconds
                note = "extract features once + fit head"
            else:
                # The last epoch: allocator and caches warm, as in every epoch after the first.
                secs = timer.epochs[-1]
                note = f"epoch {len(timer.epochs)} of {len(timer.epochs)}"
            rows.append({"approach": approach, "model": model, "img_size": size, "train_images": n_tr,
                         "epoch_seconds": round(secs, 2), "images_per_s": round(n_tr / secs, 1),
                         "first_epoch_seconds": round(timer.epochs[0], 2) if timer.epochs else None,
                         "run_seconds": round(total, 1), "note": note})
            print_table(rows[-1:], list(rows[-1]))
    print_table(rows, ["approach", "model", "img_size", "train_images", "epoch_seconds", "images_per_s",
                       "first_epoch_seconds", "run_seconds"], "train speed (one epoch)")
    print(f"peak RSS {peak_rss_mb():.0f} MB, torch threads {torch.get_num_threads()}")
    p = write_results("train_speed", rows, {"peak_rss_mb": peak_rss_mb()})
    print(f"written: {p}")


if __name__ == "__main__":
    main()
