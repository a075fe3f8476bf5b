"""Shared fixtures: tiny image sets generated on the fly (no data committed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Two cores: keep torch from oversubscribing them when tests run training.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def make_toy_set(root: Path, n_per_class: int = 40, size: int = 48, seed: int = 0) -> Path:
    """Grey "parts" on a noisy tray; ``damaged`` ones carry a dark notch at a random edge spot.

    Easy enough that any working approach learns it in seconds, hard enough (random position,
    noise) that a broken pipeline stays at chance.
    """
    rng = np.random.default_rng(seed)
    for label in ("intact", "damaged"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.normal(60, 12, (size, size, 3))
            c0, c1 = size // 5, size - size // 5
            img[c0:c1, c0:c1] = rng.normal(170, 10, (c1 - c0, c1 - c0, 3))
            if label == "damaged":
                y = int(rng.integers(c0, c1 - 8))
                side = rng.integers(4)
                x = c0 if side < 2 else c1 - 8
                img[y : y + 8, x : x + 8] = 20
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / label / f"{label}_{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    # The server sets torch's thread count for its workers; within one test process that must
    # not leak into the next test (reductions, and so the last bits of every number, depend on it).
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_set(tmp_path_factory.mktemp("toy") / "data")
