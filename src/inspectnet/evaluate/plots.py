"""Plots with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Loss and accuracy per epoch, train vs validation: the course's overfitting picture."""
    rows = [r for r in history if r.get("stage") != "head" and "val_loss" in r]
    if not rows:
        return None
    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    ax = axes[0]
    if any("train_loss_epoch" in r for r in rows):
        ax.plot(ep, [r.get("train_loss_epoch") for r in rows], "o-", label="train")
    ax.plot(ep, [r["val_loss"] for r in rows], "o-", label="validation")
    ax.set_title("loss")
    ax.set_xlabel("epoch")
    ax.legend()
    ax = axes[1]
    if any("train_acc" in r for r in rows):
        ax.plot(ep, [r.get("train_acc") for r in rows], "o-", label="train")
    if any("val_acc" in r for r in rows):
        ax.plot(ep, [r.get("val_acc") for r in rows], "o-", label="validation")
    ax.set_title("accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1.02)
    ax.legend()
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    from ..io import atomic_write

    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return Path(path)
