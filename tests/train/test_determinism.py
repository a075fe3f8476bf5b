"""Same seed, same machine, same numbers: twice in a row, and before and after a refactor.

``golden/features_toy_metrics.json`` is the ``metrics.json`` (less its timings) of a tiny
features run made by the code before the Approach redesign (4e6e9c4). A change that is
meant to move these numbers regenerates the file and says why in its commit.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from conftest import make_toy_set

GOLDEN = Path(__file__).parent / "golden" / "features_toy_metrics.json"


def _metrics(run: Path) -> dict[str, Any]:
    m = json.loads((run / "metrics.json").read_text())
    for k in ("train_seconds", "total_seconds"):
        m.pop(k)
    return m


def _close(a: Any, b: Any, path: str = "", new_keys: bool = False) -> list[str]:
    """Where two metrics trees differ: floats beyond 1e-6 relative, anything else at all.
    With ``new_keys``, ``a`` may hold keys that ``b`` (the golden run) did not have yet
    (numbers added since, such as confidence intervals); every key of ``b`` must be there."""
    if isinstance(a, dict) and isinstance(b, dict):
        missing = [k for k in b if k not in a]
        if missing or (not new_keys and list(a) != list(b)):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in b for d in _close(a[k], b[k], f"{path}.{k}", new_keys)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]", new_keys)]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_a_tiny_features_run_gives_the_golden_metrics_twice(tmp_path: Path) -> None:
    import torch

    from inspectnet.train.run import train

    torch.set_num_threads(2)  # the golden run's; another count sums in another order (README)
    data = make_toy_set(tmp_path / "data", n_per_class=20, size=32)
    for r in ("a", "b"):
        # The options of 4e6e9c4's defaults, spelled out: later defaults change the recipe, not this.
        train(data, out=tmp_path / r, approach="features", model="efficientnet_lite0", img_size=32, tta_views=2,
              cv_folds=0, class_weights="auto", calibrate=False, objective="recall", quiet=True)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    diffs = _close(_metrics(tmp_path / "a"), json.loads(GOLDEN.read_text()), new_keys=True)
    assert not diffs, "metrics moved from the golden run:\n" + "\n".join(diffs[:20])


def test_scratch_and_finetune_give_byte_identical_weights_for_the_same_seed(tmp_path: Path) -> None:
    # Random init, shuffling, augmentation and dropout all draw from seeded generators.
    from inspectnet.train.run import train

    data = make_toy_set(tmp_path / "data", n_per_class=12, size=32)
    for approach, model in (("scratch", "seed-cnn"), ("finetune", "efficientnet_lite0")):
        digests = set()
        for r in ("a", "b"):
            out = tmp_path / f"{approach}-{r}"
            train(data, out=out, approach=approach, model=model, img_size=32, epochs=2, quiet=True)
            digests.add(hashlib.sha256((out / "model" / "weights.safetensors").read_bytes()).hexdigest())
        assert len(digests) == 1, f"{approach}: two runs with the same seed gave different weights"
